"""Word documents via python-docx: heading styles give sections their heading paths."""

from __future__ import annotations

import io
import re
from typing import Any, Iterator

from unirank.errors import ParseError
from unirank.ingest.documents import ParsedDocument
from unirank.ingest.parsers.common import SectionBuilder, collapse, stem_from_uri

_HEADING = re.compile(r"^heading ([1-9])$", re.IGNORECASE)
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_P, _TBL, _R, _SDT, _SDT_CONTENT, _CUSTOM_XML, _BR, _TEXT_BOX = (
    _W + tag for tag in ("p", "tbl", "r", "sdt", "sdtContent", "customXml", "br", "txbxContent")
)
_TR, _TC, _OUTLINE_LEVEL, _VAL = (_W + tag for tag in ("tr", "tc", "outlineLvl", "val"))
#: Word writes each text box twice: as a DrawingML shape, and in mc:Fallback as VML for old readers.
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
#: What python-docx reads as a run's text (CT_R.text).
_RUN_TEXT = "w:br | w:cr | w:noBreakHyphen | w:ptab | w:t | w:tab"
#: Inline wrappers whose runs are the paragraph's text: tracked insertions and moves (the text as it now
#: reads), links, content controls (their ``sdtPr`` holds no runs), simple fields (their shown result),
#: smart tags, custom XML, text direction. Runs in ``w:del`` and ``w:moveFrom`` (deleted or moved-away
#: text) are left out, as is everything else that is not a run (bookmarks, proofing marks).
_INLINE_WRAPPERS = frozenset(
    _W + tag
    for tag in ("ins", "moveTo", "hyperlink", "sdt", "sdtContent", "fldSimple", "smartTag", "customXml", "dir", "bdo")
)


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
        for block in _blocks(document.element.body, document):
            if hasattr(block, "rows"):
                builder.paragraph(_table_text(block))
                continue
            level = _heading_level(block)
            if level is None:
                builder.paragraph(_paragraph_text(block))
            else:
                builder.heading(level, _paragraph_text(block))
        sections = builder.finish()
        title = (
            collapse(document.core_properties.title or "")
            or builder.first_heading.get(0)
            or builder.first_heading.get(1)
            or stem_from_uri(uri)
        )
        return [ParsedDocument(doc_id=uri, title=title, sections=sections)]


def _blocks(element: Any, parent: Any) -> Iterator[Any]:
    """The paragraphs and tables of a body or table cell in document order, with those inside block-level
    content controls (``w:sdt``: a form's fields, a template's placeholders) and custom XML, which
    python-docx's ``iter_inner_content`` passes over."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for child in element.iterchildren():
        if child.tag == _P:
            yield Paragraph(child, parent)
            for box in _text_boxes(child):  # read after the paragraph they are anchored in
                yield from _blocks(box, parent)
        elif child.tag == _TBL:
            yield Table(child, parent)
        elif child.tag == _SDT:
            content = child.find(_SDT_CONTENT)
            if content is not None:
                yield from _blocks(content, parent)
        elif child.tag == _CUSTOM_XML:
            yield from _blocks(child, parent)


def _text_boxes(paragraph: Any) -> Iterator[Any]:
    """The text boxes anchored in the paragraph, in order, each once: not its VML fallback copy, and not
    a box inside another (read with the paragraph of that box it is anchored in). python-docx reads
    none of them, so a flyer's or form's boxed text was left out without a word."""
    for box in paragraph.iter(_TEXT_BOX):
        for ancestor in box.iterancestors():
            if ancestor is paragraph:
                yield box
                break
            if ancestor.tag in (_TEXT_BOX, _MC_FALLBACK):
                break


def _paragraph_text(paragraph: Any) -> str:
    """A paragraph's text as it reads with its tracked changes accepted. python-docx's ``Paragraph.text``
    reads only the runs and links directly in the paragraph: it misses tracked insertions (``w:ins``)
    and inline content controls (``w:sdt``). A run's own text (``w:t``, tabs, breaks) never has
    ``w:delText``, and text boxes inside a run's drawing are not the paragraph's (``_text_boxes``)."""
    parts = []
    stack = list(reversed(paragraph._p))
    while stack:
        child = stack.pop()
        if child.tag == _R:
            parts.append(_run_text(child))
        elif child.tag in _INLINE_WRAPPERS:
            stack.extend(reversed(child))
    return "".join(parts)


def _run_text(run: Any) -> str:
    """The run's text as python-docx's ``CT_R.text`` reads it, but with a page or column break a line
    break too: python-docx reads those as "", which glued the words around them ("AlphaBeta")."""
    return "".join("\n" if child.tag == _BR else str(child) for child in run.xpath(_RUN_TEXT))


def _heading_level(paragraph: Any) -> int | None:
    """0 for the Title style, n for "Heading n" or outline level n - 1; None for body text.

    As Word reads it: the paragraph's own outline level, else the nearest style in its ``basedOn`` chain
    that is a Title or "Heading n" style or sets an outline level. A corporate template's "Chapter" based
    on "Heading 1" is a heading; Word's "TOC Heading", based on "Heading 1" with outline level 9 (body
    text), is not."""
    own = _outline_level(paragraph._p.pPr)
    if own is not None:
        return _level_of_outline(own)
    try:
        style = paragraph.style
    except Exception:  # a style id that the styles part does not define
        return None
    for element in _style_chain(style.element if style is not None else None):
        name = element.name_val or ""
        if name.lower() == "title":
            return 0
        match = _HEADING.match(name)
        if match:
            return int(match.group(1))
        outline = _outline_level(element.pPr)
        if outline is not None:
            return _level_of_outline(outline)
    return None


def _style_chain(style: Any) -> Iterator[Any]:
    """The style element and those it is based on, nearest first; each once (a loop in a damaged
    styles part ends the chain)."""
    seen: set[int] = set()
    while style is not None and id(style) not in seen:
        seen.add(id(style))
        yield style
        style = style.base_style


def _outline_level(properties: Any) -> int | None:
    """The ``w:outlineLvl`` a paragraph's or style's properties set, None when they set none."""
    element = properties.find(_OUTLINE_LEVEL) if properties is not None else None
    try:
        return int(element.get(_VAL)) if element is not None else None
    except (TypeError, ValueError):
        return None


def _level_of_outline(outline: int) -> int | None:
    """Outline levels 0-8 are heading levels 1-9; 9 is Word's "body text"."""
    return outline + 1 if 0 <= outline <= 8 else None


def _table_text(table: Any) -> str:
    """One line per row, cells joined by ' | '; a merged cell once in its row, and a vertically merged
    one in each row it spans (as python-docx repeats them). Rows and cells are read from the XML, as
    python-docx's ``rows`` and ``cells`` see only a table's direct ``w:tr`` and a row's direct ``w:tc``:
    those in content controls (a form's repeating section) were left out without a word."""
    from docx.table import _Cell

    lines = []
    above: dict[int, Any] = {}  # grid column -> the cell holding the text there in the row above
    for tr in _wrapped_children(table._tbl, _TR):
        row = _row_cells(tr, above)
        texts = [_cell_text(_Cell(tc, table)) for tc in dict.fromkeys(row.values())]
        if any(texts):
            lines.append(" | ".join(texts))
        above = row
    return "\n".join(lines)


def _row_cells(tr: Any, above: dict[int, Any]) -> dict[int, Any]:
    """Each grid column of the row and the cell holding its text: a cell spanning columns holds each of
    them, and a vertically merged cell's continuation (``w:vMerge`` without "restart") is the cell above
    it, or itself in the first row."""
    cells: dict[int, Any] = {}
    column = tr.grid_before
    for tc in _wrapped_children(tr, _TC):
        holder = above.get(column, tc) if tc.vMerge == "continue" else tc
        for offset in range(tc.grid_span):
            cells[column + offset] = holder
        column += tc.grid_span
    return cells


def _wrapped_children(element: Any, tag: str) -> Iterator[Any]:
    """The element's children with ``tag``, in order, with those inside content controls (``w:sdt``) and
    custom XML, which Word writes around rows and cells as around paragraphs."""
    for child in element.iterchildren():
        if child.tag == tag:
            yield child
        elif child.tag == _SDT:
            content = child.find(_SDT_CONTENT)
            if content is not None:
                yield from _wrapped_children(content, tag)
        elif child.tag == _CUSTOM_XML:
            yield from _wrapped_children(child, tag)


def _cell_text(cell: Any) -> str:
    parts = []
    for block in _blocks(cell._tc, cell):
        parts.append(_table_text(block) if hasattr(block, "rows") else collapse(_paragraph_text(block)))
    return " ".join(part for part in parts if part)
