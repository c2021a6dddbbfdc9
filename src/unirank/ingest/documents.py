"""What a parser hands to the chunker: a document as titled, located sections of text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from unirank.search.types import Metadata


@dataclass(frozen=True)
class Section:
    """A run of text under one heading path, on one page where the format has pages."""

    text: str
    heading_path: tuple[str, ...] = ()
    page: int | None = None


@dataclass
class ParsedDocument:
    #: Unique within an index: the source URI for a file, the record's ``_id`` for JSONL.
    doc_id: str
    title: str
    sections: list[Section]
    metadata: Metadata = field(default_factory=dict)
    #: What the parser left out and why (a PDF page it could not read): said in the ingest report.
    warnings: list[str] = field(default_factory=list)


class Parser(Protocol):
    """Turns one file's bytes into documents. Raises :class:`unirank.errors.ParseError` on bad input."""

    #: Lower-case file extensions this parser reads, with the dot (".pdf").
    extensions: tuple[str, ...]

    def parse(self, data: bytes, uri: str) -> list[ParsedDocument]: ...
