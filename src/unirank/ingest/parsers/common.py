"""Helpers every parser shares: decoding, whitespace, titles from URIs, heading stacks."""

from __future__ import annotations

import codecs
import math
import re
import textwrap
from datetime import date, time
from pathlib import PurePosixPath

from unirank.errors import ParseError
from unirank.ingest.documents import Section
from unirank.ingest.uris import file_name
from unirank.search.types import MetadataValue
from unirank.text import LONE_SURROGATE

BINARY = "binary content, not text"
#: charset-normalizer's own cut-off for a decoding that reads as text.
PLAUSIBLE_MESS = 0.2

_SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_RUNS = re.compile(r"\n\s*\n\s*")
_NOT_TAB = re.compile(r"[^\t]")
# Control characters that never occur in real text (tab, LF, CR, FF and ESC, for coloured logs, are allowed).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
_CONTROL_BYTES = re.compile(_CONTROL.pattern.encode("ascii"))
#: The head of a file sniffed for binary content, and the share of control bytes (NUL included) in it
#: that makes it binary: text has none or a stray few, binary formats a tenth or more, and UTF-16 without
#: a BOM (refused: no way to know its byte order) is half NULs.
SNIFF_BYTES = 8192
BINARY_SHARE = 0.03
#: Invalid bytes a UTF-8 file may have and still be read as UTF-8 (each one a U+FFFD): this many, or
#: this share of its characters, whichever is more.
STRAY_BYTES = 8
STRAY_SHARE = 0.001


def decode_text(data: bytes, legacy_encoding: str = "cp1252", *, declared: str | None = None) -> str:
    """UTF-8 first (the common case, and exact); then UTF-8 with a few stray bytes (a pasted Windows-1252
    quote, a file cut mid-character) when its other characters show it is UTF-8; then the encoding the
    file ``declared`` (an HTML page's charset); then ``legacy_encoding`` (``ingest.legacy_encoding``)
    when the text reads as plausible in it; otherwise charset-normalizer's best guess. (Nearly) valid
    UTF-8 wins over a declaration: a page saved as UTF-8 often keeps its old charset line.

    Raises ParseError for data that is not text at all, so a binary file with a text
    extension is reported rather than indexed as garbage.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with a BOM: NUL bytes are expected
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise ParseError(BINARY) from None
    if _looks_binary(data):
        raise ParseError(BINARY)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = _mostly_utf8(data) or _declared_text(data, declared) or _legacy_text(data, legacy_encoding)
    if text and len(_CONTROL.findall(text)) > max(8, len(text) // 100):
        raise ParseError(BINARY)
    return text.replace("\x00", "")  # a stray NUL (a log cut mid-write) is no character of the text


def _looks_binary(data: bytes) -> bool:
    """Judged by a share of the head, not by one byte: a single NUL in a log is damage, not a format.
    Cheap, so a large binary file is refused before any decoding is tried."""
    head = data[:SNIFF_BYTES]
    return len(_CONTROL_BYTES.findall(head)) > BINARY_SHARE * len(head)


def _mostly_utf8(data: bytes) -> str | None:
    """UTF-8 with its few invalid bytes as U+FFFD, and a character cut off at the very end dropped, when
    that is all that is wrong with it: one bad byte must not send a whole UTF-8 file to a legacy
    encoding ("Le cafÃ©"). The file must show it is UTF-8 by valid multi-byte characters, at least as
    many as the bad bytes: a legacy file has none (its accented letters are single invalid bytes), so
    "Ça marche" in Latin-1 and a Windows-1252 "don’t" in ASCII text still go to the legacy reading."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    text = decoder.decode(data, final=False)  # an incomplete character at the end stays in the buffer
    cut = 1 if decoder.getstate()[0] else 0
    bad = text.count("\ufffd") - data.count("\ufffd".encode("utf-8")) + cut
    valid = len(text) - len(text.encode("ascii", "ignore")) - text.count("\ufffd")  # multi-byte characters
    if bad <= max(STRAY_BYTES, STRAY_SHARE * len(text)) and valid >= bad:
        return text
    return None


#: What a declared charset means on the web (the WHATWG Encoding standard), by Python's name for it. A
#: label of a legacy charset means its Windows or GB18030 superset, whose extra characters pages so
#: labelled use (a page labelled Latin-1 has Windows-1252's quotes and dashes). A declared UTF-16 or
#: UTF-32 means UTF-8: a real UTF-16 page starts with a byte-order mark, which is read before any
#: declaration, and a single-byte page read as UTF-16 was indexed as CJK garbage.
_WEB_CODECS = {
    "ascii": "cp1252", "iso8859-1": "cp1252", "iso8859-9": "cp1254", "iso8859-11": "cp874", "tis-620": "cp874",
    "shift_jis": "cp932", "euc_kr": "cp949", "gb2312": "gb18030", "gbk": "gb18030",
    **dict.fromkeys(("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"), "utf-8"),
}
#: Web labels Python has no codec of that name for.
_WEB_LABELS = {"windows-874": "cp874", "x-sjis": "cp932", "x-gbk": "gb18030", "x-user-defined": "cp1252"}


def _declared_text(data: bytes, declared: str | None) -> str | None:
    codec = _declared_codec(declared)
    if codec is None:
        return None
    try:
        return data.decode(codec)
    except (UnicodeError, LookupError):  # not in that charset after all: detect instead
        return None


def _declared_codec(declared: str | None) -> str | None:
    """The text encoding a page's charset names, or None (detect instead) for a typo, or for a codec of
    Python's that is no charset: "rot13", "hex", "base64" or "zlib" convert bytes to bytes, and a page
    declaring one stopped the whole run with a LookupError."""
    if not declared:
        return None
    try:
        info = codecs.lookup(_WEB_LABELS.get(declared.strip().lower(), declared))
    except LookupError:
        return None
    if not info._is_text_encoding:  # type: ignore[attr-defined]
        return None
    return _WEB_CODECS.get(info.name, info.name)


def _legacy_text(data: bytes, legacy_encoding: str) -> str:
    from charset_normalizer import from_bytes
    from charset_normalizer.md import mess_ratio

    if legacy_encoding != "auto":
        try:
            text = data.decode(legacy_encoding)
        except UnicodeError:  # a byte it has no character for ("undefined" has none at all)
            pass
        else:
            # Cyrillic, Greek or CJK bytes read as Windows-1252 are runs of accented letters and symbols,
            # which the mess ratio scores at 1 or more; Western text scores under 0.06.
            if mess_ratio(text, PLAUSIBLE_MESS) < PLAUSIBLE_MESS:
                return text
    best = from_bytes(data).best()
    if best is None:
        raise ParseError(BINARY) from None
    return str(best)


_SCALARS = (str, int, float, bool)


def metadata_value(value: object) -> MetadataValue | None:
    """A field kept as metadata: a scalar, or a list of scalars (tags); dates as ISO text. Anything
    else (nested objects and lists, nulls, NaN and infinities) is left out: it could not be filtered on.

    A list's items are looked at, never into: YAML aliases nest a 500-byte header into lists of 9⁹
    items ("billion laughs"), which walking them took for ever."""
    if isinstance(value, list):
        items = [item for item in value if item is not None]
        if items and all(_is_scalar(item) for item in items):
            return [_scalar_value(item) for item in items]
        return None
    return _scalar_value(value) if _is_scalar(value) else None


def _is_scalar(value: object) -> bool:
    return isinstance(value, (*_SCALARS, date, time)) and not _non_finite_number(value)


#: Why a NaN or an infinity is left out of metadata, said in the ingest report.
NON_FINITE = ("not a finite number (NaN or infinity, such as 1e400 or YAML's .inf): no filter matches one, and "
              "strict JSON has no such number; write the value as text (in quotes) to keep it")


def is_non_finite(value: object) -> bool:
    """A NaN or an infinity (an overflowing 1e400, YAML's .inf or .nan), or a list holding one: left out
    of metadata, as ``search --json`` printed it as NaN/Infinity, which strict JSON readers refuse."""
    return any(_non_finite_number(item) for item in (value if isinstance(value, list) else [value]))


def _non_finite_number(value: object) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _scalar_value(value: object) -> str | int | float | bool:
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, str):
        return without_lone_surrogates(value)
    return value  # type: ignore[return-value]


def without_lone_surrogates(text: str) -> str:
    """Each lone surrogate as U+FFFD, as a decoder writes a byte it cannot read: in Python a str holds
    no surrogate pair, so every surrogate in one is alone."""
    return LONE_SURROGATE.sub("\ufffd", text)


#: Opens each line of a code block (a Markdown fence or indented block, an HTML <pre>) in a parser's text:
#: ``normalize_whitespace`` keeps that line's indentation, and takes the mark out. Only a code block's: the
#: indentation of prose is layout, not text. A Unicode noncharacter, reserved for a program's own use.
CODE_LINE = "\ufdd0"


def code_lines(text: str) -> str:
    """``text`` with each line marked as code (``CODE_LINE``), so that its indentation survives; YAML or
    Python without it reads otherwise. The indentation all lines share is dropped: a block that opens
    indented (``<pre>`` inside an indented page) would otherwise lose its first line's indent alone where
    a chunk begins. Blank text stays blank."""
    if not text.strip():
        return ""
    lines = textwrap.dedent(text.replace("\r\n", "\n").replace("\r", "\n")).split("\n")
    return "\n".join(CODE_LINE + line for line in lines)


def normalize_whitespace(text: str) -> str:
    """Collapse runs of spaces/tabs and blank lines, keeping paragraph breaks as one blank line; a code
    line (``CODE_LINE``) keeps its indentation."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(_normalize_line(line) for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip().replace(CODE_LINE, "")


def _normalize_line(line: str) -> str:
    """The line with its space runs collapsed and its ends stripped; a code line keeps its indentation (other
    spaces as spaces, tabs as tabs) and the spaces inside it (columns aligned by them stay aligned), behind
    its mark, which no strip takes off."""
    if not line.startswith(CODE_LINE):
        return _SPACES.sub(" ", line).strip()
    code = line.replace(CODE_LINE, "")
    indentation = _SPACES.match(code)
    rest = _SPACES.sub(lambda run: _NOT_TAB.sub(" ", run.group()), code.strip())  # no-break spaces as spaces
    if not rest:
        return ""
    return CODE_LINE + (_NOT_TAB.sub(" ", indentation.group()) if indentation else "") + rest


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

    Headings form a stack: a level-n heading replaces every open heading at level >= n. A heading with no
    body of its own (no paragraph, no sub-heading) is its own text.
    """

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self._stack: list[tuple[int, str]] = []
        self._paragraphs: list[str] = []
        self.first_heading: dict[int, str] = {}
        #: The last heading has had neither a paragraph nor a sub-heading yet.
        self._bare = False

    @property
    def heading_path(self) -> tuple[str, ...]:
        return tuple(text for _, text in self._stack)

    def heading(self, level: int, text: str) -> None:
        text = collapse(text)
        if not text:
            return
        self.flush()
        self._end_bare_heading(next_level=level)
        self.first_heading.setdefault(level, text)
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, text))
        self._bare = True

    def paragraph(self, text: str) -> None:
        if text and text.strip():
            self._paragraphs.append(text.strip())
            self._bare = False

    def flush(self) -> None:
        if self._paragraphs:
            self.sections.append(Section("\n\n".join(self._paragraphs), self.heading_path))
            self._paragraphs = []

    def finish(self) -> list[Section]:
        self.flush()
        self._end_bare_heading()
        return self.sections

    def _end_bare_heading(self, next_level: int | None = None) -> None:
        """The last heading as a section of its own when nothing was under it: the next heading is at its
        level or above, or the document ends. An outline of headings was refused as "no text found",
        and a last heading with no body was dropped. (A deeper next heading is its body.)"""
        if self._bare and (next_level is None or next_level <= self._stack[-1][0]):
            self.sections.append(Section(self._stack[-1][1], self.heading_path))
        self._bare = False
