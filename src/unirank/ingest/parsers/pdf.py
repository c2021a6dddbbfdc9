"""PDF via pypdf: one section per page, so hits can cite the page they came from."""

from __future__ import annotations

import io
import logging
import math
import re
import warnings
from collections import Counter, defaultdict
from contextlib import contextmanager
from typing import Iterator

from unirank.errors import ParseError
from unirank.ingest.documents import ParsedDocument, Section
from unirank.ingest.parsers.common import collapse, stem_from_uri

NO_TEXT = "no extractable text; scanned PDFs need OCR, which unirank does not do"


@contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """pypdf logs a warning for every small spec deviation; real-world PDFs are full of them."""
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


class PdfParser:
    extensions: tuple[str, ...] = (".pdf",)

    def parse(self, data: bytes, uri: str) -> list[ParsedDocument]:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError

        with _quiet_pypdf():
            try:
                reader = PdfReader(io.BytesIO(data))
                if reader.is_encrypted:
                    _decrypt(reader)
                texts = [page.extract_text() or "" for page in reader.pages]
            except ParseError:
                raise
            except PyPdfError as exc:
                raise ParseError(f"not a readable PDF (corrupt or truncated): {exc}") from exc
            except Exception as exc:  # pypdf raises plain ValueError/KeyError/... on broken files too
                raise ParseError(f"not a readable PDF: {type(exc).__name__}: {exc}") from exc
            title = _metadata_title(reader)
        if not any(text.strip() for text in texts):
            raise ParseError(NO_TEXT)
        texts = [joined_hyphenation(text) for text in without_running_lines(texts)]
        sections = [Section(text, page=number) for number, text in enumerate(texts, start=1)]
        return [ParsedDocument(doc_id=uri, title=title or stem_from_uri(uri), sections=sections)]


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


def without_running_lines(pages: list[str]) -> list[str]:
    """Each page without the header and footer lines it shares with the others ("Acme Corp - Confidential",
    "Page 3 of 12"): repeated on every page, they would be a sentence of every chunk, matched by BM25
    and weighed into every embedding. Only lines at a page's edges count, so the body is never cut; a
    line that differs from page to page only in its numbers is a running line when one of them counts
    up with the pages (a page number), not when they merely differ ("Total: 36 items")."""
    split = [text.split("\n") for text in pages]
    edges = [_edge_lines(lines) for lines in split]
    exact: Counter[str] = Counter()
    numbered: dict[str, dict[int, list[int]]] = defaultdict(dict)  # shape -> page -> the line's numbers
    for page, lines in enumerate(split):
        exact.update({_words(lines[i]) for i in edges[page]})
        for i in edges[page]:
            numbered[_shape(lines[i])].setdefault(page, [int(n) for n in _NUMBER.findall(lines[i])])
    needed = max(MIN_RUNNING_PAGES, math.ceil(RUNNING_SHARE * len(pages)))
    repeated = {line for line, n in exact.items() if n >= needed}
    counters = {shape for shape, seen in numbered.items() if len(seen) >= needed and _counts_pages(seen)}
    if not repeated and not counters:
        return pages
    out = []
    for page, lines in enumerate(split):
        drop = {i for i in edges[page]
                if _words(lines[i]) in repeated or _shape(lines[i]) in counters}
        out.append("\n".join(line for i, line in enumerate(lines) if i not in drop))
    return out


def _words(line: str) -> str:
    return " ".join(line.split()).lower()


def _shape(line: str) -> str:
    """The line with its numbers masked: "page # of #"."""
    return _NUMBER.sub("#", _words(line))


def _edge_lines(lines: list[str]) -> list[int]:
    filled = [i for i, line in enumerate(lines) if line.strip()]
    return sorted(set(filled[:EDGE_LINES] + filled[-EDGE_LINES:]))


def _counts_pages(numbers_by_page: dict[int, list[int]]) -> bool:
    """One of the line's numbers rises with every page it is on: it counts pages."""
    rows = [numbers_by_page[page] for page in sorted(numbers_by_page)]
    if not rows[0] or any(len(row) != len(rows[0]) for row in rows):
        return False
    return any(all(b[j] > a[j] for a, b in zip(rows, rows[1:])) for j in range(len(rows[0])))


def _decrypt(reader: object) -> None:
    """Many 'encrypted' PDFs only restrict printing and open with an empty user password."""
    try:
        opened = reader.decrypt("")  # type: ignore[attr-defined]
    except Exception as exc:  # e.g. AES without the optional cryptography package
        raise ParseError(f"the PDF is encrypted and cannot be decrypted here: {exc}") from exc
    if not opened:
        raise ParseError("the PDF is encrypted and needs a password; decrypt it first")


def _metadata_title(reader: object) -> str:
    try:
        title = reader.metadata.title if reader.metadata else None  # type: ignore[attr-defined]
    except Exception:  # a broken info dictionary should not cost us the text
        return ""
    return collapse(str(title)) if title else ""
