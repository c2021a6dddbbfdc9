"""BEIR-style corpora: one JSON object per line, each line its own document.

A bad line fails the whole file: half a corpus in the index is worse than a clear error.
"""

from __future__ import annotations

import json
from typing import Any

from unirank.errors import ParseError
from unirank.ingest.documents import ParsedDocument, Section
from unirank.ingest.parsers.common import decode_text, metadata_value
from unirank.jsonl import parse_object_line
from unirank.search.types import Metadata
from unirank.text import is_blank

_RESERVED = ("_id", "title", "text")


class JsonlParser:
    extensions: tuple[str, ...] = (".jsonl",)

    def parse(self, data: bytes, uri: str) -> list[ParsedDocument]:
        docs: list[ParsedDocument] = []
        seen: dict[str, int] = {}
        blank: list[int] = []  # lines of records with neither text nor title
        # Only "\n" ends a record: splitlines() also split at U+2028, U+2029 and U+0085, which JSON
        # allows raw inside a string, and failed the file at the record's first half.
        for number, line in enumerate(decode_text(data).split("\n"), start=1):
            if not line.strip():
                continue
            doc = _record(line.rstrip(), number)  # a Windows "\r" and other spaces after the object
            if doc.doc_id in seen:
                first = seen[doc.doc_id]
                raise ParseError(f"line {number}: duplicate _id {doc.doc_id!r} (first on line {first})")
            seen[doc.doc_id] = number
            if not is_blank(doc.sections[0].text):
                docs.append(doc)
            else:
                blank.append(number)
        if blank and docs:  # none: the file has no text, and fails saying so
            docs[0].warnings.append(_left_out(blank))
        return docs


def _left_out(lines: list[int], most: int = 10) -> str:
    """The records left out for having no text, said in the ingest report: they were dropped unsaid."""
    shown = ", ".join(str(n) for n in lines[:most]) + (f" and {len(lines) - most} more" if len(lines) > most else "")
    records = "1 record" if len(lines) == 1 else f"{len(lines)} records"
    return f"{records} with neither text nor title left out (line{'s' if len(lines) > 1 else ''} {shown})"


def _doc_id(raw: Any, number: int) -> str:
    """The record's id as text: a string, or an integer as written. Anything else was stored as its Python
    repr ("{'a': 1}", "True"), and 1e2 as "100.0", which no qrels id "100" matched."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        shown = json.dumps(raw, ensure_ascii=False)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ParseError(f"line {number}: _id must be a string or an integer, got {shown}; write the id as "
                         "a JSON string")
    return str(raw).strip()


def _record(line: str, number: int) -> ParsedDocument:
    try:
        record = parse_object_line(line, ("_id", "text"))
    except ValueError as exc:
        raise ParseError(f"line {number}: {exc}") from None
    doc_id, text = _doc_id(record["_id"], number), record["text"]
    if not doc_id:
        raise ParseError(f"line {number}: empty _id")
    if not isinstance(text, str):
        raise ParseError(f"line {number}: field text must be a string, got {type(text).__name__}")
    title = record.get("title")
    title = title if isinstance(title, str) else ""
    kept = {key: metadata_value(value) for key, value in record.items() if key not in _RESERVED}
    metadata: Metadata = {key: value for key, value in kept.items() if value is not None}
    # Some BEIR records carry only a title; index the title rather than drop the record.
    body = title if is_blank(text) else text  # a zero-width space is no more text than a space
    return ParsedDocument(doc_id=doc_id, title=title, sections=[Section(body)], metadata=metadata)
