"""The offline answerer: quotes the retrieved sentences that answer the question best, with citations.

It needs no LLM and cannot invent anything: every sentence of its answer is copied from a passage
and cited, and it says that it quotes. Text in documents is only ever quoted, never obeyed.
"""

from __future__ import annotations

import logging
import re
from typing import Callable, Iterator, Sequence

from unirank.chat.rewrite import code_kind, codes, content_words, words
from unirank.chat.sentences import MIN_SENTENCE_CHARS, sentence_spans, squash, table_cells, table_headers
from unirank.chat.types import AnswerEvent, Citation, Delta, Final, Passage
from unirank.ingest.chunking import _LIST_MARKER, _PARAGRAPH
from unirank.models.reranker import Reranker
from unirank.search.embedded.fulltext import english_analyzer

log = logging.getLogger(__name__)

PREFIX = "From the documents:"
#: Where an item ends: a blank line (the chunker's paragraph break), or a line that opens a list item
#: ("- …", "* …", "2. …").
_LIST_ITEM = re.compile(r"\s*\n\s*" + _LIST_MARKER + r"\s")
#: BM25's analyzer: a row's "Backups" and a sentence's "backup" are one word.
_ANALYZER = english_analyzer()


def _quotable(sentence: str) -> str:
    """A sentence as quoted: squashed, and its own curly double quotes made single ones, as a quote inside
    a quote is written. The answer's quote then ends at its first closing double quote: the web page ended
    it at the one closing a quoted term in the sentence, and took a "[1]" of the document after that for a
    citation."""
    return squash(sentence).replace("\u201c", "\u2018").replace("\u201d", "\u2019")


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

    def stream(self, question: str, passages: Sequence[Passage], *,
               as_asked: str | None = None) -> Iterator[AnswerEvent]:
        """Sentences are scored against the stand-alone ``question``: a follow-up's own words (``as_asked``)
        lack what it refers to."""
        yield Delta(PREFIX)  # known as soon as retrieval found the question answerable
        picked = self.select(question, passages)
        numbers: dict[int, int] = {}  # context passage number -> citation number, in order of use
        citations: dict[int, Citation] = {}
        parts = [PREFIX]
        for i, (passage, start, end, score) in enumerate(picked):
            n = numbers.setdefault(passage.n, len(numbers) + 1)
            cited = Citation.from_passage(n, passage, start, end, score)
            citations[n] = citations[n].merged(cited) if n in citations else cited
            part = f" \u201c{_quotable(passage.chunk.text[start:end])}\u201d"
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

        A table row is a sentence of its own, scored with its header's names for its cells and quoted
        after its header row: a table has no sentence ends, and was scored and quoted as one squashed
        quote (or not at all).
        """
        candidates: list[tuple[Passage, int, int]] = []
        headers: dict[tuple[int, int, int], tuple[int, int]] = {}  # (passage n, row span) -> header span
        units: dict[int, list[tuple[int, int]]] = {}  # passage n -> its quotable units, in reading order
        seen: set[str] = set()
        for passage in passages:
            text = passage.chunk.text
            in_table = table_headers(text)
            units[passage.n] = _units(text, sentence_spans(text) or [(0, len(text))], in_table)
            for start, end in units[passage.n]:
                key = squash(text[start:end]).lower()
                if key and key not in seen:  # overlapping chunks repeat sentences
                    seen.add(key)
                    candidates.append((passage, start, end))
                    if (start, end) in in_table:
                        headers[(passage.n, start, end)] = in_table[(start, end)]
        if not candidates:
            return []
        raw = self._score(question, [_with_context(c[0], _readable(c, headers)) for c in candidates])
        scores = [(r + p.score) / 2 for r, (p, _, _) in zip(raw, candidates)]
        ranked = sorted(zip(candidates, scores), key=lambda item: -item[1])
        best = ranked[0][1]
        chosen = [item for item in ranked[:self.max_sentences] if item[1] >= best - self.margin]
        asked = codes(question)
        # "SEV2: …" and "SEV3: …" score alike: quote the one the question names, looked for among all the
        # sentences within the margin; among the best three only, "who do I page for it? sev2" found none
        # (SEV2's was fourth) and quoted the Starter plan's price, its passage ranked first.
        naming = [(candidate, score) for candidate, score in ranked
                  if score >= best - self.margin and asked & codes(_sentence(candidate))]
        if asked and naming:
            chosen = self._with_continuations(naming, asked, units, headers)
        named = [item for item in ranked
                 if item[1] >= best - self.margin and _names_row(question, item[0], headers)]
        if named:  # so do a table's rows: quote the rows the question names, not their neighbours
            keys = [_row_key(item[0]) for item in named]
            prose = [item for item in chosen if (item[0][0].n, *item[0][1:]) not in headers
                     and any(key <= _stems(_sentence(item[0])) for key in keys)]  # only prose on the same rows
            chosen = (named + prose)[:self.max_sentences]
        chosen = _under_named_headings(question, chosen)
        chosen.sort(key=lambda item: (item[0][0].n, item[0][1]))
        picked: list[tuple[Passage, int, int, float]] = []
        for (p, s, e), score in chosen:
            header = headers.get((p.n, s, e))
            if header and not any(q is p and (qs, qe) == header for q, qs, qe, _ in picked):
                picked.append((p, *header, float(score)))  # quoted before its first row
            picked.append((p, s, e, float(score)))
        return picked

    def _with_continuations(self, naming: list[tuple[tuple[Passage, int, int], float]], asked: set[str],
                            units: dict[int, list[tuple[int, int]]],
                            headers: dict[tuple[int, int, int], tuple[int, int]],
                            ) -> list[tuple[tuple[Passage, int, int], float]]:
        """The sentences that name a code the question asks about, each with the sentences that go on with
        its item (at most ``max_sentences`` in all): "SEV2: a major feature is degraded …" alone did not
        answer "how quickly must we respond to a SEV2 incident?"; "Respond within 30 minutes." follows it."""
        out: list[tuple[tuple[Passage, int, int], float]] = []
        taken: set[str] = set()  # as candidates are: overlapping chunks repeat sentences
        for (passage, start, end), score in naming:
            for span in [(start, end), *_continuation(passage, (start, end), asked, units[passage.n], headers)]:
                key = squash(passage.chunk.text[span[0]:span[1]]).lower()
                if key not in taken:
                    taken.add(key)
                    out.append(((passage, *span), score))
        return out[:self.max_sentences]

    def _score(self, question: str, texts: list[str]) -> list[float]:
        try:
            return list(self.scorer.score(question, texts))
        except Exception as exc:  # as search does when reranking fails: degrade, do not fail
            if self.fallback is None:
                raise
            log.warning("the reranker failed (%s: %s); choosing sentences by the embedder's cosine",
                        type(exc).__name__, exc)
            return list(self.fallback().score(question, texts))


def _continuation(passage: Passage, span: tuple[int, int], asked: set[str], spans: list[tuple[int, int]],
                  headers: dict[tuple[int, int, int], tuple[int, int]]) -> list[tuple[int, int]]:
    """The units after ``span`` in its item: the same paragraph (no blank line between), not across the
    start of a list item, a table row, or a sentence that names another code of the asked kind ("SEV3: …")."""
    text = passage.chunk.text
    if (passage.n, *span) in headers or span not in spans:
        return []
    kinds = {code_kind(c) for c in asked}
    out: list[tuple[int, int]] = []
    end = span[1]
    for start, stop in spans[spans.index(span) + 1:]:
        if _PARAGRAPH.search(text[end:start]) or _LIST_ITEM.match(text, end) or (passage.n, start, stop) in headers:
            break
        if any(code_kind(c) in kinds for c in codes(text[start:stop]) - asked):
            break
        out.append((start, stop))
        end = stop
    return out


def _row_key(candidate: tuple[Passage, int, int]) -> set[str]:
    """The stems of a table row's first cell: what the row is about ("Backups | 90 days" -> {"backup"})."""
    passage, start, end = candidate
    return _stems(table_cells(passage.chunk.text[start:end])[0])


def _stems(text: str) -> set[str]:
    return set(_ANALYZER.analyze(text))


def _sentence(candidate: tuple[Passage, int, int]) -> str:
    passage, start, end = candidate
    return passage.chunk.text[start:end]


def _names_row(question: str, candidate: tuple[Passage, int, int],
               headers: dict[tuple[int, int, int], tuple[int, int]]) -> bool:
    """Whether ``question`` names a table row by its first cell ("how long are support tickets kept?")."""
    passage, start, end = candidate
    if (passage.n, start, end) not in headers:
        return False
    key = content_words(table_cells(passage.chunk.text[start:end])[0])
    return bool(key) and set(key) <= set(words(question))


def _under_named_headings(question: str, chosen: list[tuple[tuple[Passage, int, int], float]],
                          ) -> list[tuple[tuple[Passage, int, int], float]]:
    """The sentences of the passages whose heading the question names, when it names some of them: "what is
    the price of enterprise?" quoted the Team plan's price beside the Enterprise section's answer."""
    asked = _stems(question)
    under = [item for item in chosen if _heading_named(item[0][0], asked)]
    return under or chosen


def _heading_named(passage: Passage, asked: set[str]) -> bool:
    """Whether the words of the passage's own heading (its last level: "Enterprise" under "Plans and
    pricing") are all among the question's stems ``asked``."""
    key = _stems(" ".join(content_words(passage.heading.rpartition(" > ")[2])))
    return bool(key) and key <= asked


def _readable(candidate: tuple[Passage, int, int], headers: dict[tuple[int, int, int], tuple[int, int]]) -> str:
    """A sentence as it is scored; a table row as "Data type: Support tickets; Retention period: 3 years"."""
    passage, start, end = candidate
    header = headers.get((passage.n, start, end))
    if header is None:
        return _sentence(candidate)
    names = table_cells(passage.chunk.text[header[0]:header[1]])
    cells = table_cells(passage.chunk.text[start:end])
    return "; ".join(f"{name}: {cell}" if name else cell for name, cell in zip(names + [""] * len(cells), cells))


def _units(text: str, spans: list[tuple[int, int]],
           headers: dict[tuple[int, int], tuple[int, int]]) -> list[tuple[int, int]]:
    """The sentences (short ones joined to a neighbour) and table rows that can be quoted; a header
    row is not one: it is quoted with its rows."""
    units: list[tuple[int, int]] = []
    run: list[tuple[int, int]] = []
    for span in spans:
        if span not in headers:
            run.append(span)
            continue
        units.extend(_join_short(text, run))  # a short sentence is not joined across a table
        run = []
        if headers[span] != span:
            units.append(span)
    return units + _join_short(text, run)


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
