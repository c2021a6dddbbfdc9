"""One JSON object a line (pairs, queries, click logs, documents): what is wrong with a line, in words."""

from __future__ import annotations

import json
from typing import Any, Sequence


def parse_object_line(line: str, required: Sequence[str] = ()) -> dict[str, Any]:
    """The line's object. ``ValueError`` says what is wrong: not JSON (and where), not an object, or which
    ``required`` fields are missing; callers add the file and line and raise their own error."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        where = f"{exc.msg} column {exc.colno}" if exc.msg.endswith(" at") else f"{exc.msg} at column {exc.colno}"
        raise ValueError(f"not valid JSON ({where})") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {_json_type(value)}")
    missing = [key for key in required if value.get(key) is None]
    if missing:
        raise ValueError(f"missing required field(s) {', '.join(missing)}")
    return value


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
