"""PDF via pypdf: one section per page, so hits can cite the page they came from."""

from __future__ import annotations

import io
import logging
import math
import re
import threading
import warnings
from collections import Counter, defaultdict
from contextlib import contextmanager
from typing import Callable, Iterator

from unirank.errors import ParseError
from unirank.ingest.documents import ParsedDocument, Section
from unirank.ingest.parsers.common import collapse, stem_from_uri

NO_TEXT = "no extractable text; scanned PDFs need OCR, which unirank does not do"


class _PypdfLog(logging.Handler):
    """What pypdf logs at WARNING or above on this thread while a PDF is read, kept instead of printed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread:
            self.records.append(record)


@contextmanager
def _quiet_pypdf() -> Iterator[_PypdfLog]:
    """pypdf logs a warning for every small spec deviation; real-world PDFs are full of them. They are
    kept, not printed, so a page whose text could not be read can be named; its errors pass on as
    before once the PDF is read."""
    logger = logging.getLogger("pypdf")
    level, propagate = logger.level, logger.propagate
    kept = _PypdfLog()
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    logger.addHandler(kept)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield kept
    finally:
        logger.removeHandler(kept)
        logger.setLevel(level)
        logger.propagate = propagate
        for record in kept.records:
            if record.levelno >= logging.ERROR:
                logging.getLogger(record.name).handle(record)


class PdfParser:
    extensions: tuple[str, ...] = (".pdf",)

    def parse(self, data: bytes, uri: str) -> list[ParsedDocument]:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError

        with _quiet_pypdf() as pypdf_log:
            try:
                reader = PdfReader(io.BytesIO(data))
                if reader.is_encrypted:
                    _decrypt(reader)
                texts, unread = _page_texts(reader, pypdf_log)
            except ParseError:
                raise
            except PyPdfError as exc:
                raise ParseError(f"not a readable PDF (corrupt or truncated): {exc}") from exc
            except Exception as exc:  # pypdf raises plain ValueError/KeyError/... on broken files too
                raise ParseError(f"not a readable PDF: {type(exc).__name__}: {exc}") from exc
            title = _metadata_title(reader)
        if not any(text.strip() for text in texts):
            if unread and len(unread) == len(texts):
                more = f" (and {len(unread) - 1} more pages)" if len(unread) > 1 else ""
                raise ParseError(f"damaged PDF: {unread[0]}{more}")
            raise ParseError(NO_TEXT)
        texts = [joined_hyphenation(text) for text in without_running_lines(texts)]
        sections = [Section(text, page=number) for number, text in enumerate(texts, start=1)]
        return [ParsedDocument(doc_id=uri, title=title or stem_from_uri(uri), sections=sections,
                               warnings=unread)]  # those pages are left out, and the report says so


def _page_texts(reader: object, pypdf_log: _PypdfLog) -> tuple[list[str], list[str]]:
    """Each page's text, and a note for each page whose text could not be read: that page is left out
    (its text is ""), not the whole PDF, which one page pypdf choked on used to fail."""
    texts, unread = [], []
    for number, page in enumerate(reader.pages, start=1):  # type: ignore[attr-defined]
        logged = len(pypdf_log.records)
        try:
            texts.append(page.extract_text() or "")
        except Exception as exc:  # a broken content stream: pypdf raises ValueError, KeyError, PdfReadError...
            texts.append("")
            unread.append(f"page {number}: no text could be read ({type(exc).__name__}: {exc})")
            continue
        if not texts[-1].strip() and len(pypdf_log.records) > logged:  # e.g. a stream that does not inflate
            why = pypdf_log.records[logged].getMessage()
            unread.append(f"page {number}: no text could be read ({why})")
    return texts, unread


#: A word the typesetter broke across two lines: a lower-case letter, a hyphen ending the line, a lower-case letter.
_LINE_BREAK_HYPHEN = re.compile(r"(?<=[a-z])-\n(?=[a-z])")


def joined_hyphenation(text: str) -> str:
    """A word broken at a line end ("rota-" then "tion") is one word again, so BM25 and the tokenizer
    see "rotation", not two halves of it.

    As PyMuPDF's dehyphenation does, every such break is joined: hyphenated text breaks words far more
    often than it breaks a compound at its own hyphen ("short-lived" at a line end becomes
    "shortlived"). Numbers ("2019-2020") and capitals ("EU-US") keep their hyphen and line break.
    """
    return _LINE_BREAK_HYPHEN.sub("", text)


#: Lines at each end of a page where running headers and footers sit.
EDGE_LINES = 2
#: A line is a running header or footer when it recurs at a page edge on at least this share of the pages
#: (and on at least MIN_RUNNING_PAGES of them).
RUNNING_SHARE = 0.5
MIN_RUNNING_PAGES = 3
_NUMBER = re.compile(r"\d+")
#: What a page number looks like: bare ("7", "- 7 -", "[7]"), counted ("7 / 12", "7 of 12") or labelled
#: ("Page 7", "p. 7 of 12", anywhere in the line: "Acme Corp | Page 7"). The group is the page's number.
_PAGE_NUMBER = (
    re.compile(r"^[\W_]*(\d+)(?:\s*(?:/|of)\s*\d+)?[\W_]*$"),
    re.compile(r"\b(?:page|pg|p|seite|p[aá]gina)\.?:?\s*(\d+)(?:\s*(?:/|of)\s*\d+)?\b"),
)


def without_running_lines(pages: list[str]) -> list[str]:
    """Each page without the header and footer lines it shares with the others ("Acme Corp - Confidential",
    "Page 3 of 12"): repeated on every page, they would be a sentence of every chunk, matched by BM25
    and weighed into every embedding.

    Only lines at a page's very edge count, and a page keeps some body beyond its edges, so short pages
    (an invoice a page) are not mistaken for all header. A line that differs from page to page is a page
    number only when it looks like one and counts up by one with the pages ("- 7 -", "Page 7 of 12"),
    not when it merely rises ("Invoice number 1017"). A page that would lose most of its lines keeps them
    all: a header left on a short page costs less than its body lost."""
    split = [text.split("\n") for text in pages]
    edges = [_edge_lines(lines) for lines in split]
    exact: Counter[str] = Counter()
    numbered: dict[str, dict[int, int]] = defaultdict(dict)  # shape -> page -> the page number on it
    for page, lines in enumerate(split):
        at_edges = [i for side in edges[page] for i in side]
        exact.update({_words(lines[i]) for i in at_edges})
        for i in at_edges:
            number = _page_number(lines[i])
            if number is not None:
                numbered[_shape(lines[i])].setdefault(page, number)
    needed = max(MIN_RUNNING_PAGES, math.ceil(RUNNING_SHARE * len(pages)))
    repeated = {line for line, n in exact.items() if n >= needed}
    counters = {shape for shape, seen in numbered.items() if len(seen) >= needed and _counts_pages(seen)}
    if not repeated and not counters:
        return pages

    def running(line: str) -> bool:
        return _words(line) in repeated or _shape(line) in counters

    return [_without(lines, _running_edges(lines, edges[page], running)) for page, lines in enumerate(split)]


def _words(line: str) -> str:
    return " ".join(line.split()).lower()


def _shape(line: str) -> str:
    """The line with its numbers masked: "page # of #"."""
    return _NUMBER.sub("#", _words(line))


def _edge_lines(lines: list[str]) -> tuple[list[int], list[int]]:
    """Up to EDGE_LINES filled lines at the top and at the bottom (each listed from the page's edge
    inwards), fewer on a short page so at least one line lies between them: a page of four lines has
    one header line and one footer line at most."""
    filled = [i for i, line in enumerate(lines) if line.strip()]
    depth = max(0, min(EDGE_LINES, (len(filled) - 1) // 2))
    return filled[:depth], filled[::-1][:depth]


def _running_edges(
    lines: list[str], edges: tuple[list[int], list[int]], running: Callable[[str], bool]
) -> set[int]:
    """The edge lines to drop: running ones from each edge inwards, stopping at the first that is not (a
    header sits at the edge, not below body text); none when that would be most of the page's lines."""
    drop: set[int] = set()
    for side in edges:
        for i in side:
            if not running(lines[i]):
                break
            drop.add(i)
    filled = sum(1 for line in lines if line.strip())
    return drop if 2 * len(drop) <= filled else set()


def _without(lines: list[str], drop: set[int]) -> str:
    return "\n".join(line for i, line in enumerate(lines) if i not in drop)


def _page_number(line: str) -> int | None:
    """The page number the line shows, when it looks like a page number at all."""
    words = _words(line)
    for pattern in _PAGE_NUMBER:
        match = pattern.search(words)
        if match:
            return int(match.group(1))
    return None


def _counts_pages(number_by_page: dict[int, int]) -> bool:
    """The number goes up by one from page to page, in step with the pages (it may start anywhere:
    an excerpt's first page may be page 41)."""
    return len({number - page for page, number in number_by_page.items()}) == 1


def _decrypt(reader: object) -> None:
    """Many 'encrypted' PDFs only restrict printing and open with an empty user password."""
    try:
        opened = reader.decrypt("")  # type: ignore[attr-defined]
    except Exception as exc:  # e.g. AES without the optional cryptography package
        raise ParseError(f"the PDF is encrypted and cannot be decrypted here: {exc}") from exc
    if not opened:
        raise ParseError("the PDF is encrypted and needs a password; decrypt it first")


def _metadata_title(reader: object) -> str:
    """The PDF's /Title, or "" when it has none or only a producer's placeholder (the file's stem names
    the document then)."""
    try:
        title = reader.metadata.title if reader.metadata else None  # type: ignore[attr-defined]
    except Exception:  # a broken info dictionary should not cost us the text
        return ""
    title = collapse(str(title)) if title else ""
    return "" if _PLACEHOLDER_TITLE.search(title) else title


#: What a producer writes as /Title when the author wrote none: Office's print driver "Microsoft Word -
#: draft_v3.docx", "untitled" ("Untitled document", "Untitled-1"), or a source file's name ("report.doc",
#: "C:\temp\notes.txt"). It went before every chunk's text and named every hit of the document.
_PLACEHOLDER_TITLE = re.compile(
    r"^microsoft (?:office )?(?:word|powerpoint|excel|publisher|visio) - "
    r"|^untitled(?:[ _-]*(?:document|presentation|spreadsheet|\d+))?$"
    r"|\S\.(?:docx?|docm|dotx?|pptx?|ppsx?|xlsx?|xlsm|rtf|odt|odp|ods|txt|md|tex|dvi|html?|pages|key|indd|pdf)$",
    re.IGNORECASE,
)
