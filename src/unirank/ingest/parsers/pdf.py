"""PDF via pypdf: one section per page, so hits can cite the page they came from."""

from __future__ import annotations

import io
import logging
import warnings
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
        sections = [Section(text, page=number) for number, text in enumerate(texts, start=1)]
        return [ParsedDocument(doc_id=uri, title=title or stem_from_uri(uri), sections=sections)]


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
