"""Word documents via python-docx: heading styles give sections their heading paths."""

from __future__ import annotations

import io
import re
from typing import Any

from unirank.errors import ParseError
from unirank.ingest.documents import ParsedDocument
from unirank.ingest.parsers.common import SectionBuilder, collapse, stem_from_uri

_HEADING = re.compile(r"^heading ([1-9])$", re.IGNORECASE)


class DocxParser:
    extensions: tuple[str, ...] = (".docx",)

    def parse(self, data: bytes, uri: str) -> list[ParsedDocument]:
        import docx

        try:
            document = docx.Document(io.BytesIO(data))
        except Exception as exc:  # BadZipFile, PackageNotFoundError, KeyError on missing parts
            raise ParseError(
                f"not a readable .docx file (corrupt, or another format renamed): {exc}"
            ) from exc
        builder = SectionBuilder()
        for block in document.iter_inner_content():
            if hasattr(block, "rows"):
                builder.paragraph(_table_text(block))
                continue
            level = _heading_level(block)
            if level is None:
                builder.paragraph(block.text)
            else:
                builder.heading(level, block.text)
        sections = builder.finish()
        title = (
            collapse(document.core_properties.title or "")
            or builder.first_heading.get(0)
            or builder.first_heading.get(1)
            or stem_from_uri(uri)
        )
        return [ParsedDocument(doc_id=uri, title=title, sections=sections)]


def _heading_level(paragraph: Any) -> int | None:
    """0 for the Title style, n for "Heading n"; None for body text."""
    try:
        name = (paragraph.style.name or "") if paragraph.style is not None else ""
    except Exception:  # a style id that the styles part does not define
        return None
    if name.lower() == "title":
        return 0
    match = _HEADING.match(name)
    return int(match.group(1)) if match else None


def _table_text(table: Any) -> str:
    """One line per row, cells joined by ' | '; merged cells (repeated in python-docx) once."""
    lines = []
    for row in table.rows:
        cells: list[Any] = []
        for cell in row.cells:
            if not any(cell._tc is seen._tc for seen in cells):
                cells.append(cell)
        texts = [_cell_text(cell) for cell in cells]
        if any(texts):
            lines.append(" | ".join(texts))
    return "\n".join(lines)


def _cell_text(cell: Any) -> str:
    parts = []
    for block in cell.iter_inner_content():
        parts.append(_table_text(block) if hasattr(block, "rows") else collapse(block.text))
    return " ".join(part for part in parts if part)
