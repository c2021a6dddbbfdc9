"""Do identical chunks hide the others from kNN search?

Many copies of one chunk (a licence in every package folder, a boilerplate footer, a file that repeats
one paragraph) are common in real corpora. In an HNSW graph, copies at distance 0 fill each other's
neighbour lists and cut the rest of the graph off. This measures, for N distinct vectors beside C
copies of one vector, how many distinct vectors find themselves in their own top 10:

- **Ours:** unirank's ``VectorIndex``, which keeps one point per distinct vector and the copies as
  aliases of it (added in batches of 100, as ingestion does);
- **Baseline:** a plain usearch HNSW ``Index`` with the same settings (connectivity, expansion, the
  default ef_search) holding every copy, as the index did before.

Vectors are random unit vectors in 384 dimensions (the base model's size), seeded; copies of one
vector are added in two halves around the distinct ones (some before, some after). Exact search
(recall 1.0 by construction) is the reference. Build time and query p50 are printed for both.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import fmt, percentile, table, warn_if_busy, write_json

DIMS = 384
CASES = [(20, 400), (2000, 0), (2000, 400), (2000, 5000), (20000, 2000)]
QUERIES = 300


def _vectors(distinct: int, copies: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    notes = rng.standard_normal((distinct, DIMS)).astype(np.float32)
    copy = np.tile(rng.standard_normal((1, DIMS)).astype(np.float32), (copies, 1))
    vectors = np.vstack([copy[: copies // 2], notes, copy[copies // 2:]])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, np.arange(copies // 2, copies // 2 + distinct)


def _measure(search, vectors: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    sample = targets[:: max(1, len(targets) // QUERIES)]
    found, times = 0, []
    for key in sample:
        started = time.perf_counter()
        keys = search(vectors[key])
        times.append((time.perf_counter() - started) * 1000)
        found += int(key) in keys
    return found / len(sample), percentile(times, 50)


def index_classes():
    """unirank's ``VectorIndex`` and usearch's plain ``Index``, imported in the order that loads.

    unirank's vectors module imports onnxruntime before usearch: onnxruntime(-openvino) 1.24 loaded after
    usearch dies in its start-up (SIGSEGV), which killed this bench before its first case."""
    from unirank.search.embedded.vectors import VectorIndex
    from usearch.index import Index

    return VectorIndex, Index


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help; no options of its own
    warn_if_busy()  # it times builds and queries
    VectorIndex, Index = index_classes()
    from unirank.search.embedded.vectors import CONNECTIVITY, EXPANSION_ADD
    from unirank.settings import SearchSettings

    ef_search = SearchSettings().ef_search
    rows, results = [], []
    for distinct, copies in CASES:
        vectors, targets = _vectors(distinct, copies, np.random.default_rng(distinct + copies))
        keys = np.arange(len(vectors))
        with tempfile.TemporaryDirectory() as tmp:
            ours = VectorIndex(Path(tmp) / "v.usearch", DIMS, ef_search=ef_search)
            started = time.perf_counter()
            for i in range(0, len(vectors), 100):
                ours.apply([], keys[i:i + 100].tolist(), vectors[i:i + 100])
            ours_build = time.perf_counter() - started
        plain = Index(ndim=DIMS, metric="cos", dtype="f32", connectivity=CONNECTIVITY,
                      expansion_add=EXPANSION_ADD, expansion_search=ef_search)
        started = time.perf_counter()
        for i in range(0, len(vectors), 100):
            plain.add(keys[i:i + 100].astype(np.uint64), vectors[i:i + 100], threads=1)
        plain_build = time.perf_counter() - started
        ours_recall, ours_p50 = _measure(lambda v: {k for k, _ in ours.search(v, 10)}, vectors, targets)
        plain_recall, plain_p50 = _measure(lambda v: set(plain.search(v, 10).keys.tolist()), vectors, targets)
        rows.append([distinct, copies, fmt(ours_recall, 3), fmt(plain_recall, 3), f"{ours_build:.1f}",
                     f"{plain_build:.1f}", f"{ours_p50:.2f}", f"{plain_p50:.2f}"])
        results.append({"distinct": distinct, "copies": copies, "ours_self_recall_at_10": ours_recall,
                        "baseline_self_recall_at_10": plain_recall, "ours_build_s": ours_build,
                        "baseline_build_s": plain_build, "ours_query_p50_ms": ours_p50,
                        "baseline_query_p50_ms": plain_p50})
    print(f"Distinct vectors found in their own top 10 (ef_search={ef_search}; exact search: 1.000)")
    print(table(["distinct", "copies", "ours", "plain HNSW", "ours build s", "plain build s",
                 "ours p50 ms", "plain p50 ms"], rows))
    write_json("duplicate_chunks", {"ef_search": ef_search, "cases": results})


if __name__ == "__main__":
    main()
