"""Sentence spans of a passage, cut where the chunker cuts, so a quote is always a slice of the text."""

from __future__ import annotations

import re

# The chunker's own paragraph and sentence boundaries: a chunk and its quoted sentences agree.
from unirank.ingest.chunking import _PARAGRAPH, _SENTENCE, _split

_WHITESPACE = re.compile(r"\s+")
#: Shorter spans ("Yes.", "Free.") say nothing on their own; they are quoted only with a neighbour.
MIN_SENTENCE_CHARS = 12


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of each sentence in ``text``: paragraphs first, then sentence ends."""
    spans: list[tuple[int, int]] = []
    for a, b in _split(text, 0, len(text), _PARAGRAPH):
        spans.extend(_split(text, a, b, _SENTENCE, group=1))
    return spans


def squash(text: str) -> str:
    """One line: wrapped source lines read as one sentence in an answer."""
    return _WHITESPACE.sub(" ", text).strip()


def contains(passage: str, quote: str) -> bool:
    """Whether ``quote`` is in ``passage`` word for word (line wrapping aside)."""
    return squash(quote) in squash(passage)
