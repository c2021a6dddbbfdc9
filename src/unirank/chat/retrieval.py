"""Question -> numbered context passages: the search layer (hybrid + rerank), then a token budget.

The reranker's score of the best passage decides whether the documents cover the question at
all. The base bi-encoder scores a cosine and a cross-encoder a probability, so each kind has its own
threshold (``chat.min_score_cosine`` / ``chat.min_score_cross_encoder``; ``chat.min_score`` overrides both).
A question naming a code ("what is SEV2") is also covered when the best passage names that code: a short
code question scores a low cosine (0.29) even against the passage that defines it.
When the reranker fails (a remote one that is down), search answers un-reranked; the passages are then
scored by the embedder's cosine and held to the cosine threshold, so the check is never skipped.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

from unirank.api import Unirank
from unirank.chat.rewrite import codes
from unirank.chat.types import Passage
from unirank.models.reranker import BiEncoderReranker, Reranker
from unirank.search.searcher import Searcher
from unirank.search.types import Chunk, Hit
from unirank.settings import ChatSettings

log = logging.getLogger(__name__)


@dataclass
class Retrieval:
    query: str
    passages: list[Passage]
    #: Best relevance score among the passages (the reranker's, or the embedder's cosine when the reranker
    #: failed); None when nothing could score them, and the question then counts as not covered.
    relevance: float | None
    threshold: float
    timings_ms: dict[str, float] = field(default_factory=dict)

    @cached_property
    def grounded(self) -> bool:
        """Read several times a turn: the code check below the score is made once."""
        if not self.passages:
            return False
        if self.relevance is None:  # unscored passages may be about anything: quoting them is guessing
            return False
        if self.relevance >= self.threshold:
            return True
        return names_asked_codes(self.query, self.passages[0])  # below the score, on the code it asks about


class Retriever:
    def __init__(self, ur: Unirank, settings: ChatSettings) -> None:
        self.ur = ur
        self.settings = settings

    @cached_property
    def scorer(self) -> Reranker:
        """The configured reranker; with ``reranker.model = none``, the embedder's cosine, since
        the chat needs some relevance score to know when the documents do not cover a question."""
        reranker = self.ur.reranker
        return reranker if reranker is not None else self.cosine

    @cached_property
    def cosine(self) -> Reranker:
        """The embedder's cosine: the relevance score without a reranker, and the answerer's when a
        remote reranker fails (search then answers un-reranked; the answer must not fail after it began)."""
        return BiEncoderReranker(self.ur.embedder, name=f"{self.ur.embedder.signature}-cosine")

    @cached_property
    def searcher(self) -> Searcher:
        """The search layer's own searcher, reranking fewer candidates than a search does (one per turn)."""
        s = self.settings
        return Searcher(self.ur.backend, self.ur.embedder_for, self.scorer, self.ur.settings.search,
                        rerank_top_k=max(s.rerank_candidates, s.top_k), rerank_by_default=True)

    @property
    def threshold(self) -> float:
        return self._threshold_for(self.scorer)

    def _threshold_for(self, scorer: Reranker) -> float:
        s = self.settings
        if s.min_score is not None:
            return s.min_score
        return s.min_score_cosine if scores_cosine(scorer) else s.min_score_cross_encoder

    @property
    def tokenizer(self) -> Any:
        return self.ur.embedder.tokenizer

    def retrieve(self, query: str, index: str, filters: Mapping[str, str] | None = None) -> Retrieval:
        started = time.perf_counter()
        results = self.searcher.search(query, index, top_k=self.settings.top_k, rerank=True, filters=filters)
        threshold = self.threshold
        if results.degraded:
            scored, threshold = self._scored_by_cosine(query, results.hits), self._threshold_for(self.cosine)
        else:
            scored = [(hit.chunk, hit.scores.get("rerank")) for hit in results.hits]
        chunks = self._within_budget([c for c, _ in scored])
        passages = [Passage(n=i, chunk=chunk, score=float(score if score is not None else 0.0))
                    for i, (chunk, (_, score)) in enumerate(zip(chunks, scored), start=1)]
        known = [s for _, s in scored if s is not None]
        relevance = max(known) if known else None
        timings = {**{f"search_{k}": v for k, v in results.timings_ms.items()},
                   "retrieve": round((time.perf_counter() - started) * 1000, 3)}
        return Retrieval(query=query, passages=passages, relevance=relevance, threshold=threshold,
                         timings_ms=timings)

    def _scored_by_cosine(self, query: str, hits: list[Hit]) -> list[tuple[Chunk, float | None]]:
        """Un-reranked hits (the reranker failed) scored and ordered by the embedder's cosine, as with
        ``reranker.model = none``: without a score every question, "the capital of France" too, counted as
        covered and was answered with quotes. Unscored (None) when the cosine fails as well."""
        try:
            scores = [float(s) for s in self.cosine.score(query, [hit.chunk.embedding_input() for hit in hits])]
        except Exception as exc:  # the embedder failing too: no score, so nothing is said to be covered
            log.warning("the reranker failed and so did the embedder's cosine (%s: %s): no passage is relevant "
                        "enough to answer from", type(exc).__name__, exc)
            return [(hit.chunk, None) for hit in hits]
        log.warning("the reranker failed: the passages are judged by the embedder's cosine")
        ranked = sorted(zip(hits, scores), key=lambda pair: pair[1], reverse=True)
        return [(hit.chunk, score) for hit, score in ranked]

    def texts_about(self, words: str, index: str, filters: Mapping[str, str] | None = None, k: int = 3) -> list[str]:
        """What the passages BM25 finds first for ``words`` say: the context a follow-up's new subject has."""
        results = self.searcher.search(words, index, mode="bm25", top_k=k, rerank=False, filters=filters)
        return [hit.chunk.text for hit in results.hits]

    def _within_budget(self, chunks: list[Chunk]) -> list[Chunk]:
        """Passages in rank order while they fit ``context_tokens``; the first is cut to fit if it must."""
        budget = self.settings.context_tokens
        kept: list[Chunk] = []
        used = 0
        for chunk in chunks:
            tokens = self.count_tokens(chunk.embedding_input())
            if used + tokens > budget:
                if not kept:
                    kept.append(self._cut(chunk, budget))
                break
            kept.append(chunk)
            used += tokens
        return kept

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _cut(self, chunk: Chunk, budget: int) -> Chunk:
        prefix = self.count_tokens(chunk.embedding_input()) - self.count_tokens(chunk.text)
        keep = max(1, budget - prefix)
        encoded = self.tokenizer(chunk.text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
        if keep >= len(offsets):
            return chunk
        return dataclasses.replace(chunk, text=chunk.text[: offsets[keep - 1][1]])


def names_asked_codes(query: str, best: Passage) -> bool:
    """Whether ``best`` names, each as a whole word, the codes ``query`` asks about ("SEV2" in "SEV2: a
    major feature is degraded …", not in "SEV20"). Only codes with letters count: a bare number (a year, a
    count) is in passages on every topic, and a question naming none is judged by its score alone."""
    asked = {code for code in codes(query) if any(ch.isalpha() for ch in code)}
    return bool(asked) and asked <= codes(best.chunk.text)


def scores_cosine(reranker: Reranker) -> bool:
    """A bi-encoder reranker scores a cosine in [-1, 1], in process or behind an endpoint that serves one
    (a unirank model server reranking with ``base``): it says so with ``scores_cosine``. Anything else is
    taken to be a cross-encoder scoring a probability in [0, 1] (in process or behind a TEI/Cohere endpoint)."""
    return bool(getattr(reranker, "scores_cosine", False))
