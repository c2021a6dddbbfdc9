"""HTML via BeautifulSoup + lxml: page chrome dropped, h1-h6 give heading paths."""

from __future__ import annotations

import re
from typing import Any

from unirank.ingest.documents import ParsedDocument
from unirank.ingest.parsers.common import SectionBuilder, code_lines, collapse, decode_text, stem_from_uri

_DROP = ("script", "style", "noscript", "nav", "template", "iframe", "svg", "head")
#: A header or footer is the site's banner or footer only at page level. Inside an article or section
#: it is that content's own introduction: the ``<header><h1>Expense policy</h1></header>`` of a blog
#: or CMS page, whose heading must not be lost (HTML's own rule for the banner landmark).
_PAGE_CHROME = ("header", "footer")
_SECTIONING = ("article", "aside", "main", "section")
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
#: Where a page's head ends: its ``</head>``, or the ``<body>`` that opens the page when that is left out.
_HEAD_END = re.compile(rb"</head\s*>|<body[\s>]", re.IGNORECASE)
#: Elements whose text stands apart from its neighbours: each ends a paragraph. An article's own header
#: and footer, a form's labels, options, buttons and text areas, and table rows and cells met outside a
#: table are among them: their words were glued to the next ("Posted on 1 May 2024Rotate keys").
_BLOCKS = frozenset(
    "address article aside blockquote body button caption center dd details dialog dir div dl dt fieldset "
    "figcaption figure footer form header hgroup hr html label legend li main menu ol option p search "
    "section summary td textarea th tr ul".split()
)


class HtmlParser:
    extensions: tuple[str, ...] = (".html", ".htm")

    @staticmethod
    def declared_encoding(data: bytes) -> str | None:
        """The page's ``<meta charset>`` (or XML declaration), which outranks a guess. Looked for in the
        whole head, as browsers do: bs4 alone looks at the first 2 KB, and a charset after a page's inline
        CSS or scripts was missed, its Cyrillic text indexed as mojibake ("Ïîëèòèêà")."""
        from bs4.dammit import EncodingDetector

        end = _HEAD_END.search(data)
        head = data if end is None else data[: end.start()]
        return EncodingDetector.find_declared_encoding(head, is_html=True, search_entire_document=True)

    def parse(self, data: bytes, uri: str) -> list[ParsedDocument]:
        from bs4 import BeautifulSoup

        soup = BeautifulSoup(decode_text(data), "lxml")
        page_title = _page_title(soup)
        for tag in soup.find_all(_DROP):
            tag.decompose()
        for tag in soup.find_all(_PAGE_CHROME):
            if tag.find_parent(_SECTIONING) is None:
                tag.decompose()
        _images_as_alt_text(soup)
        walker = _Walker()
        walker.walk(soup.body or soup)
        sections = walker.finish()
        title = page_title or walker.first_heading.get(1) or stem_from_uri(uri)
        return [ParsedDocument(doc_id=uri, title=title, sections=sections)]


def _page_title(soup: Any) -> str:
    """The page's <title>, not an inline SVG's: that one is an icon's tooltip ("Search icon"), which
    named a page whose head has no title of its own."""
    for tag in soup.find_all("title"):
        if tag.find_parent("svg") is None:
            return collapse(tag.get_text())
    return ""


def _images_as_alt_text(soup: Any) -> None:
    """Each image as its alt text, wherever it is (a paragraph, a heading, a table cell), as the Markdown
    parser reads one: an ``<img alt="Architecture diagram">`` was dropped."""
    for image in soup.find_all("img"):
        alt = collapse(image.get("alt") or "")
        image.replace_with(f" {alt} " if alt else "")


#: Marks on the walk's stack where a block element's content ends.
_END_BLOCK = object()


class _Walker(SectionBuilder):
    """Depth-first walk that gathers inline text into paragraphs, cut at block elements."""

    def __init__(self) -> None:
        super().__init__()
        self._inline: list[str] = []

    def end_paragraph(self) -> None:
        self.paragraph(collapse("".join(self._inline)))
        self._inline = []

    def walk(self, root: Any) -> None:
        """Iterative, with a stack of the nodes still to visit: legacy pages with hundreds of unclosed
        ``<font>`` or ``<div>`` tags nest thousands deep, past Python's recursion limit."""
        from bs4 import NavigableString, Tag

        stack: list[Any] = list(reversed(root.contents))
        while stack:
            child = stack.pop()
            if child is _END_BLOCK:
                self.end_paragraph()
                continue
            if isinstance(child, NavigableString):
                if type(child) is NavigableString:  # not a Comment, CData, Doctype...
                    self._inline.append(str(child))
                continue
            if not isinstance(child, Tag):
                continue
            name = child.name
            if name in _HEADINGS:
                self.end_paragraph()
                self.heading(_HEADINGS[name], child.get_text(" "))
            elif name == "br":
                self._inline.append(" ")
            elif name == "pre":
                self.end_paragraph()
                self.paragraph(code_lines(child.get_text()))
            elif name == "table":
                self.end_paragraph()
                self.paragraph(_caption_text(child))
                self.paragraph(_table_text(child))
            elif name in _BLOCKS:
                self.end_paragraph()
                stack.append(_END_BLOCK)  # popped once the block's content is walked
                stack.extend(reversed(child.contents))
            else:
                stack.extend(reversed(child.contents))

    def finish(self) -> list:
        self.end_paragraph()
        return super().finish()


def _caption_text(table: Any) -> str:
    """A table's caption, which says what the table is: a paragraph of its own before the rows, so that the
    rows stay a table (every line a row) for the chat, which quotes a row with its header."""
    caption = table.find("caption", recursive=False)
    return collapse(caption.get_text(" ")) if caption is not None else ""


def _table_text(table: Any) -> str:
    """One line per row, cells joined by ' | ' (rows of nested tables are not repeated)."""
    lines = []
    for row in table.find_all("tr"):
        if row.find_parent("table") is not table:
            continue
        cells = [collapse(cell.get_text(" ")) for cell in row.find_all(["td", "th"], recursive=False)]
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)
