"""Helpers shared by the benchmarks: where the data is, isolated settings, ranx scoring, tables."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
SHARED = Path(__file__).resolve().parents[2] / "shared"  # ../shared beside the project root
CISI = SHARED / "data" / "cisi"
OUT_DIR = BENCH_DIR / "out"


def require_cisi() -> Path:
    """The CISI folder, or a clear message and exit 0 when the shared data set is absent."""
    needed = [CISI / "corpus.jsonl", CISI / "queries.jsonl", CISI / "qrels" / "test.tsv"]
    missing = [p for p in needed if not p.exists()]
    if missing:
        print(f"SKIPPED: the shared CISI data set is not there ({', '.join(str(p) for p in missing)}).")
        print(f"The benchmarks read it from {SHARED} (../shared beside the project root); nothing was run.")
        sys.exit(0)
    return CISI


def isolated_settings(data_dir: Path, **overrides):
    """Default Settings on a temporary data dir, ignoring any unirank.toml and UNIRANK_* variables."""
    dropped = [k for k in os.environ if k.upper().startswith("UNIRANK_")]  # pydantic-settings ignores case
    for key in dropped:
        del os.environ[key]
    if dropped:
        print(f"note: ignoring environment variables {', '.join(sorted(dropped))} so defaults are measured")
    os.environ["UNIRANK_CONFIG"] = os.devnull
    from unirank.settings import Settings

    return Settings(data_dir=data_dir, **overrides)


def load_corpus(cisi: Path) -> list[dict]:
    with open(cisi / "corpus.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_queries(cisi: Path) -> dict[str, str]:
    with open(cisi / "queries.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {str(r["_id"]): r["text"] for r in rows}


def load_qrels(cisi: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(cisi / "qrels" / "test.tsv", encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        assert header[:2] == ["query-id", "corpus-id"], header
        for line in f:
            if not line.strip():
                continue
            qid, did, score = line.rstrip("\n").split("\t")[:3]
            if int(score) > 0:
                qrels.setdefault(qid, {})[did] = int(score)
    return qrels


def ranked_run(ranked: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Ranked doc-id lists -> a ranx run dict whose scores reproduce exactly that order."""
    run: dict[str, dict[str, float]] = {}
    for qid, docs in ranked.items():
        n = len(docs)
        run[qid] = {d: float(n - i) for i, d in enumerate(docs)} or {"__no_hit__": 0.0}
    return run


def evaluate(qrels: Mapping[str, Mapping[str, int]], ranked: Mapping[str, Sequence[str]],
             metrics: Sequence[str] = ("ndcg@10", "recall@100")) -> dict[str, float]:
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    run = ranked_run({q: ranked.get(q, []) for q in qrels})
    with warnings.catch_warnings():  # numba's "unsafe cast from uint64 to int64" note inside ranx
        warnings.simplefilter("ignore")
        scores = ranx_evaluate(Qrels(dict(qrels)), Run(run), list(metrics))
    if isinstance(scores, float):  # ranx returns a float for a single metric
        scores = {metrics[0]: scores}
    return {m: float(scores[m]) for m in metrics}


def dedupe_doc_ids(doc_ids: Iterable[str]) -> list[str]:
    """A document scores as its best chunk: keep each doc_id's first occurrence."""
    return list(dict.fromkeys(doc_ids))


def percentile(values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence], align: str | None = None) -> str:
    """A small aligned text table; the first column left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or ("l" + "r" * (len(headers) - 1))

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align))

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def machine() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_1min": round(os.getloadavg()[0], 2),
        **cuda_state(),
    }


def cuda_state() -> dict:
    """The CUDA devices this process sees: every JSON says whether a GPU was there, measured, not asserted."""
    import torch

    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    return {"cuda_available": available, "cuda_device_count": count,
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(count)]}


#: Stored and freshly encoded vectors of the same text: padding-free and padded encodes differ by ~1e-6.
VECTOR_TOLERANCE = 1e-4


def max_vector_difference(a, b) -> float:
    """The largest absolute difference between two equally shaped arrays of vectors (inf when shapes differ)."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max()) if a.size else 0.0


def vectors_match(a, b, tol: float = VECTOR_TOLERANCE) -> bool:
    """Whether two arrays of vectors hold the same vectors, within ``tol`` in every component."""
    return max_vector_difference(a, b) <= tol


def positive_int(text: str) -> int:
    """An argparse type for counts: refused at once below 1, before minutes of setup end in a traceback."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type for counts where 0 means none (no warm-up, no rerank requests)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type for seconds and noise levels: a negative one means nothing."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type for amounts that must be above 0 (epochs): refused before minutes of setup."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, not {text}")
    return value


def write_json(name: str, payload: dict) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    payload = {"bench": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
               **payload}
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    print(f"\nwrote {path.relative_to(PROJECT_ROOT)}")
    return path


def warn_if_busy() -> float:
    """Say so when other processes already load the CPUs: timings taken then are not comparable."""
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    if load > 0.75 * cores:
        print(f"WARNING: 1-minute load average is {load:.1f} on {cores} cores before starting: other processes "
              "compete for the CPUs, so timings will be slower and noisier than on an idle machine "
              "(PyTorch's intra-op threads degrade sharply when the cores are oversubscribed).")
    return load
