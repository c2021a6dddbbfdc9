"""Plain text: one section, paragraphs kept, encoding detected when it is not UTF-8."""

from __future__ import annotations

from unirank.ingest.documents import ParsedDocument, Section
from unirank.ingest.parsers.common import decode_text, stem_from_uri


class TextParser:
    extensions: tuple[str, ...] = (".txt", ".text")

    def parse(self, data: bytes, uri: str) -> list[ParsedDocument]:
        text = decode_text(data)
        return [ParsedDocument(doc_id=uri, title=stem_from_uri(uri), sections=[Section(text)])]
