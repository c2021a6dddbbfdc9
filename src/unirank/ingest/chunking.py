"""Token-aware chunking: every chunk, with its title/heading prefix, fits the embedder's window.

Chunks are contiguous slices of one section's text (never crossing a section, so page and
heading stay exact), its whitespace runs over ``MAX_TOKEN_CHARS`` characters shortened (a line's
indentation to ``MAX_INDENT_CHARS``). Breaks
prefer paragraph ends, then sentence ends, then line ends, and only then hard cuts at token
boundaries. Token counts come from the embedder's own tokenizer, called on batches of paragraphs
so that chunking costs a small fraction of embedding.
"""

from __future__ import annotations

import logging
import re
import warnings
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Iterable, Sequence

from unirank.errors import ParseError
from unirank.ingest.documents import ParsedDocument
from unirank.search.types import Chunk
from unirank.text import is_blank

log = logging.getLogger(__name__)

# Strength of the break before a unit: lower is a better place to end a chunk.
PARAGRAPH, SENTENCE, LINE, TOKEN = 0, 1, 2, 3

_PARAGRAPH = re.compile(r"\n\s*\n")
# A sentence ends at . ! ? (plus closing quotes/brackets) followed by space and a capital (of any
# cased script: Ł, Č, Ψ, Ж as well as A), digit or opening quote, or at a CJK 。！？, which needs no space
# after it; group 1 is the gap between the sentences (empty after a CJK end). Not after a title or an
# abbreviation that is followed by a capital ("Dr. Weber", "e.g. Slack"), nor after a day before its
# month ("bis zum 31. März", "1. Mai"): those cut a sentence in two, and a quote of either half misled.
_ABBREVIATIONS = ("Dr", "Mr", "Mrs", "Ms", "Prof", "St", "Nr", "vs", "ca", "bzw", "e.g", "i.e", "z.B", "u.a", "d.h",
                  # Russian and Polish ones a name follows ("на ул. Ленина", "przy ul. Marszałkowskiej"); not
                  # им/im ("them") nor пр ("и пр." is "etc."), which end sentences as often
                  "ул", "проф", "т.е", "ul", "al", "np", "tzn", "prof", "dr")
_MONTHS = (r"(?:Jan(?:uar|uary)?|J\u00e4nner|Feb(?:ruar|ruary)?|M\u00e4rz|Mar(?:ch)?|Apr(?:il)?|Mai|May|Jun[ie]?|"
           r"Jul[iy]?|Aug(?:ust)?|Sep(?:t|tember)?|O[ck]t(?:ober)?|Nov(?:ember)?|De[cz](?:ember)?)\b")
_NOT_AN_END = "".join(rf"(?<!\b{re.escape(a)}\.)" for a in _ABBREVIATIONS) + (
    r"(?:(?<!\bг\.)|(?<=\d\sг\.))"  # "в г. Москва" (city), but "в 1998 г." (year) may end a sentence
    + rf"(?!(?<=\b\d\.)\s+{_MONTHS})(?!(?<=\b[0-3]\d\.)\s+{_MONTHS})"
    + "".join(rf"(?<!{line}\d{{{n}}}\.)" for line in ("^", "\n") for n in (1, 2, 3)))  # a list's "1. "
# What opens a list item at a line's start: "- ", "* ", "1. ", "2) ".
_LIST_MARKER = r"(?:[-*+\u2022]|\d{1,3}[.)])"


def _capitals() -> str:
    """A character class of the digits and every upper- or title-case letter of the Basic Multilingual
    Plane: only Latin ones up to Þ were, so no sentence ended before a Cyrillic, Greek or Ł, Ś, Č, İ."""
    import unicodedata

    cased = [c for c in map(chr, range(0x10000)) if unicodedata.category(c) in ("Lu", "Lt")]
    ranges: list[list[str]] = []
    for c in cased:
        if ranges and ord(c) == ord(ranges[-1][1]) + 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return "[0-9" + "".join(f"\\u{ord(a):04x}-\\u{ord(b):04x}" for a, b in ranges) + "]"


#: Quotes and brackets that may close a sentence, and open the next ("«Ключи", „Klucze", ¿Qué).
_CLOSERS = "[\"'\u201d\u2019\u00bb)\\]]"
_OPENERS = "[\"'\u201c\u2018\u201e\u00ab\u00bf\u00a1(\\[]"
#: CJK sentence ends (full and half width), and the closing quotes and brackets after which a CJK end is
#: inside a quote (「はい。」と言った: one sentence), not the end of the sentence.
_CJK_ENDS = "\u3002\uff01\uff1f\uff61"
_CJK_CLOSERS = "\u300d\u300f\uff09\u3011\u3015\u3009\u300b\u201d\u2019\"')\\]"
#: What a sentence after a full stop starts with: a digit or a capital of any cased script.
SENTENCE_START = _capitals()
#: CJK sentence ends, after which no space comes, and what after one keeps the sentence going.
CJK_SENTENCE_ENDS = _CJK_ENDS
CJK_SENTENCE_CLOSERS = _CJK_CLOSERS
# A list item begins a sentence too, whatever ended the line before it: an item with no full stop
# was read as one sentence with the next.
_SENTENCE = re.compile(
    r"""(?:[.!?]""" + _NOT_AN_END + _CLOSERS + r"""*(?=\s+""" + _OPENERS + "?" + SENTENCE_START + ")"
    + r"""|(?=[ \t]*\n\s*""" + _LIST_MARKER + r"""[ \t])"""
    + rf"""|(?<=[{_CJK_ENDS}])(?![{_CJK_ENDS}{_CJK_CLOSERS}]))(\s*)"""
)
_LINE = re.compile(r"\s*\n\s*")
_TOKENIZE_BATCH = 1024
#: The most characters one token counts for: more than a vocabulary's longest word piece (18 in BERT's).
#: WordPiece reads a word of over 100 characters (a base64 blob) as one [UNK] spanning all of it, which
#: made a chunk of a megabyte; such a token counts as one per this many characters, and may be cut between.
MAX_TOKEN_CHARS = 20
#: Whitespace no token covers: a megabyte of it between two words made a chunk of "two tokens".
_LONG_WHITESPACE = re.compile(rf"\s{{{MAX_TOKEN_CHARS + 1},}}")
#: The most indentation a line keeps: code nested six levels deep at four spaces (24) kept only 19, which
#: flattened its blocks (Python's meaning with them); more than this is no nesting anyone reads.
MAX_INDENT_CHARS = 64
_ContextKey = tuple[str, tuple[str, ...]]  # (title, heading path)
_Context = tuple[str, tuple[str, ...], int]  # (title, heading path) as used, prefix tokens
_MAX_REPLANS = 8


@dataclass(frozen=True)
class _Unit:
    """An unbreakable piece of a section: a sentence, a line, or a run of tokens."""

    start: int
    end: int
    tokens: int
    boundary: int  # strength of the break before it


@dataclass
class _Job:
    """One section to cut, with the text budget its context prefix leaves."""

    text: str
    budget: int
    prefix: str  # what embedding_input puts before the text


#: The default chunk size for a long-context model: a chunk is what a search hit cites and a
#: reranker reads, and a passage of a few hundred tokens ranks better than pages of them.
DEFAULT_MAX_CHUNK_TOKENS = 512


class Chunker:
    """Cuts parsed documents into chunks of at most ``size`` tokens of embedding input."""

    def __init__(self, tokenizer: Any, max_seq_length: int, size: int | None = None, overlap: int = 64) -> None:
        """``size`` None fills the model's window up to ``DEFAULT_MAX_CHUNK_TOKENS``; a size larger than
        the window is clamped to it with a warning."""
        if (size is not None and size < 1) or overlap < 0:
            raise ValueError(f"chunk size must be >= 1 and overlap >= 0, got size={size}, overlap={overlap}")
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        #: What the model reads besides the special tokens ([CLS], [SEP]) it adds itself.
        self.model_budget = max(1, max_seq_length - _special_tokens(tokenizer))
        size = min(self.model_budget, DEFAULT_MAX_CHUNK_TOKENS) if size is None else size
        self.requested_size = size
        self.requested_overlap = overlap
        self.clamped = size > self.model_budget
        self.size = min(size, self.model_budget)
        if self.clamped:
            _warn(
                f"chunk size {size} exceeds the model maximum of {self.model_budget} tokens "
                f"(max_seq_length {max_seq_length} minus special tokens); using {self.size}"
            )
        self.overlap = overlap
        if overlap >= self.size:
            self.overlap = self.size // 4
            _warn(
                f"chunk overlap {overlap} is not below the chunk size {self.size} "
                f"(requested size {size}, model maximum {self.model_budget}); using overlap {self.overlap}"
            )

    # -- public -------------------------------------------------------------------------------

    def chunk(self, doc: ParsedDocument, source_uri: str) -> list[Chunk]:
        return self.chunk_documents([doc], source_uri)

    def chunk_documents(self, docs: Sequence[ParsedDocument], source_uri: str) -> list[Chunk]:
        """Chunk several documents with batched tokenizer calls (e.g. the records of one JSONL file)."""
        contexts = self._contexts(docs)
        jobs: list[_Job] = []
        owners: list[tuple[int, int]] = []  # (doc index, section index) per job
        for d, doc in enumerate(docs):
            for s, section in enumerate(doc.sections):
                if not is_blank(section.text):  # not str.strip(): a zero-width space alone is no text
                    title, path, prefix_tokens = contexts[(doc.title, section.heading_path)]
                    text = _bound_whitespace(section.text)
                    jobs.append(_Job(text, self.size - prefix_tokens, _prefix(title, path)))
                    owners.append((d, s))
        spans = self._plan(jobs)
        ordinals = [0] * len(docs)
        chunks: list[Chunk] = []
        for job, (d, s), job_spans in zip(jobs, owners, spans):
            doc, section = docs[d], docs[d].sections[s]
            title, path, _ = contexts[(doc.title, section.heading_path)]
            for start, end in job_spans:
                ordinal = ordinals[d]
                ordinals[d] += 1
                chunks.append(
                    Chunk(
                        id=f"{doc.doc_id}#{ordinal}",
                        doc_id=doc.doc_id,
                        source_uri=source_uri,
                        ordinal=ordinal,
                        text=job.text[start:end],
                        title=title,
                        heading_path=path,
                        page=section.page,
                        metadata=dict(doc.metadata),
                    )
                )
        return chunks

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text as the model sees them, without special tokens (one batched call)."""
        counts: list[int] = []
        for start in range(0, len(texts), _TOKENIZE_BATCH):
            batch = list(texts[start : start + _TOKENIZE_BATCH])
            ids = self._encode(batch, offsets=False)["input_ids"]
            counts.extend(len(row) for row in ids)
        return counts

    # -- planning -----------------------------------------------------------------------------

    def _plan(self, jobs: list[_Job]) -> list[list[tuple[int, int]]]:
        """Character spans of each job's chunks, re-planned tighter where the check finds overflow.

        Unit token counts add up exactly for tokenizers that split on whitespace (WordPiece);
        the check with the real tokenizer makes the size guarantee hold for any tokenizer.
        """
        spans = self._pack_all(jobs)
        pending = list(range(len(jobs)))
        for _ in range(_MAX_REPLANS):
            excess = self._excess(jobs, spans, pending)
            pending = [j for j in pending if excess.get(j, 0) > 0]
            if not pending:
                return spans
            for j in pending:
                jobs[j] = _Job(jobs[j].text, max(1, jobs[j].budget - excess[j]), jobs[j].prefix)
            for j, replanned in zip(pending, self._pack_all([jobs[j] for j in pending])):
                spans[j] = replanned
        # Unreachable with real tokenizers (each round shrinks the budget by the overflow);
        # failing one file beats failing the whole ingestion run.
        raise ParseError(f"cannot fit chunks into {self.size} tokens with this tokenizer")

    def _excess(self, jobs: list[_Job], spans: list[list[tuple[int, int]]],
                which: list[int]) -> dict[int, int]:
        """Tokens over ``size`` in each job's worst chunk, counting the full embedding input."""
        texts, owners = [], []
        for j in which:
            for start, end in spans[j]:
                texts.append(jobs[j].prefix + jobs[j].text[start:end])
                owners.append(j)
        excess: dict[int, int] = {}
        for j, count in zip(owners, self.count_tokens(texts)):
            if count > self.size:
                excess[j] = max(excess.get(j, 0), count - self.size)
        return excess

    def _pack_all(self, jobs: list[_Job]) -> list[list[tuple[int, int]]]:
        paragraphs = [
            (j, span) for j, job in enumerate(jobs) for span in _split(job.text, 0, len(job.text), _PARAGRAPH)
        ]
        units: list[list[_Unit]] = [[] for _ in jobs]
        for first in range(0, len(paragraphs), _TOKENIZE_BATCH):
            batch = paragraphs[first : first + _TOKENIZE_BATCH]
            encoded = self._encode([jobs[j].text[a:b] for j, (a, b) in batch], offsets=True)
            for (j, (a, b)), offsets in zip(batch, encoded["offset_mapping"]):
                starts, ends = _pieces([a + s for s, _ in offsets], [a + e for _, e in offsets])
                units[j].extend(self._units(jobs[j], (a, b), starts, ends))
        return [self._pack(job_units, job.budget) for job_units, job in zip(units, jobs)]

    def _units(self, job: _Job, span: tuple[int, int], starts: list[int], ends: list[int]) -> Iterable[_Unit]:
        """Sentences of one paragraph; lines, then token runs, for sentences over budget."""
        text, budget = job.text, job.budget

        def count(a: int, b: int) -> int:  # tokens starting inside text[a:b]
            return bisect_left(starts, b) - bisect_left(starts, a)

        boundary = PARAGRAPH
        for a, b in _split(text, span[0], span[1], _SENTENCE, group=1):
            if (n := count(a, b)) <= budget:
                yield _Unit(a, b, n, boundary)
            else:
                for la, lb in _split(text, a, b, _LINE):
                    if (n := count(la, lb)) <= budget:
                        yield _Unit(la, lb, n, boundary)
                    else:
                        yield from self._hard_cut(text, la, lb, starts, ends, boundary, budget)
                    boundary = LINE
            boundary = SENTENCE

    def _hard_cut(self, text: str, a: int, b: int, starts: list[int], ends: list[int],
                  boundary: int, budget: int) -> Iterable[_Unit]:
        """Runs of tokens, small enough that packing can fill chunks and overlap by whole runs.

        Cuts fall before a word's first token when one is near, else at any token boundary.
        """
        piece = min(budget, max(1, self.overlap // 2)) if self.overlap else budget
        first, last = bisect_left(starts, a), bisect_left(starts, b)
        begin = a
        while last - first > piece:
            cut = first + piece
            for c in range(cut, first + max(1, piece // 2), -1):
                if starts[c] > ends[c - 1]:  # whitespace before this token: a word starts here
                    cut = c
                    break
            end = starts[cut]
            while end > begin and text[end - 1].isspace():
                end -= 1
            yield _Unit(begin, end, cut - first, boundary)
            boundary, begin, first = TOKEN, starts[cut], cut
        yield _Unit(begin, b, last - first, boundary)

    def _pack(self, units: list[_Unit], budget: int) -> list[tuple[int, int]]:
        """Greedy packing up to the budget, ending at the strongest break that keeps a chunk
        at least half full; the next chunk repeats trailing units worth up to ``overlap`` tokens."""
        if not units:
            return []
        totals = [0, *accumulate(u.tokens for u in units)]
        spans: list[tuple[int, int]] = []
        start, fresh, n = 0, 0, len(units)
        while True:
            end = start + 1
            while end < n and totals[end + 1] - totals[start] <= budget:
                end += 1
            if end < n:
                end = _best_break(units, totals, start, max(end, fresh + 1), fresh, budget // 2)
            spans.append((units[start].start, units[end - 1].end))
            if end >= n:
                return spans
            # Overlap: step back over trailing units, leaving room for the next new unit and
            # never back to this chunk's own start (so every chunk moves forward).
            room = min(self.overlap, budget - units[end].tokens)
            previous, start = start, end
            while start - 1 > previous and totals[end] - totals[start - 1] <= room:
                start -= 1
            fresh = end

    # -- context ------------------------------------------------------------------------------

    def _contexts(self, docs: Sequence[ParsedDocument]) -> dict[_ContextKey, _Context]:
        """Per (title, heading path): the possibly shortened title/path and its prefix token count.

        A prefix may take at most half the chunk, so a runaway title cannot starve the text. It is
        counted in pieces, and its whitespace shortened, as the text is, so that a title of one giant
        token, or of words megabytes of spaces apart, is bounded in characters.
        """
        keys = list(dict.fromkeys((doc.title, s.heading_path) for doc in docs for s in doc.sections))
        bounded = [(_bound_whitespace(title), tuple(map(_bound_whitespace, path))) for title, path in keys]
        counts = self._count_pieces([_prefix(title, path) for title, path in bounded])
        limit = self.size // 2
        result = {}
        for key, (title, path), tokens in zip(keys, bounded, counts):
            if tokens > limit:
                title, path, tokens = self._shorten(title, path, limit)
            result[key] = (title, path, tokens)
        return result

    def _shorten(self, title: str, path: tuple[str, ...], limit: int) -> tuple[str, tuple[str, ...], int]:
        parts = [title, *path]
        cap = max(1, limit // max(1, sum(1 for p in parts if p)))
        while True:
            cut = self._truncate(parts, cap)
            tokens = self._count_pieces([_prefix(cut[0], tuple(cut[1:]))])[0]
            if tokens <= limit:
                return cut[0], tuple(cut[1:]), tokens
            if cap == 1:
                break
            cap = max(1, cap // 2)
        # Even one token per part is too much (very deep paths): keep the innermost heading only.
        last = self._truncate([path[-1]], cap)[0] if path else self._truncate([title], cap)[0]
        tokens = self._count_pieces([_prefix("", (last,))])[0]
        return ("", (last,), tokens) if tokens <= limit else ("", (), 0)

    def _truncate(self, parts: list[str], cap: int) -> list[str]:
        """Each part cut to its first ``cap`` pieces (equal parts stay equal, so dedup still works)."""
        return [
            part if len(ends) <= cap else part[: ends[cap - 1]].rstrip()
            for part, ends in zip(parts, self._piece_ends(parts))
        ]

    def _count_pieces(self, texts: list[str]) -> list[int]:
        """Tokens per text, one giant token counted as its pieces of ``MAX_TOKEN_CHARS`` (see ``_pieces``)."""
        return [len(ends) for ends in self._piece_ends(texts)]

    def _piece_ends(self, texts: list[str]) -> list[list[int]]:
        """Where each piece of each text ends: a token, or a cut of one spanning many characters."""
        ends: list[list[int]] = []
        for first in range(0, len(texts), _TOKENIZE_BATCH):
            encoded = self._encode(texts[first : first + _TOKENIZE_BATCH], offsets=True)["offset_mapping"]
            ends.extend(_pieces([s for s, _ in offsets], [e for _, e in offsets])[1] for offsets in encoded)
        return ends

    def _encode(self, texts: list[str], *, offsets: bool) -> Any:
        return self.tokenizer(
            texts,
            add_special_tokens=False,
            return_offsets_mapping=offsets,
            return_attention_mask=False,
            return_token_type_ids=False,
            truncation=False,
            verbose=False,  # no "sequence longer than the model maximum" log: we cut it ourselves
        )


def _pieces(starts: list[int], ends: list[int]) -> tuple[list[int], list[int]]:
    """The token spans, each over ``MAX_TOKEN_CHARS`` characters cut into pieces of that many, each then
    counted as a token: chunks stay bounded in characters as well as in tokens."""
    if all(end - start <= MAX_TOKEN_CHARS for start, end in zip(starts, ends)):
        return starts, ends  # the common case: every token a word or a piece of one
    piece_starts: list[int] = []
    piece_ends: list[int] = []
    for start, end in zip(starts, ends):
        cuts = list(range(start, end, MAX_TOKEN_CHARS)) if end - start > MAX_TOKEN_CHARS else [start]
        piece_starts.extend(cuts)
        piece_ends.extend([*cuts[1:], end])
    return piece_starts, piece_ends


def _bound_whitespace(text: str) -> str:
    """``text`` with each whitespace run over ``MAX_TOKEN_CHARS`` characters shortened to that many: no token
    covers whitespace, so counting tokens bounded a chunk in characters only with runs bounded too."""
    return _LONG_WHITESPACE.sub(_shortened_run, text)


def _shortened_run(match: re.Match[str]) -> str:
    """A long whitespace run as its line breaks (two at most: a paragraph break stays one) and the end of
    the indentation of the line it ends on: up to ``MAX_INDENT_CHARS`` characters after a break, and
    ``MAX_TOKEN_CHARS`` in all for a run inside a line."""
    run = match.group()
    breaks = "\n" * min(2, run.count("\n"))
    indentation = run[run.rfind("\n") + 1:]  # all of it when the run holds no line break
    return breaks + indentation[-(MAX_INDENT_CHARS if breaks else MAX_TOKEN_CHARS):]


def _best_break(units: list[_Unit], totals: list[int], start: int, end: int, fresh: int,
                min_fill: int) -> int:
    """The chunk end in (start, end] with the strongest break, latest first, among ends that keep
    the chunk at least ``min_fill`` tokens and add text the previous chunk did not have."""
    best, best_strength = end, units[end].boundary if end < len(units) else PARAGRAPH
    for e in range(end - 1, max(start, fresh), -1):
        if totals[e] - totals[start] < min_fill:
            break
        if units[e].boundary < best_strength:
            best, best_strength = e, units[e].boundary
    return best


def _split(text: str, a: int, b: int, pattern: re.Pattern[str], group: int = 0) -> list[tuple[int, int]]:
    """Non-blank spans of text[a:b] between the separators ``pattern`` matches, whitespace trimmed."""
    spans, pos = [], a
    for match in pattern.finditer(text, a, b):
        spans.append(_trim(text, pos, match.start(group)))
        pos = match.end(group)
    spans.append(_trim(text, pos, b))
    return [(s, e) for s, e in spans if e > s]


def _trim(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def _prefix(title: str, heading_path: tuple[str, ...]) -> str:
    """Exactly what Chunk.embedding_input puts before the text ('' when there is no context)."""
    probe = Chunk(id="", doc_id="", source_uri="", ordinal=0, text="", title=title, heading_path=heading_path)
    return probe.embedding_input()


def _special_tokens(tokenizer: Any) -> int:
    try:
        return int(tokenizer.num_special_tokens_to_add(pair=False))
    except Exception:  # not a Hugging Face tokenizer: assume [CLS] ... [SEP]
        return 2


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)
