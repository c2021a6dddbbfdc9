"""Text checks shared by every surface that takes a query or an input."""

from __future__ import annotations

import re
import unicodedata

#: Half of a UTF-16 pair on its own (JSON's "\ud800" escape makes one): no character, so no text; the
#: tokenizer and SQLite refuse it.
LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def is_blank(text: str) -> bool:
    """Whitespace, format and control characters only ("\\u200b", "\\x00"): the tokenizer drops them all,
    so a model would embed or rank an empty string, and a search would return noise as results."""
    return all(c.isspace() or unicodedata.category(c) in ("Cf", "Cc") for c in text)
