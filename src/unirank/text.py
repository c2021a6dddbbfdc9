"""Text checks shared by every surface that takes a query or an input."""

from __future__ import annotations

import re
import unicodedata

#: Half of a UTF-16 pair on its own (JSON's "\ud800" escape makes one): no character, so no text; the
#: tokenizer and SQLite refuse it.
LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


#: Categories of characters no word is made of: format and control ("\u200b", "\x00"), private-use and
#: unassigned code points, and combining marks (an accent, a variation selector) with no letter before them.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Co", "Cn", "Mn", "Me"})


def is_blank(text: str) -> bool:
    """Whitespace, invisible characters and U+FFFD (a byte that could not be decoded) only: the tokenizer drops
    them or reads an unknown token, so a model would embed or rank an empty string, and a search would return
    noise as results. A mark after a letter ("e\\u0301") is part of a word: the text is not blank."""
    return all(c.isspace() or c == "\ufffd" or unicodedata.category(c) in _INVISIBLE_CATEGORIES for c in text)
