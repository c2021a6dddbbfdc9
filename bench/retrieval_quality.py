"""Retrieval quality on CISI: unirank's bm25 / knn / hybrid / hybrid+rerank vs. a bm25s baseline.

Ingests ``../shared/data/cisi/corpus.jsonl`` through ``Unirank.ingest`` (default settings) into a
temporary data dir, runs every judged query, and scores nDCG@10 and Recall@100 with ranx. A document
scores as its best chunk (hits deduplicated by ``doc_id``, first occurrence kept; 100 chunks retrieved).
The baseline, scored with the same code in the same run, is the bm25s library (English stop words,
no stemming, documents as ``title. text``), plus exact cosine kNN of all-MiniLM-L6-v2 over whole
documents for context.

    .venv/bin/python bench/retrieval_quality.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "retrieval_quality"
INDEX = "cisi"
RETRIEVE_TOP_K = 100
RERANK_TOP_K = 50  # the most a search may ask for with rerank=True
README_REFERENCE = {
    "bm25s (README reference)": {"ndcg@10": 0.3493, "recall@100": 0.4175},
    "all-MiniLM-L6-v2 exact kNN (README reference)": {"ndcg@10": 0.4237, "recall@100": 0.4706},
}


def run_unirank(ur, queries: dict[str, str], qids: list[str]) -> dict[str, dict]:
    configs = [
        ("unirank bm25", dict(mode="bm25", top_k=RETRIEVE_TOP_K, rerank=False)),
        ("unirank knn", dict(mode="knn", top_k=RETRIEVE_TOP_K, rerank=False)),
        ("unirank hybrid", dict(mode="hybrid", top_k=RETRIEVE_TOP_K, rerank=False)),
        ("unirank hybrid+rerank", dict(mode="hybrid", top_k=RERANK_TOP_K, rerank=True)),
    ]
    results = {}
    for label, kwargs in configs:
        started = time.perf_counter()
        ranked, degraded, chunks_seen = {}, 0, 0
        for qid in qids:
            res = ur.search(queries[qid], INDEX, **kwargs)
            degraded += int(res.degraded)
            chunks_seen += len(res.hits)
            ranked[qid] = C.dedupe_doc_ids(h.chunk.doc_id for h in res.hits)
        results[label] = {"ranked": ranked, "seconds": time.perf_counter() - started, "search": kwargs,
                          "degraded": degraded, "mean_hits": chunks_seen / len(qids),
                          "mean_docs": sum(len(v) for v in ranked.values()) / len(qids)}
        print(f"  {label}: {len(qids)} queries in {results[label]['seconds']:.1f}s")
    return results


def run_bm25s(corpus: list[dict], queries: dict[str, str], qids: list[str]) -> dict[str, list[str]]:
    import bm25s

    ids = [str(d["_id"]) for d in corpus]
    texts = [f"{d.get('title', '')}. {d.get('text', '')}" for d in corpus]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    q_tokens = bm25s.tokenize([queries[q] for q in qids], stopwords="en", show_progress=False)
    docs, _scores = retriever.retrieve(q_tokens, k=RETRIEVE_TOP_K, show_progress=False)
    return {qid: [ids[i] for i in row] for qid, row in zip(qids, docs)}


def run_dense_exact(model, corpus: list[dict], queries: dict[str, str], qids: list[str]) -> dict[str, list[str]]:
    import numpy as np

    ids = [str(d["_id"]) for d in corpus]
    texts = [f"{d.get('title', '')}. {d.get('text', '')}" for d in corpus]
    docs = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False)
    q = model.encode([queries[x] for x in qids], batch_size=64, normalize_embeddings=True,
                     convert_to_numpy=True, show_progress_bar=False)
    sims = q @ docs.T
    order = np.argsort(-sims, axis=1)[:, :RETRIEVE_TOP_K]
    return {qid: [ids[i] for i in row] for qid, row in zip(qids, order)}


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help; no options of its own
    cisi = C.require_cisi()
    C.warn_if_busy()
    corpus = C.load_corpus(cisi)
    queries = C.load_queries(cisi)
    qrels = C.load_qrels(cisi)
    qids = sorted((q for q in qrels if q in queries), key=lambda q: int(q) if q.isdigit() else q)
    print(f"CISI: {len(corpus)} documents, {len(queries)} queries, {len(qids)} with judgements")

    with tempfile.TemporaryDirectory(prefix="unirank-bench-") as tmp:
        settings = C.isolated_settings(Path(tmp) / "data")
        from unirank.api import Unirank

        with Unirank(settings) as ur:
            started = time.perf_counter()
            report = ur.ingest(str(cisi / "corpus.jsonl"), INDEX)
            ingest_s = time.perf_counter() - started
            info = ur.index_info(INDEX)
            print(f"ingested {report.chunks_written} chunks from {len(corpus)} documents in {ingest_s:.1f}s "
                  f"(failed: {len(report.failed)})")
            for w in report.warnings:
                print(f"  ingest warning: {w}")
            if report.failed or not report.chunks_written:
                raise SystemExit(f"ingest failed: {report.failed}")

            ours = run_unirank(ur, queries, qids)
            started = time.perf_counter()
            base_bm25s = run_bm25s(corpus, queries, qids)
            bm25s_s = time.perf_counter() - started
            started = time.perf_counter()
            base_dense = run_dense_exact(ur.embedder.model, corpus, queries, qids)
            dense_s = time.perf_counter() - started

    rows, figures = [], {}
    for label, r in ours.items():
        metrics = ("ndcg@10",) if r["search"]["rerank"] else ("ndcg@10", "recall@100")
        m = C.evaluate(qrels, r["ranked"], metrics)
        figures[label] = {"ndcg@10": m["ndcg@10"], "recall@100": m.get("recall@100"),
                          "search": r["search"], "seconds": round(r["seconds"], 2),
                          "mean_docs_per_query": round(r["mean_docs"], 1), "degraded": r["degraded"]}
    for label, ranked, secs in [
        ("baseline bm25s (en stop words, no stemming)", base_bm25s, bm25s_s),
        ("baseline MiniLM exact kNN, whole docs", base_dense, dense_s),
    ]:
        m = C.evaluate(qrels, ranked)
        figures[label] = {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"], "seconds": round(secs, 2)}
    for label, ref in README_REFERENCE.items():
        figures[label] = dict(ref)

    bm25s_ndcg = figures["baseline bm25s (en stop words, no stemming)"]["ndcg@10"]
    for label, f in figures.items():
        delta = "" if label.startswith("baseline bm25s") or "README" in label else f"{f['ndcg@10'] - bm25s_ndcg:+.4f}"
        rows.append([label, C.fmt(f["ndcg@10"]), C.fmt(f.get("recall@100")), delta])

    print(f"\nCISI retrieval quality ({len(qids)} judged queries; doc score = best chunk; "
          f"top_k={RETRIEVE_TOP_K} chunks, rerank top_k={RERANK_TOP_K})")
    print(C.table(["system", "nDCG@10", "Recall@100", "nDCG vs bm25s"], rows))
    print("Recall@100 is n/a for hybrid+rerank: a reranked search returns at most "
          f"{RERANK_TOP_K} chunks.")

    C.write_json(NAME, {
        "collection": "CISI (BEIR layout)",
        "documents": len(corpus),
        "judged_queries": len(qids),
        "index": {"chunks": info.chunk_count, "sources": info.source_count, "model": str(info.model),
                  "ingest_seconds": round(ingest_s, 2), "warnings": report.warnings},
        "settings": {"chunking": settings.chunking.model_dump(), "search": settings.search.model_dump(),
                     "reranker": settings.reranker.model_dump()},
        "figures": figures,
    })


if __name__ == "__main__":
    main()
