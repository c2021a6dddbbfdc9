"""Sentence spans of a passage, cut where the chunker cuts, so a quote is always a slice of the text."""

from __future__ import annotations

import re

# The chunker's own paragraph and sentence boundaries: a chunk and its quoted sentences agree.
from unirank.ingest.chunking import _PARAGRAPH, _SENTENCE, _split

_WHITESPACE = re.compile(r"\s+")
_LINES = re.compile(r"\n")
#: A markdown table's rule line ("|---|:--:|"): no cell of its own.
_TABLE_RULE = re.compile(r"^[\s|:\-+]+$")
#: Shorter spans ("Yes.", "Free.") say nothing on their own; they are quoted only with a neighbour.
MIN_SENTENCE_CHARS = 12


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of each sentence in ``text``: paragraphs first, then sentence ends; a table
    (a paragraph whose lines all hold a "|") has no sentence ends, so each of its rows is one."""
    spans: list[tuple[int, int]] = []
    for a, b in _split(text, 0, len(text), _PARAGRAPH):
        rows = _table_rows(text, a, b)
        spans.extend(rows or _split(text, a, b, _SENTENCE, group=1))
    return spans


def table_headers(text: str) -> dict[tuple[int, int], tuple[int, int]]:
    """Each row of a table in ``text`` -> its table's header row (the first; the header maps to itself).
    A row is quoted with its header: "Support tickets | 3 years" alone does not say what 3 years is."""
    headers: dict[tuple[int, int], tuple[int, int]] = {}
    for a, b in _split(text, 0, len(text), _PARAGRAPH):
        rows = _table_rows(text, a, b)
        for row in rows:
            headers[row] = rows[0]
    return headers


def table_cells(text: str) -> list[str]:
    """The cells of one table row ("| a | b |" -> ["a", "b"])."""
    return [cell.strip() for cell in text.strip().strip("|").split("|")]


def _table_rows(text: str, a: int, b: int) -> list[tuple[int, int]]:
    """The rows of the paragraph ``text[a:b]`` when it is a table (two lines or more, each with a "|"),
    less its rule line; otherwise none."""
    lines = _split(text, a, b, _LINES)
    if len(lines) < 2 or not all("|" in text[s:e] for s, e in lines):
        return []
    return [(s, e) for s, e in lines if not _TABLE_RULE.match(text[s:e])]


def squash(text: str) -> str:
    """One line: wrapped source lines read as one sentence in an answer."""
    return _WHITESPACE.sub(" ", text).strip()


def contains(passage: str, quote: str) -> bool:
    """Whether ``quote`` is in ``passage`` word for word (line wrapping aside)."""
    return squash(quote) in squash(passage)
