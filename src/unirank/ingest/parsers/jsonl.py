"""BEIR-style corpora: one JSON object per line, each line its own document.

A bad line fails the whole file: half a corpus in the index is worse than a clear error.
"""

from __future__ import annotations

import math

from unirank.errors import ParseError
from unirank.ingest.documents import ParsedDocument, Section
from unirank.ingest.parsers.common import NON_FINITE, decode_text, is_non_finite, metadata_value
from unirank.jsonl import parse_object_line, record_id
from unirank.search.types import Metadata
from unirank.text import is_blank

_RESERVED = ("_id", "title", "text")
_NOT_TEXT_TITLE = "a title is text or a finite number; write it as a JSON string to keep it"


class JsonlParser:
    extensions: tuple[str, ...] = (".jsonl",)

    def parse(self, data: bytes, uri: str) -> list[ParsedDocument]:
        docs: list[ParsedDocument] = []
        seen: dict[str, int] = {}
        blank: list[int] = []  # lines of records with neither text nor title
        non_finite: dict[str, list[int]] = {}  # lines of each field left out as NaN or infinite
        untitled: list[int] = []  # lines of records whose title was left out for not being text
        # Only "\n" ends a record: splitlines() also split at U+2028, U+2029 and U+0085, which JSON
        # allows raw inside a string, and failed the file at the record's first half.
        for number, line in enumerate(decode_text(data).split("\n"), start=1):
            if not line.strip():
                continue
            # rstrip: a Windows "\r" and other spaces after the object
            doc, dropped, title_dropped = _record(line.rstrip(), number)
            for key in dropped:
                non_finite.setdefault(key, []).append(number)
            if title_dropped:
                untitled.append(number)
            if doc.doc_id in seen:
                first = seen[doc.doc_id]
                raise ParseError(f"line {number}: duplicate _id {doc.doc_id!r} (first on line {first})")
            seen[doc.doc_id] = number
            if not is_blank(doc.sections[0].text):
                docs.append(doc)
            else:
                blank.append(number)
        if blank and docs:  # none: the file has no text, and fails saying so
            docs[0].warnings.append(f"{_records(blank)} with neither text nor title left out ({_lines(blank)})")
        if docs:
            docs[0].warnings.extend(f"field {key} left out of {_records(lines)} ({_lines(lines)}): {NON_FINITE}"
                                    for key, lines in non_finite.items())
            if untitled:
                docs[0].warnings.append(f"field title left out of {_records(untitled)} ({_lines(untitled)}): "
                                        f"{_NOT_TEXT_TITLE}")
        return docs


def _records(lines: list[int]) -> str:
    return "1 record" if len(lines) == 1 else f"{len(lines)} records"


def _lines(lines: list[int], most: int = 10) -> str:
    """The lines of records a warning of the ingest report is about, the first ``most`` of them."""
    shown = ", ".join(str(n) for n in lines[:most]) + (f" and {len(lines) - most} more" if len(lines) > most else "")
    return f"line{'s' if len(lines) > 1 else ''} {shown}"


def _record(line: str, number: int) -> tuple[ParsedDocument, list[str], bool]:
    """The record's document, the fields left out of its metadata for being NaN or infinite, and whether
    its title was left out for not being text."""
    try:
        record = parse_object_line(line, ("_id", "text"))
    except ValueError as exc:
        raise ParseError(f"line {number}: {exc}") from None
    try:
        doc_id = record_id(record["_id"])
    except ValueError as exc:
        raise ParseError(f"line {number}: {exc}") from None
    text = record["text"]
    if not doc_id:
        raise ParseError(f"line {number}: empty _id")
    if not isinstance(text, str):
        raise ParseError(f"line {number}: field text must be a string, got {type(text).__name__}")
    title = _title(record.get("title"))
    title_dropped = title is None
    title = title or ""
    fields = {key: value for key, value in record.items() if key not in _RESERVED}
    kept = {key: metadata_value(value) for key, value in fields.items()}
    metadata: Metadata = {key: value for key, value in kept.items() if value is not None}
    # Some BEIR records carry only a title; index the title rather than drop the record.
    body = title if is_blank(text) else text  # a zero-width space is no more text than a space
    doc = ParsedDocument(doc_id=doc_id, title=title, sections=[Section(body)], metadata=metadata)
    return doc, [key for key, value in fields.items() if is_non_finite(value)], title_dropped


def _title(raw: object) -> str | None:
    """A record's title as text: a string, or a number as written (a year, a product number: it was
    dropped without a word); "" for none or null; None for anything else, which is left out and said."""
    if raw is None or isinstance(raw, str):
        return raw or ""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw):
        return str(raw)
    return None
