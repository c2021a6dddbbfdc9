"""Turning a request body the schema refused into one line a person can act on (both HTTP servers)."""

from __future__ import annotations

from typing import Any, Iterable


def validation_message(errors: Iterable[dict[str, Any]]) -> str:
    """From pydantic's error list: the JSON error alone, else each field with what is wrong with it."""
    parts = []
    for error in errors:
        if error.get("type") == "json_invalid":
            return f"The request body is not valid JSON ({error.get('ctx', {}).get('error', 'decode error')})."
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "Invalid request: " + "; ".join(parts) + "."
