"""Markdown via markdown-it-py's token stream: headings give paths, YAML front matter gives metadata."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from unirank.ingest.documents import ParsedDocument
from unirank.ingest.parsers.common import (
    NON_FINITE,
    SectionBuilder,
    code_lines,
    collapse,
    decode_text,
    is_non_finite,
    metadata_value,
    stem_from_uri,
)
from unirank.search.types import Metadata

_FENCES = ("---", "...")
#: An HTML line break written inline: <br>, <br/>, <BR />.
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
#: How deep markdown-it lets blocks nest (a list level counts two: the list and its item). Past it, it
#: leaves out the rest of the container, and for a list the rest of the file: commonmark's 20 lost the
#: tail of a file after a list 10 levels deep. Not higher: markdown-it recurses a few frames a level,
#: and at 100 its deepest input (nested link brackets) still parses a few hundred frames under Python's
#: recursion limit.
MAX_NESTING = 100
#: Blocks whose content markdown-it parses one level deeper than themselves.
_CONTAINERS = ("blockquote_open", "list_item_open")


class MarkdownParser:
    extensions: tuple[str, ...] = (".md", ".markdown")

    def parse(self, data: bytes, uri: str) -> list[ParsedDocument]:
        from markdown_it import MarkdownIt

        text = decode_text(data)
        metadata, body, dropped = split_front_matter(text)
        tokens = MarkdownIt("commonmark", {"maxNesting": MAX_NESTING}).enable("table").parse(body)
        builder = SectionBuilder()
        _Renderer(builder).render(tokens)
        sections = builder.finish()
        title = _title_text(metadata.pop("title", "")) or builder.first_heading.get(1) or stem_from_uri(uri)
        header_lines = max(0, text.count("\n") - body.count("\n"))  # the front matter's, taken off
        warnings = [warning for warning in (dropped, _too_deep(tokens, header_lines)) if warning]
        return [ParsedDocument(doc_id=uri, title=title, sections=sections, metadata=metadata, warnings=warnings)]


def _title_text(value: object) -> str:
    """A front matter title as text: a list (``title: [Keys, Rotation]``) joined with commas, not its Python
    repr "['Keys', 'Rotation']"."""
    items = value if isinstance(value, list) else [value]
    return collapse(", ".join(str(item) for item in items))


def _too_deep(tokens: list[Any], header_lines: int) -> str | None:
    """Said when markdown-it left text out for nesting past ``MAX_NESTING``: it does so without a word."""
    for token in tokens:
        if token.type in _CONTAINERS and token.level >= MAX_NESTING - 1:
            line = token.map[0] + 1 + header_lines if token.map else None
            where = f" on line {line}" if line else ""
            return (f"a list or quote nested over {MAX_NESTING} levels deep{where} (a list level counts two): "
                    "the text inside it, and after a list the rest of the file, is left out; nest it less")
    return None


def split_front_matter(text: str) -> tuple[Metadata, str, str | None]:
    """A `---` block at the very top, read as YAML (PyYAML's safe loader, times read as YAML 1.2 reads
    them) when it is a mapping: scalars and lists of scalars (``tags: [a, b]``) become metadata; nested
    maps are left out.

    A block that reads as anything else (a sentence, a list) is text between two rules, and stays:
    "---\\nThis document explains key rotation.\\n---" opens the document, it is not its header. Its
    closing `---` stays a rule, not the underline that would make the text a heading (CommonMark's
    setext heading, which as a heading with no text of its own would be left out). A block that is not
    valid YAML stays too, unless its lines are all ``key:`` lines (and their indented or listed values):
    a header with a YAML mistake (``title: Keys: how to rotate``), taken off with no metadata, and the
    third item says so (it is None when nothing was left out), as it says which fields were left out for
    being NaN or infinite (``.inf``)."""
    import yaml

    lines = text.lstrip("\ufeff").split("\n")
    if not lines or lines[0].strip() != "---":
        return {}, text, None
    for end in range(1, len(lines)):
        if lines[end].rstrip() in _FENCES:  # in column 0: an indented `---` is a block scalar's text
            break
    else:
        return {}, text, None  # no closing fence: a thematic break, not front matter
    block, body = lines[1:end], "\n".join(lines[end + 1 :])
    as_text = "\n".join([*lines[:end], "", *lines[end:]])  # a blank line: the closing fence is a rule
    try:
        header = yaml.load("\n".join(block), Loader=_front_matter_loader())  # a SafeLoader
    except yaml.YAMLError as exc:
        if _looks_like_keys(block):
            return {}, body, _not_yaml(exc)
        return {}, as_text, None
    if header is not None and not isinstance(header, dict):
        return {}, as_text, None
    metadata: Metadata = {}
    non_finite: list[str] = []
    for key, value in (header or {}).items():  # None: an empty block, or only comments
        kept = metadata_value(value)
        if isinstance(key, str) and key.strip() and kept not in (None, "", []):
            metadata[key.strip()] = kept  # type: ignore[assignment]
        elif isinstance(key, str) and key.strip() and is_non_finite(value):
            non_finite.append(key.strip())
    return metadata, body, _non_finite_left_out(non_finite)


def _non_finite_left_out(keys: list[str]) -> str | None:
    if not keys:
        return None
    return f"front matter field{'s' if len(keys) > 1 else ''} {', '.join(keys)} left out: {NON_FINITE}"


@cache
def _front_matter_loader() -> type:
    """PyYAML's safe loader, reading times as YAML 1.2 (and Hugo) do, so a filter with the value as
    written matches it: ``time_only: 10:20`` stays the text "10:20" (YAML 1.1 read it as the base-60
    number 620), and a timestamp stays as written (``2024-03-05 10:20:30`` was stored as
    "2024-03-05T10:20:30", and an impossible date such as 2024-02-30 failed the whole file)."""
    import yaml

    class FrontMatterLoader(yaml.SafeLoader):
        pass

    FrontMatterLoader.yaml_implicit_resolvers = {
        first: [(tag, _without_base_60(regexp) if tag in _NUMBER_TAGS else regexp) for tag, regexp in resolvers]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    FrontMatterLoader.add_constructor("tag:yaml.org,2002:timestamp",
                                      lambda loader, node: loader.construct_scalar(node))
    return FrontMatterLoader


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


def _without_base_60(number: re.Pattern[str]) -> re.Pattern[str]:
    """YAML 1.1's number pattern, less its sexagesimal form (``1:30``, ``190:20:30.15``): no ``:`` at all."""
    return re.compile(r"(?![^:]*:)" + number.pattern, number.flags)


def _not_yaml(error: Exception) -> str:
    """Why a header was taken off with no metadata, and where: said in the ingest report, as its fields
    were lost without a word."""
    problem = getattr(error, "problem", None) or "not valid YAML"
    mark = getattr(error, "problem_mark", None)
    where = f", on line {mark.line + 2}" if mark is not None else ""  # the header starts on the file's line 2
    return (f"front matter is not valid YAML ({problem}{where}): none of its fields became metadata; fix it "
            "(a value that holds ': ' needs quotes)")


#: A top-level YAML key as front matter writes it: one word, then a colon.
_KEY_LINE = re.compile(r"[^\W\d][\w.-]*\s*:(\s|$)")


def _looks_like_keys(block: list[str]) -> bool:
    """Every line a ``key:`` line, an indented or listed value under one, a comment or blank."""
    keys = 0
    for line in block:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t" or line.startswith("- "):
            if not keys:
                return False
        elif _KEY_LINE.match(line):
            keys += 1
        else:
            return False
    return keys > 0


class _Renderer:
    """Turns block tokens into paragraphs: list items and table rows become lines of one block."""

    def __init__(self, builder: SectionBuilder) -> None:
        self.builder = builder
        self.lists: list[_List] = []  # the open lists, innermost last
        self.lines: list[str] = []
        self.cells: list[str] | None = None

    def render(self, tokens: list[Any]) -> None:
        heading_level: int | None = None
        for token in tokens:
            kind = token.type
            if kind == "heading_open":
                heading_level = int(token.tag[1:])
            elif kind == "heading_close":
                heading_level = None
            elif kind == "inline":
                text = inline_text(token)
                if heading_level is not None:
                    self._end_block()
                    self.builder.heading(heading_level, text)
                elif self.cells is not None:
                    self.cells.append(collapse(text))
                elif self.lists:
                    self.lines.append("  " * (len(self.lists) - 1) + self.lists[-1].take_marker() + text.strip())
                else:
                    self.builder.paragraph(text)
            elif kind == "bullet_list_open":
                self.lists.append(_List())
            elif kind == "ordered_list_open":
                start = token.attrGet("start")  # 0 is a start too: "0. zero" numbers from 0
                self.lists.append(_List(number=1 if start is None else int(start), delimiter=token.markup or "."))
            elif kind == "list_item_open":
                self.lists[-1].next_item()
            elif kind in ("bullet_list_close", "ordered_list_close"):
                self.lists.pop()
                if not self.lists:
                    self._end_block()
            elif kind == "table_open":
                self._end_block()
            elif kind == "tr_open":
                self.cells = []
            elif kind == "tr_close":
                if self.cells and any(self.cells):
                    self.lines.append(" | ".join(self.cells))
                self.cells = None
            elif kind == "table_close":
                self._end_block()
            elif kind in ("fence", "code_block"):
                self._block(code_lines(token.content.rstrip("\n")))
            elif kind == "html_block":
                self._block(_strip_html(token.content))

    def _block(self, text: str) -> None:
        """A block with lines of its own (code, HTML): a line of the list it is in, else a paragraph."""
        if self.lists:
            self.lines.append(text)
        else:
            self.builder.paragraph(text)

    def _end_block(self) -> None:
        if self.lines:
            self.builder.paragraph("\n".join(self.lines))
            self.lines = []


@dataclass
class _List:
    """An open list: a bullet list marks each of its items' paragraphs "- "; an ordered one numbers its items
    from its start, with its delimiter ("1. ", "2) "), as a reader sees them, so that "step 2" still names a
    line (each was "- "). An item's later paragraphs continue it, unnumbered."""

    number: int | None = None  # the next item's number; None for a bullet list
    delimiter: str = "."
    marker: str = "- "

    def next_item(self) -> None:
        if self.number is not None:
            self.marker = f"{self.number}{self.delimiter} "
            self.number += 1

    def take_marker(self) -> str:
        marker = self.marker
        if self.number is not None:
            self.marker = ""  # the item's next paragraph continues it
        return marker


def inline_text(token: Any) -> str:
    """Plain text of an inline token: markup dropped, code spans and image alt text kept."""
    parts = []
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak") or (child.type == "html_inline" and _BR.match(child.content)):
            parts.append(" ")  # a <br> too: "First line<br>second line" read "First linesecond line"
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)


def _strip_html(html: str) -> str:
    from bs4 import BeautifulSoup

    return BeautifulSoup(html, "lxml").get_text(" ")
