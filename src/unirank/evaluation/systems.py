"""Produce document-level runs for each retrieval system over one index.

A document's rank is its best chunk's rank. ``hybrid+rerank`` reranks the first 50 hybrid
candidates (the production limit) and keeps hybrid's order below them, so Recall@100 is defined.
"""

from __future__ import annotations

from typing import Callable

from unirank.evaluation.metrics import DocRun
from unirank.models.embedder import Embedder
from unirank.models.reranker import Reranker
from unirank.search.backend import SearchBackend
from unirank.search.blend import blended_order
from unirank.search.types import Hit
from unirank.settings import MAX_RERANK_TOP_K, SearchSettings

#: Chunks fetched per query; deduplicated to documents and cut at DOC_DEPTH.
CHUNK_DEPTH = 200
DOC_DEPTH = 100

Progress = Callable[[str, int, int], None]


def documents_in_order(hits: list[Hit], depth: int = DOC_DEPTH) -> list[str]:
    seen: dict[str, None] = {}
    for hit in hits:
        seen.setdefault(hit.chunk.doc_id, None)
        if len(seen) == depth:
            break
    return list(seen)


def as_run(ranked: dict[str, list[str]]) -> DocRun:
    """Scores that keep the given order (ranx sorts by score)."""
    return {q: {doc: float(len(docs) - i) for i, doc in enumerate(docs)} for q, docs in ranked.items()}


class SystemRunner:
    def __init__(self, backend: SearchBackend, index: str, search: SearchSettings,
                 progress: Progress | None = None) -> None:
        self.backend = backend
        self.index = index
        self.search = search
        self.progress = progress or (lambda *_: None)

    def bm25(self, queries: dict[str, str]) -> DocRun:
        return as_run({q: documents_in_order(self.backend.bm25(self.index, text, CHUNK_DEPTH))
                       for q, text in queries.items()})

    def _vectors(self, queries: dict[str, str], embedder: Embedder):
        return dict(zip(queries, embedder.embed_documents(list(queries.values()))))

    def knn(self, queries: dict[str, str], embedder: Embedder) -> DocRun:
        vectors = self._vectors(queries, embedder)
        return as_run({q: documents_in_order(self.backend.knn(self.index, vectors[q], CHUNK_DEPTH))
                       for q in queries})

    def hybrid_hits(self, queries: dict[str, str], embedder: Embedder) -> dict[str, list[Hit]]:
        vectors = self._vectors(queries, embedder)
        s = self.search
        return {
            q: self.backend.hybrid(self.index, text, vectors[q], CHUNK_DEPTH, candidates=max(s.candidates, CHUNK_DEPTH),
                                   rrf_k=s.rrf_k, bm25_weight=s.bm25_weight, knn_weight=s.knn_weight)
            for q, text in queries.items()
        }

    @staticmethod
    def hybrid(hits: dict[str, list[Hit]]) -> DocRun:
        return as_run({q: documents_in_order(h) for q, h in hits.items()})

    def rerank(self, queries: dict[str, str], hits: dict[str, list[Hit]], reranker: Reranker,
               top: int = MAX_RERANK_TOP_K) -> DocRun:
        ranked: dict[str, list[str]] = {}
        for n, (q, text) in enumerate(queries.items(), start=1):
            head, tail = hits[q][:top], hits[q][top:]
            scores = reranker.score(text, [h.chunk.embedding_input() for h in head])
            reordered = [h for h, _ in blended_order(head, scores, getattr(reranker, "blend_weight", 1.0))]
            ranked[q] = documents_in_order(reordered + tail)
            self.progress("rerank", n, len(queries))
        return as_run(ranked)
