"""Choosing a parser by file extension, and the rules every parsed document obeys.

`parse_document` is the one entry point for ingestion: it refuses empty and binary input,
turns any library failure into a ParseError (so one bad file never stops a run), and
normalises whitespace so chunking and BM25 see clean text.
"""

from __future__ import annotations

from dataclasses import replace

from unirank.errors import ParseError, UnsupportedFormatError
from unirank.ingest.documents import ParsedDocument, Parser
from unirank.ingest.parsers.common import (
    collapse,
    decode_text,
    extension_of,
    normalize_whitespace,
    stem_from_uri,
    without_lone_surrogates,
)
from unirank.ingest.parsers.docx import DocxParser
from unirank.ingest.parsers.html import HtmlParser
from unirank.ingest.parsers.jsonl import JsonlParser
from unirank.ingest.parsers.markdown import MarkdownParser
from unirank.ingest.parsers.pdf import PdfParser
from unirank.ingest.parsers.text import TextParser
from unirank.text import is_blank

PARSERS: tuple[Parser, ...] = (
    PdfParser(),
    DocxParser(),
    HtmlParser(),
    MarkdownParser(),
    TextParser(),
    JsonlParser(),
)
#: Raised when a change to the parsers (or to how their text is cut into chunks) changes what a file
#: yields: ingesting again then re-reads files parsed by the older ones (``SourceState.recipe``), instead
#: of keeping their old text for good. 7: long whitespace runs shortened in chunks, titles and headings.
#: 8: code indentation, ordered list numbers, HTML captions and alt text, DOCX content controls and
#: heading styles, PDF placeholder titles, number titles in JSONL, sentence ends in every cased script.
#: 9: code keeps deep indentation and its inner spaces, less the indentation all its lines share; lists
#: from 0; Russian and Polish abbreviations end no sentence.
PARSER_VERSION = 9
_BY_EXTENSION: dict[str, Parser] = {ext: parser for parser in PARSERS for ext in parser.extensions}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_BY_EXTENSION)
#: Formats that must be text: a NUL byte or undecodable bytes mean a mislabelled binary file.
TEXT_EXTENSIONS: frozenset[str] = frozenset(
    ext for parser in PARSERS if isinstance(parser, (TextParser, MarkdownParser, HtmlParser, JsonlParser))
    for ext in parser.extensions
)

__all__ = [
    "PARSERS",
    "PARSER_VERSION",
    "SUPPORTED_EXTENSIONS",
    "TEXT_EXTENSIONS",
    "parse_document",
    "parser_for",
]


def parser_for(uri: str) -> Parser:
    ext = extension_of(uri)
    try:
        return _BY_EXTENSION[ext]
    except KeyError:
        shown = f"'{ext}'" if ext else "(no extension)"
        raise UnsupportedFormatError(
            f"{stem_from_uri(uri)}{ext}: unsupported file type {shown}; "
            f"supported: {', '.join(sorted(SUPPORTED_EXTENSIONS))}"
        ) from None


def parse_document(data: bytes, uri: str, *, legacy_encoding: str = "cp1252") -> list[ParsedDocument]:
    """Parse one file's bytes into documents with normalised, non-empty sections; text that is not UTF-8
    is decoded as ``decode_text`` says."""
    parser = parser_for(uri)
    if not data or not data.strip():
        raise ParseError("empty file")
    try:
        if extension_of(uri) in TEXT_EXTENSIONS:
            data = _as_utf8(data, parser, legacy_encoding)
        parsed = parser.parse(data, uri)
    except ParseError:
        raise
    except Exception as exc:  # a library bug or an input it chokes on: report, don't crash the run
        raise ParseError(f"cannot parse: {type(exc).__name__}: {exc}") from exc
    fallback = _title_fallback(parser, uri)
    documents = [doc for doc in (_clean(doc, fallback) for doc in parsed) if doc.sections]
    if not documents:  # a warning of text left out (nested too deep) says why there is none
        said = "; ".join([warning for doc in parsed for warning in doc.warnings][:3])  # not a PDF's every page
        raise ParseError(f"no text found{f': {said}' if said else ''}")
    return documents


def _title_fallback(parser: Parser, uri: str) -> str:
    """A file's name titles the one document it holds, not each record of a collection (JSONL): there it
    went before every record's text, so every record matched it (``corpus`` for corpus.jsonl)."""
    return "" if isinstance(parser, JsonlParser) else stem_from_uri(uri)


def _as_utf8(data: bytes, parser: Parser, legacy_encoding: str) -> bytes:
    """The text re-encoded as UTF-8, so the parser decodes UTF-8 only and the encoding is detected once.
    Raises "binary content, not text"."""
    declared = parser.declared_encoding(data) if isinstance(parser, HtmlParser) else None
    return decode_text(data, legacy_encoding, declared=declared).encode("utf-8")


def _clean(doc: ParsedDocument, title_fallback: str) -> ParsedDocument:
    """Whitespace normalised, and no lone surrogate left anywhere (a JSON or YAML escape): one in a
    text stopped the tokenizer, and with it the whole run. Text of only invisible characters (a
    zero-width space passes str.strip) is none: the model would embed an empty string."""
    sections = []
    for section in doc.sections:
        text = normalize_whitespace(without_lone_surrogates(section.text))
        if not is_blank(text):
            path = tuple(h for h in (collapse(without_lone_surrogates(h)) for h in section.heading_path)
                         if not is_blank(h))
            sections.append(replace(section, text=text, heading_path=path))
    title = collapse(without_lone_surrogates(doc.title))
    title = title_fallback if is_blank(title) else title
    metadata = {without_lone_surrogates(key): value for key, value in doc.metadata.items()}
    return replace(doc, doc_id=without_lone_surrogates(doc.doc_id), title=title, sections=sections,
                   metadata=metadata)
