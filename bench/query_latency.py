"""Query latency at 10k and 100k chunks, and HNSW recall@10 against exact search.

1. Ingests CISI (``../shared/data/cisi/corpus.jsonl``) through ``Unirank.ingest`` to get real chunks
   and their real all-MiniLM-L6-v2 vectors (read back from the index's SQLite store).
2. Builds synthetic indexes of 10k and 100k chunks directly through the backend API
   (``EmbeddedBackend.create_index`` + ``index(...)`` with ``IndexedSource`` batches + ``flush``),
   because embedding 100k real passages would take hours on 2 CPU cores:
     - chunk i copies CISI chunk ``i mod n`` (n = CISI chunk count). Copy 0 is the real chunk, text and
       vector unchanged. Later copies take the real chunk's sentences in shuffled order with one sentence
       swapped for a random sentence from anywhere in CISI (so BM25 sees real vocabulary and term
       statistics), and the real vector plus gaussian noise (sd ``--noise`` per dimension),
       renormalised (so the vectors keep the corpus's cluster structure).
3. Runs the CISI queries through ``Searcher.search`` (query embedding included; top_k=10) in modes
   bm25, knn, hybrid (no rerank) and hybrid+rerank (default reranker, 50 candidates), after warm-up
   queries, and reports p50/p95 wall-clock latency.
4. Measures kNN recall@10 of the usearch HNSW (``backend.knn``) against exact search (numpy dot over
   every vector) on the same queries.
Baselines in the same run: exact brute-force numpy kNN latency (with the same query embedding) and
bm25s (English stop words) query latency over the same synthetic texts.
Targets: hybrid p95 < 30 ms at 100k chunks; recall@10 >= 0.95.

    .venv/bin/python bench/query_latency.py [--sizes 10000 100000] [--queries 100] [--rerank-queries 30]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "query_latency"
TOP_K = 10
SOURCE_CHUNKS = 100  # chunks per synthetic IndexedSource
WRITE_CHUNKS = 5000  # chunks per backend.index(...) call
TARGET_HYBRID_P95_MS = 30.0
TARGET_RECALL = 0.95
SHORT_QUERY_TOKENS = 32  # a typical search-box query; CISI's queries are mostly long questions
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(text.strip()) if s]


def real_chunks(ur, cisi: Path):
    """Ingest CISI and read its chunks and vectors back from the SQLite store, in key order."""
    import numpy as np

    from unirank.search.embedded.store import ChunkStore

    started = time.perf_counter()
    report = ur.ingest(str(cisi / "corpus.jsonl"), "cisi")
    if report.failed or not report.chunks_written:
        raise SystemExit(f"ingest failed: {report.failed}")
    seconds = time.perf_counter() - started
    store = ChunkStore(Path(ur.index_info("cisi").details["path"]) / "chunks.sqlite", readonly=True)
    try:
        rows = [row for batch in store.iter_all() for row in batch]
    finally:
        store.close()
    return [c for _, c, _ in rows], np.stack([v for _, _, v in rows]).astype(np.float32), seconds


def synthesize(base_chunks, base_vectors, n: int, noise_sd: float, seed: int):
    """n synthetic chunks (see the module docstring) and their (n, dims) normalised vectors."""
    import numpy as np

    from unirank.search.types import Chunk

    rng = np.random.default_rng(seed)
    nb, dims = base_vectors.shape
    sentences = [split_sentences(c.text) or [c.text] for c in base_chunks]
    pool = [s for ss in sentences for s in ss]
    idx = np.arange(n) % nb
    copy = np.arange(n) // nb
    vectors = base_vectors[idx] + rng.normal(0.0, noise_sd, (n, dims)).astype(np.float32)
    vectors[copy == 0] = base_vectors[idx[copy == 0]]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = []
    for i in range(n):
        b, c = int(idx[i]), int(copy[i])
        base = base_chunks[b]
        if c == 0:
            text = base.text
        else:
            parts = list(sentences[b])
            rng.shuffle(parts)
            parts[int(rng.integers(len(parts)))] = pool[int(rng.integers(len(pool)))]
            text = " ".join(parts)
        chunks.append(Chunk(id=f"syn{i}", doc_id=f"{base.doc_id}~{c}", source_uri="", ordinal=i % SOURCE_CHUNKS,
                            text=text, title=base.title, heading_path=base.heading_path))
    cos = np.einsum("ij,ij->i", vectors[copy > 0], base_vectors[idx[copy > 0]]) if (copy > 0).any() else np.ones(1)
    return chunks, vectors.astype(np.float32), float(cos.mean())


def build_index(backend, name: str, signature, chunks, vectors) -> dict:
    """create_index + index(IndexedSource batches) + flush, timed."""
    from unirank.search.types import IndexedSource, SourceState

    started = time.perf_counter()
    backend.create_index(name, signature)
    write_s = 0.0
    batch = []
    for start in range(0, len(chunks), SOURCE_CHUNKS):
        uri = f"synthetic://{name}/{start // SOURCE_CHUNKS}"
        part = chunks[start:start + SOURCE_CHUNKS]
        for ch in part:
            ch.source_uri = uri
        state = SourceState(uri=uri, content_hash=f"h{start}", size=0, chunk_count=len(part))
        batch.append(IndexedSource(state, part, vectors[start:start + SOURCE_CHUNKS]))
        if sum(len(s.chunks) for s in batch) >= WRITE_CHUNKS or start + SOURCE_CHUNKS >= len(chunks):
            t = time.perf_counter()
            backend.index(name, batch)
            write_s += time.perf_counter() - t
            batch = []
    t = time.perf_counter()
    backend.flush(name)
    flush_s = time.perf_counter() - t
    return {"seconds": time.perf_counter() - started, "index_calls_seconds": write_s, "flush_seconds": flush_s}


def control_recall(base_vectors, n: int, qvecs, ef_search: int, seed: int, path: Path) -> dict:
    """Recall@10 of unirank's VectorIndex (same HNSW settings) on a less degenerate synthetic set.

    Vector i = normalise(0.5 * real[i mod n_real] + 0.5 * real[random] + N(0, 0.01^2)): points spread
    between real chunks instead of 60+ near-copies of each, whose top-10 is decided by the noise.
    """
    import numpy as np

    from unirank.search.embedded.vectors import VectorIndex

    rng = np.random.default_rng(seed + 1)
    nb, dims = base_vectors.shape
    idx, other = np.arange(n) % nb, rng.integers(0, nb, n)
    vectors = 0.5 * base_vectors[idx] + 0.5 * base_vectors[other] + rng.normal(0, 0.01, (n, dims)).astype(np.float32)
    vectors[: min(n, nb)] = base_vectors[: min(n, nb)]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vi = VectorIndex(path, dims, ef_search=ef_search)
    started = time.perf_counter()
    vi.apply([], list(range(n)), vectors)
    build_s = time.perf_counter() - started
    lat, rec = [], []
    for q in qvecs:
        t = time.perf_counter()
        got = {k for k, _ in vi.search(q, TOP_K)}
        lat.append((time.perf_counter() - t) * 1000)
        rec.append(len(got & set(np.argsort(-(vectors @ q))[:TOP_K].tolist())) / TOP_K)
    return {"recall@10": round(float(np.mean(rec)), 4), "build_seconds": round(build_s, 2), **summarize(lat)}


def time_searches(searcher, index: str, queries: list[str], warmup: list[str], **kwargs):
    for q in warmup:
        searcher.search(q, index, top_k=TOP_K, **kwargs)
    total, parts = [], {}
    for q in queries:
        started = time.perf_counter()
        res = searcher.search(q, index, top_k=TOP_K, **kwargs)
        total.append((time.perf_counter() - started) * 1000)
        for k, v in res.timings_ms.items():
            parts.setdefault(k, []).append(v)
        if res.degraded:
            raise SystemExit(f"rerank degraded on {q!r}")
    return total, parts


def summarize(lat: list[float]) -> dict:
    return {"p50_ms": round(C.percentile(lat, 50), 3), "p95_ms": round(C.percentile(lat, 95), 3),
            "mean_ms": round(sum(lat) / len(lat), 3), "queries": len(lat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=C.positive_int, nargs="+", default=[10_000, 100_000],
                        help=f"synthetic index sizes in chunks (each > {TOP_K})")
    parser.add_argument("--queries", type=C.positive_int, default=100)
    parser.add_argument("--warmup", type=C.non_negative_int, default=5)
    parser.add_argument("--rerank-queries", type=C.positive_int, default=30,
                        help="reranking re-embeds 50 passages per query (~1 s on 2 cores): fewer queries")
    parser.add_argument("--noise", type=C.non_negative_float, default=0.05,
                        help="gaussian noise sd per vector dimension")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--no-bm25s", action="store_true", help="skip the bm25s latency baseline")
    parser.add_argument("--ef-sweep", type=C.positive_int, nargs="*", default=[256, 512],
                        help="extra ef_search values to measure recall@10 at (besides the default)")
    parser.add_argument("--no-control", action="store_true",
                        help="skip the recall control on mixture vectors")
    args = parser.parse_args()
    if min(args.sizes) <= TOP_K:  # exact search takes the top TOP_K of each size
        parser.error(f"argument --sizes: each size must be > {TOP_K}, not {min(args.sizes)}")

    cisi = C.require_cisi()
    C.warn_if_busy()
    all_queries = list(C.load_queries(cisi).items())
    all_queries.sort(key=lambda kv: int(kv[0]) if kv[0].isdigit() else kv[0])
    measured = [t for _, t in all_queries[: args.queries]]
    warmup = [t for _, t in all_queries[args.queries: args.queries + args.warmup]] or measured[: args.warmup]

    import numpy as np

    results: dict = {"sizes": {}}
    rows, recall_rows, build_rows, hybrid_rows = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="unirank-bench-") as tmp:
        settings = C.isolated_settings(Path(tmp) / "data")
        from unirank.api import Unirank
        from unirank.search.embedded.backend import EmbeddedBackend

        with Unirank(settings) as ur:
            embedder, backend, searcher = ur.embedder, ur.backend, ur.searcher
            base_chunks, base_vectors, ingest_s = real_chunks(ur, cisi)
            print(f"CISI ingested: {len(base_chunks)} real chunks with real vectors in {ingest_s:.1f}s; "
                  f"{len(measured)} measured queries, {len(warmup)} warm-up queries")
            qvecs = np.stack([embedder.embed_query(q) for q in measured]).astype(np.float32)
            # Tokens the model reads (inputs longer than max_seq_length are truncated by the model).
            qtokens = [min(len(embedder.tokenizer(q, verbose=False)["input_ids"]), embedder.max_seq_length)
                       for q in measured]
            results["query_tokens"] = {"mean": round(float(np.mean(qtokens)), 1),
                                       "p50": C.percentile(qtokens, 50), "p95": C.percentile(qtokens, 95),
                                       "max": max(qtokens),
                                       f"share_<= {SHORT_QUERY_TOKENS}": round(float(np.mean(
                                           [t <= SHORT_QUERY_TOKENS for t in qtokens])), 3)}
            print(f"query length in model tokens (truncated at max_seq_length): mean {np.mean(qtokens):.0f}, p50 {C.percentile(qtokens, 50):.0f}, "
                  f"p95 {C.percentile(qtokens, 95):.0f}, max {max(qtokens)}")

            for n in args.sizes:
                label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
                name = f"syn{n}"
                t = time.perf_counter()
                chunks, vectors, mean_cos = synthesize(base_chunks, base_vectors, n, args.noise, args.seed)
                synth_s = time.perf_counter() - t
                build = build_index(backend, name, embedder.signature, chunks, vectors)
                info = ur.index_info(name)
                assert info.chunk_count == n, (info.chunk_count, n)
                print(f"\n[{label}] built {n} chunks in {build['seconds']:.1f}s (index() calls "
                      f"{build['index_calls_seconds']:.1f}s, flush {build['flush_seconds']:.1f}s; "
                      f"synthesis {synth_s:.1f}s); noisy copies have mean cosine {mean_cos:.3f} to their "
                      f"source vector; load average {os.getloadavg()[0]:.1f}")
                build_rows.append([label, n, f"{build['seconds']:.1f}", f"{n / build['seconds']:.0f}",
                                   f"{mean_cos:.3f}"])
                entry: dict = {"chunks": n, "build": {k: round(v, 2) for k, v in build.items()},
                               "synthesis_seconds": round(synth_s, 2),
                               "noisy_copy_mean_cosine_to_source": round(mean_cos, 4), "latency": {},
                               "load_average_1min_at_start": round(os.getloadavg()[0], 2)}

                # Recall@10 of the HNSW index against exact search, on the same query vectors.
                ids = np.array([c.id for c in chunks])
                ann_ms, exact_ms, recalls = [], [], []
                for q in qvecs[: len(warmup)]:
                    backend.knn(name, q, TOP_K)
                for q in qvecs:
                    t = time.perf_counter()
                    ann = backend.knn(name, q, TOP_K)
                    ann_ms.append((time.perf_counter() - t) * 1000)
                    t = time.perf_counter()
                    sims = vectors @ q
                    top = np.argpartition(-sims, TOP_K)[:TOP_K]
                    top = top[np.argsort(-sims[top])]
                    exact_ms.append((time.perf_counter() - t) * 1000)
                    recalls.append(len({h.chunk.id for h in ann} & set(ids[top])) / TOP_K)
                recall = float(np.mean(recalls))
                entry["knn_recall@10"] = round(recall, 4)
                entry["ann_backend_knn_ms"] = summarize(ann_ms)
                entry["exact_numpy_search_ms"] = summarize(exact_ms)
                recall_rows.append([label, f"noisy copies (the index above), ef_search={settings.search.ef_search}",
                                    f"{recall:.4f}", f"{C.percentile(ann_ms, 50):.2f}",
                                    f"{C.percentile(exact_ms, 50):.2f}",
                                    f"{C.percentile(exact_ms, 50) / C.percentile(ann_ms, 50):.1f}x"])
                exact_top = [set(ids[np.argsort(-(vectors @ q))[:TOP_K]]) for q in qvecs]
                entry["knn_recall@10_by_ef_search"] = {}
                for ef in args.ef_sweep:
                    other = EmbeddedBackend(settings.indexes_dir, ef_search=ef)
                    try:
                        lat, rec = [], []
                        for q, truth in zip(qvecs, exact_top):
                            t = time.perf_counter()
                            got = {h.chunk.id for h in other.knn(name, q, TOP_K)}
                            lat.append((time.perf_counter() - t) * 1000)
                            rec.append(len(got & truth) / TOP_K)
                    finally:
                        other.close()
                    entry["knn_recall@10_by_ef_search"][ef] = {"recall@10": round(float(np.mean(rec)), 4),
                                                               **summarize(lat)}
                    recall_rows.append([label, f"noisy copies (the index above), ef_search={ef}",
                                        f"{np.mean(rec):.4f}", f"{C.percentile(lat, 50):.2f}",
                                        f"{C.percentile(exact_ms, 50):.2f}",
                                        f"{C.percentile(exact_ms, 50) / C.percentile(lat, 50):.1f}x"])
                if not args.no_control:
                    control = control_recall(base_vectors, n, qvecs, settings.search.ef_search, args.seed,
                                             Path(tmp) / f"control{n}.usearch")
                    entry["control_mixture_recall@10"] = control
                    recall_rows.append([label, f"control: mixtures, same HNSW settings, ef_search="
                                               f"{settings.search.ef_search}", f"{control['recall@10']:.4f}",
                                        f"{control['p50_ms']:.2f}", "", ""])

                # Latency through Searcher.search, query embedding included.
                configs = [("unirank bm25", dict(mode="bm25", rerank=False), measured),
                           ("unirank knn", dict(mode="knn", rerank=False), measured),
                           ("unirank hybrid", dict(mode="hybrid", rerank=False), measured),
                           ("unirank hybrid+rerank(50)", dict(mode="hybrid", rerank=True),
                            measured[: args.rerank_queries])]
                for sys_label, kwargs, qs in configs:
                    lat, parts = time_searches(searcher, name, qs, warmup[:2] if kwargs["rerank"] else warmup,
                                               **kwargs)
                    s = summarize(lat)
                    s["stage_p50_ms"] = {k: round(C.percentile(v, 50), 3) for k, v in parts.items()}
                    entry["latency"][sys_label] = s
                    if sys_label == "unirank hybrid":
                        short = [x for x, t in zip(lat, qtokens) if t <= SHORT_QUERY_TOKENS]
                        s["stage_p95_ms"] = {k: round(C.percentile(v, 95), 3) for k, v in parts.items()}
                        s["short_queries"] = summarize(short) if short else None
                        hybrid_rows.append([label, f"{s['p95_ms']:.2f}", f"{s['stage_p95_ms'].get('embed', 0):.2f}",
                                            f"{s['stage_p95_ms'].get('retrieve', 0):.2f}",
                                            f"{s['short_queries']['p95_ms']:.2f} ({len(short)} q)" if short else "n/a"])
                    stages = " ".join(f"{k}={v:.1f}" for k, v in s["stage_p50_ms"].items() if k != "total")
                    rows.append([label, sys_label, f"{s['p50_ms']:.2f}", f"{s['p95_ms']:.2f}", s["queries"], stages])
                    print(f"  {sys_label}: p50 {s['p50_ms']:.2f} ms, p95 {s['p95_ms']:.2f} ms ({s['queries']} queries)")

                # Baseline: exact numpy kNN with the same query embedding.
                lat = []
                for q in warmup:
                    embedder.embed_query(q)
                for q in measured:
                    t = time.perf_counter()
                    v = embedder.embed_query(q)
                    sims = vectors @ v
                    top = np.argpartition(-sims, TOP_K)[:TOP_K]
                    top = top[np.argsort(-sims[top])]
                    lat.append((time.perf_counter() - t) * 1000)
                s = summarize(lat)
                entry["latency"]["baseline exact numpy kNN"] = s
                rows.append([label, "baseline exact numpy kNN", f"{s['p50_ms']:.2f}", f"{s['p95_ms']:.2f}",
                             s["queries"], "embed+dot+top10"])

                if not args.no_bm25s:
                    import bm25s

                    t = time.perf_counter()
                    retriever = bm25s.BM25()
                    retriever.index(bm25s.tokenize([c.embedding_input() for c in chunks], stopwords="en",
                                                   show_progress=False), show_progress=False)
                    bm25s_build = time.perf_counter() - t
                    lat = []
                    for i, q in enumerate(warmup + measured):
                        t = time.perf_counter()
                        toks = bm25s.tokenize([q], stopwords="en", return_ids=False, show_progress=False)
                        retriever.retrieve(toks, k=TOP_K, show_progress=False, n_threads=1)
                        if i >= len(warmup):
                            lat.append((time.perf_counter() - t) * 1000)
                    s = summarize(lat)
                    s["index_seconds"] = round(bm25s_build, 2)
                    entry["latency"]["baseline bm25s"] = s
                    rows.append([label, "baseline bm25s", f"{s['p50_ms']:.2f}", f"{s['p95_ms']:.2f}",
                                 s["queries"], f"tokenize+retrieve (index {bm25s_build:.1f}s)"])
                    del retriever
                results["sizes"][label] = entry
                backend.delete_index(name)
                del chunks, vectors

    print(f"\nSynthetic indexes (built through EmbeddedBackend.create_index + index(IndexedSource x"
          f"{SOURCE_CHUNKS} chunks, {WRITE_CHUNKS} chunks per call) + flush):")
    print(f"  chunk i = CISI chunk (i mod {len(base_chunks)}); copy 0 real text+vector; other copies: the real "
          "chunk's sentences shuffled with one swapped for a random CISI sentence, and the real vector + "
          f"N(0, {args.noise}^2) per dimension, renormalised (seed {args.seed}).")
    print(C.table(["size", "chunks", "build s", "chunks/s", "noisy-copy cos"], build_rows))
    print(f"\nQuery latency through Searcher.search (top_k={TOP_K}, query embedding included; "
          f"ef_search={settings.search.ef_search}, candidates={settings.search.candidates})")
    print(C.table(["size", "system", "p50 ms", "p95 ms", "queries", "stage p50 ms / notes"], rows,
                  align="llrrrl"))
    print(f"\nHybrid p95 breakdown (ms): where the time goes; 'short' = the measured queries of at most "
          f"{SHORT_QUERY_TOKENS} model tokens")
    print(C.table(["size", "total p95", "embed p95", "retrieve p95", "short-query total p95"], hybrid_rows))
    print("\nkNN recall@10: usearch HNSW (backend.knn) vs exact numpy search over all vectors, same query vectors"
          "\n(HNSW ms = backend.knn incl. SQLite hydration; exact ms = numpy dot + top-10, no embedding)")
    print(C.table(["size", "vectors / setting", "recall@10", "HNSW p50 ms", "exact p50 ms", "speed-up"],
                  recall_rows, align="llrrrr"))

    checks = []
    big = results["sizes"].get("100k")
    if big:
        p95 = big["latency"]["unirank hybrid"]["p95_ms"]
        checks.append(("hybrid p95 at 100k < 30 ms", p95, p95 < TARGET_HYBRID_P95_MS))
    for label, e in results["sizes"].items():
        checks.append((f"recall@10 at {label} >= 0.95", e["knn_recall@10"], e["knn_recall@10"] >= TARGET_RECALL))
    print("\nTargets:")
    for what, value, ok in checks:
        print(f"  {what}: {value} -> {'PASS' if ok else 'MISS'}")

    C.write_json(NAME, {
        "top_k": TOP_K,
        "queries": len(measured),
        "rerank_queries": min(args.rerank_queries, len(measured)),
        "warmup_queries": len(warmup),
        "cisi_real_chunks": len(base_chunks),
        "synthetic": {"noise_sd": args.noise, "seed": args.seed, "chunks_per_source": SOURCE_CHUNKS,
                      "chunks_per_index_call": WRITE_CHUNKS,
                      "method": "chunk i copies CISI chunk i mod n; copy 0 unchanged; later copies shuffle "
                                "the chunk's sentences and swap one for a random CISI sentence; vector = "
                                "real vector + gaussian noise, renormalised"},
        "settings": {"search": settings.search.model_dump(), "reranker": settings.reranker.model_dump()},
        "targets": [{"what": w, "value": v, "met": ok} for w, v, ok in checks],
        **results,
    })


if __name__ == "__main__":
    main()
