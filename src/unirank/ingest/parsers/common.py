"""Helpers every parser shares: decoding, whitespace, titles from URIs, heading stacks."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from unirank.errors import ParseError
from unirank.ingest.documents import Section
from unirank.ingest.uris import file_name

BINARY = "binary content, not text"

_SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_RUNS = re.compile(r"\n\s*\n\s*")
# Control characters that never occur in real text (tab, LF, CR, FF and ESC, for coloured logs, are allowed).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")


def decode_text(data: bytes) -> str:
    """UTF-8 first (the common case, and exact); otherwise charset-normalizer's best guess.

    Raises ParseError for data that is not text at all, so a binary file with a text
    extension is reported rather than indexed as garbage.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with a BOM: NUL bytes are expected
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise ParseError(BINARY) from None
    if b"\x00" in data:
        raise ParseError(BINARY)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is None:
            raise ParseError(BINARY) from None
        text = str(best)
    if text and len(_CONTROL.findall(text)) > max(8, len(text) // 100):
        raise ParseError(BINARY)
    return text


def normalize_whitespace(text: str) -> str:
    """Collapse runs of spaces/tabs and blank lines, keeping paragraph breaks as one blank line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip()


def collapse(text: str) -> str:
    """All whitespace to single spaces: for titles and headings, which are one line."""
    return " ".join(text.split())


def stem_from_uri(uri: str) -> str:
    """The file name without extension, from a path or a file:// / s3:// style URI."""
    name = file_name(uri)
    return PurePosixPath(name).stem or name or uri


def extension_of(uri: str) -> str:
    """Lower-cased extension with the dot ('.pdf'), or '' when there is none."""
    return PurePosixPath(file_name(uri)).suffix.lower()


class SectionBuilder:
    """Collects paragraphs under the current heading path and cuts a Section at each heading.

    Headings form a stack: a level-n heading replaces every open heading at level >= n.
    """

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self._stack: list[tuple[int, str]] = []
        self._paragraphs: list[str] = []
        self.first_heading: dict[int, str] = {}

    @property
    def heading_path(self) -> tuple[str, ...]:
        return tuple(text for _, text in self._stack)

    def heading(self, level: int, text: str) -> None:
        text = collapse(text)
        if not text:
            return
        self.flush()
        self.first_heading.setdefault(level, text)
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, text))

    def paragraph(self, text: str) -> None:
        if text and text.strip():
            self._paragraphs.append(text.strip())

    def flush(self) -> None:
        if self._paragraphs:
            self.sections.append(Section("\n\n".join(self._paragraphs), self.heading_path))
            self._paragraphs = []

    def finish(self) -> list[Section]:
        self.flush()
        return self.sections
