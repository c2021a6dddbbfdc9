"""Produce document-level runs for each retrieval system over one index.

A document's rank is its best chunk's rank. Each run goes down to DOC_DEPTH documents, however many
chunks that takes, so Recall@100 counts 100 documents. Hybrid and hybrid+rerank rank what `unirank
search` serves, through its Searcher with the same settings (search.candidates, rrf_k, the weights,
reranker.top_k): below what search serves, the run goes on down a deeper fusion, for Recall@100 only.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Callable

from unirank.evaluation.metrics import DocRun
from unirank.models.embedder import Embedder
from unirank.models.reranker import Reranker
from unirank.search.backend import SearchBackend
from unirank.search.blend import blended_order
from unirank.search.searcher import Searcher
from unirank.search.types import Hit
from unirank.settings import MAX_RERANK_TOP_K, SearchSettings

#: Chunks fetched first per query; doubled until they hold DOC_DEPTH documents or the index has no more.
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


def deep_enough(fetch: Callable[[int], list[Hit]], start: int = CHUNK_DEPTH) -> list[Hit]:
    """``fetch(k)`` for the first k (``start``, doubled) whose hits hold DOC_DEPTH documents, or that the
    index cannot fill. A fixed 200 chunks held 40 to 55 documents when each spans several chunks, so
    Recall@100 was measured over them (kNN over a 100-document corpus scored 0.9459, not 1.0)."""
    k = start
    while True:
        hits = fetch(k)
        if len(hits) < k or len({h.chunk.doc_id for h in hits}) >= DOC_DEPTH:
            return hits
        k *= 2


def as_searched(query: str) -> str:
    """The query as Searcher.search reads it (NFKC: fullwidth letters and ligatures as the models spell
    them), for the runs that go to the backend directly."""
    return unicodedata.normalize("NFKC", query)


class SystemRunner:
    def __init__(self, backend: SearchBackend, index: str, search: SearchSettings,
                 progress: Progress | None = None, *, rerank_top_k: int = MAX_RERANK_TOP_K) -> None:
        """``rerank_top_k``: the candidates a reranked search rescores (``reranker.top_k``)."""
        self.backend = backend
        self.index = index
        self.search = search
        self.progress = progress or (lambda *_: None)
        self.rerank_top_k = min(rerank_top_k, MAX_RERANK_TOP_K)
        self._searcher: Searcher | None = None  # of the embedder the hybrid hits were found with
        #: Each query's candidates a reranked search rescores, found once for every reranker of the embedder.
        self._rerank_heads: dict[str, list[Hit]] = {}
        #: The last (embedder, queries, vectors): knn and hybrid_hits of one embedder embedded them twice.
        self._embedded: tuple[Embedder, dict[str, str], dict[str, Any]] | None = None

    def bm25(self, queries: dict[str, str]) -> DocRun:
        return as_run({q: documents_in_order(deep_enough(lambda k: self.backend.bm25(self.index, as_searched(text), k)))
                       for q, text in queries.items()})

    def _vectors(self, queries: dict[str, str], embedder: Embedder) -> dict[str, Any]:
        if self._embedded is None or self._embedded[0] is not embedder or self._embedded[1] != queries:
            vectors = embedder.embed_documents([as_searched(t) for t in queries.values()])
            self._embedded = (embedder, dict(queries), dict(zip(queries, vectors)))
        return self._embedded[2]

    def knn(self, queries: dict[str, str], embedder: Embedder) -> DocRun:
        vectors = self._vectors(queries, embedder)
        return as_run({q: documents_in_order(deep_enough(lambda k: self.backend.knn(self.index, vectors[q], k)))
                       for q in queries})

    def hybrid_hits(self, queries: dict[str, str], embedder: Embedder) -> dict[str, list[Hit]]:
        """Each query's hybrid hits as `unirank search` ranks them, as deep as its fusion of
        ``search.candidates`` from each retriever goes; then the further chunks of a deeper fusion,
        which only fill Recall@100's depth (fusing 200 candidates a list, eval ranked the top other
        than search did)."""
        self._searcher = Searcher(self.backend, embedder, None, self.search, rerank_top_k=self.rerank_top_k)
        self._rerank_heads = {}
        served_depth = max(self.search.candidates, self.search.top_k)
        vectors = self._vectors(queries, embedder)
        hits = {}
        for q, text in queries.items():
            served = self._served(text, served_depth)
            if len({h.chunk.doc_id for h in served}) < DOC_DEPTH:
                served = served + deep_enough(lambda k: self._fused(text, vectors[q], k))
            hits[q] = served
        return hits

    def _served(self, query: str, top_k: int) -> list[Hit]:
        assert self._searcher is not None
        return self._searcher.search(query, self.index, mode="hybrid", top_k=top_k, rerank=False).hits

    def _fused(self, query: str, vector, k: int) -> list[Hit]:
        s = self.search
        return self.backend.hybrid(self.index, as_searched(query), vector, k, candidates=k, rrf_k=s.rrf_k,
                                   bm25_weight=s.bm25_weight, knn_weight=s.knn_weight)

    @staticmethod
    def hybrid(hits: dict[str, list[Hit]]) -> DocRun:
        return as_run({q: documents_in_order(h) for q, h in hits.items()})

    def rerank(self, queries: dict[str, str], hits: dict[str, list[Hit]], reranker: Reranker) -> DocRun:
        """The reranker rescores the candidates a reranked `unirank search` rescores (its first
        ``reranker.top_k`` hybrid hits) and blends as it does; below them, the hybrid order. ``hits`` are
        ``hybrid_hits``'s, found with the embedder the candidates are searched with."""
        if self._searcher is None:
            raise RuntimeError("SystemRunner.rerank needs hybrid_hits first: it searches with their embedder")
        ranked: dict[str, list[str]] = {}
        for n, (q, text) in enumerate(queries.items(), start=1):
            if q not in self._rerank_heads:
                self._rerank_heads[q] = self._served(text, self.rerank_top_k)
            head = self._rerank_heads[q]
            scores = reranker.score(as_searched(text), [h.chunk.embedding_input() for h in head])
            reordered = [h for h, _ in blended_order(head, scores, getattr(reranker, "blend_weight", 1.0))]
            ranked[q] = documents_in_order(reordered + hits[q])
            self.progress("rerank", n, len(queries))
        return as_run(ranked)
