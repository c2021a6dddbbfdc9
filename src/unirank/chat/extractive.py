"""The offline answerer: quotes the retrieved sentences that answer the question best, with citations.

It needs no LLM and cannot invent anything: every sentence of its answer is copied from a passage
and cited, and it says that it quotes. Text in documents is only ever quoted, never obeyed.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator, Sequence

from unirank.chat.rewrite import words
from unirank.chat.sentences import MIN_SENTENCE_CHARS, sentence_spans, squash
from unirank.chat.types import AnswerEvent, Citation, Delta, Final, Passage
from unirank.models.reranker import Reranker

log = logging.getLogger(__name__)

PREFIX = "From the documents:"


class ExtractiveAnswerer:
    name = "extractive"

    def __init__(self, scorer: Reranker, *, max_sentences: int = 3, margin: float = 0.1,
                 fallback: Callable[[], Reranker] | None = None) -> None:
        """``scorer`` rates (question, text) pairs: cosines, or a cross-encoder's probabilities (both
        about 0-1, so one ``margin`` fits both). A sentence is quoted when its relevance is within
        ``margin`` of the best sentence's. ``fallback`` gives the scorer to use when ``scorer`` fails
        (a remote reranker that is down): the answer has already begun streaming."""
        self.scorer = scorer
        self.fallback = fallback
        self.max_sentences = max_sentences
        self.margin = margin

    def stream(self, question: str, passages: Sequence[Passage]) -> Iterator[AnswerEvent]:
        yield Delta(PREFIX)  # known as soon as retrieval found the question answerable
        picked = self.select(question, passages)
        numbers: dict[int, int] = {}  # context passage number -> citation number, in order of use
        citations: dict[int, Citation] = {}
        parts = [PREFIX]
        for i, (passage, start, end, score) in enumerate(picked):
            n = numbers.setdefault(passage.n, len(numbers) + 1)
            cited = Citation.from_passage(n, passage, start, end, score)
            citations[n] = citations[n].merged(cited) if n in citations else cited
            part = f" \u201c{squash(passage.chunk.text[start:end])}\u201d"
            if i + 1 == len(picked) or picked[i + 1][0].n != passage.n:
                part += f" [{n}]"  # quotes from one passage share one marker: "A" "B" [1], not "A" [1] "B" [1]
            parts.append(part)
            yield Delta(part)
        yield Final("".join(parts), [citations[n] for n in sorted(citations)])

    def select(self, question: str, passages: Sequence[Passage]) -> list[tuple[Passage, int, int, float]]:
        """The best sentences (at least one, at most ``max_sentences``), in reading order: by
        passage rank, then by position in the passage.

        A sentence's relevance is the mean of its own score (read under its title and heading)
        and its passage's: a sentence alone is short and noisy ("Respond within 30 minutes."),
        and the passage score keeps the quote to the passages that matched as a whole.
        """
        candidates: list[tuple[Passage, int, int]] = []
        seen: set[str] = set()
        for passage in passages:
            spans = sentence_spans(passage.chunk.text) or [(0, len(passage.chunk.text))]
            for start, end in _join_short(passage.chunk.text, spans):
                key = squash(passage.chunk.text[start:end]).lower()
                if key and key not in seen:  # overlapping chunks repeat sentences
                    seen.add(key)
                    candidates.append((passage, start, end))
        if not candidates:
            return []
        raw = self._score(question, [_with_context(c[0], _sentence(c)) for c in candidates])
        scores = [(r + p.score) / 2 for r, (p, _, _) in zip(raw, candidates)]
        ranked = sorted(zip(candidates, scores), key=lambda item: -item[1])
        best = ranked[0][1]
        chosen = [item for item in ranked[:self.max_sentences] if item[1] >= best - self.margin]
        asked = codes(question)
        naming = [(candidate, score) for candidate, score in chosen if asked & codes(_sentence(candidate))]
        if asked and naming:  # "SEV2: …" and "SEV3: …" score alike: quote the one the question names
            chosen = naming
        chosen.sort(key=lambda item: (item[0][0].n, item[0][1]))
        return [(p, s, e, float(score)) for (p, s, e), score in chosen]

    def _score(self, question: str, texts: list[str]) -> list[float]:
        try:
            return list(self.scorer.score(question, texts))
        except Exception as exc:  # as search does when reranking fails: degrade, do not fail
            if self.fallback is None:
                raise
            log.warning("the reranker failed (%s: %s); choosing sentences by the embedder's cosine",
                        type(exc).__name__, exc)
            return list(self.fallback().score(question, texts))


def codes(text: str) -> set[str]:
    """Words with a digit: severities, statuses, versions ("SEV2", "429", "v1"). Embeddings barely tell
    "SEV1: …" from "SEV2: …", so a question naming one quoted all three."""
    return {w for w in words(text) if any(ch.isdigit() for ch in w)}


def _sentence(candidate: tuple[Passage, int, int]) -> str:
    passage, start, end = candidate
    return passage.chunk.text[start:end]


def _with_context(passage: Passage, sentence: str) -> str:
    """A sentence is scored under its document title and heading, as the passage was embedded."""
    context = " > ".join(part for part in (passage.chunk.title, passage.heading) if part)
    return f"{context}\n{sentence}" if context else sentence


def _join_short(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """A very short sentence ("Yes.", "Free.") joins the next one (the last joins the previous)."""
    out: list[tuple[int, int]] = []
    pending: int | None = None
    for start, end in spans:
        if pending is not None:
            start, pending = pending, None
        if end - start < MIN_SENTENCE_CHARS:
            pending = start
            continue
        out.append((start, end))
    if pending is not None:
        if out:
            out[-1] = (out[-1][0], spans[-1][1])
        else:
            out.append((pending, spans[-1][1]))
    return out
