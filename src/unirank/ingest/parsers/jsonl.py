"""BEIR-style corpora: one JSON object per line, each line its own document.

A bad line fails the whole file: half a corpus in the index is worse than a clear error.
"""

from __future__ import annotations

from unirank.errors import ParseError
from unirank.ingest.documents import ParsedDocument, Section
from unirank.ingest.parsers.common import decode_text, metadata_value
from unirank.jsonl import parse_object_line
from unirank.search.types import Metadata

_RESERVED = ("_id", "title", "text")


class JsonlParser:
    extensions: tuple[str, ...] = (".jsonl",)

    def parse(self, data: bytes, uri: str) -> list[ParsedDocument]:
        docs: list[ParsedDocument] = []
        seen: dict[str, int] = {}
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
            docs.append(doc)
        return docs


def _record(line: str, number: int) -> ParsedDocument:
    try:
        record = parse_object_line(line, ("_id", "text"))
    except ValueError as exc:
        raise ParseError(f"line {number}: {exc}") from None
    doc_id, text = str(record["_id"]).strip(), record["text"]
    if not doc_id:
        raise ParseError(f"line {number}: empty _id")
    if not isinstance(text, str):
        raise ParseError(f"line {number}: field text must be a string, got {type(text).__name__}")
    title = record.get("title")
    title = title if isinstance(title, str) else ""
    kept = {key: metadata_value(value) for key, value in record.items() if key not in _RESERVED}
    metadata: Metadata = {key: value for key, value in kept.items() if value is not None}
    # Some BEIR records carry only a title; index the title rather than drop the record.
    body = text if text.strip() else title
    return ParsedDocument(doc_id=doc_id, title=title, sections=[Section(body)], metadata=metadata)
