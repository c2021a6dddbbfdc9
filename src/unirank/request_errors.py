"""Turning refused requests into one line a person can act on, and a code (both HTTP servers)."""

from __future__ import annotations

import re
from typing import Any, Iterable

from pydantic import BaseModel

from unirank.errors import RequestTooLargeError

#: How pydantic names the member of a union a value was tried against (``str``, ``list[str]``, a model
#: class); the request schemas' own field names are lower snake_case, so they never look like this. A key
#: the client sent (a filter's ``Category`` or ``list``) can: one in the body is not taken for a member.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|list|dict)(\[.*\])?$|^[A-Z]\w*$")
#: Union members in words: "expected one of str, RerankDocument" named a class of the server's code.
_FORM_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "dict": "an object", "list[str]": "a list of strings", "list[int]": "a list of token ids",
               "list[list[int]]": "a list of token-id lists", "list[dict[str,any]]": "a list of content parts"}


def lone_surrogate_at(value: Any, where: str = "") -> str | None:
    """The path (``filters.category``, ``input.1``) of the first string in a parsed body or request model
    that UTF-8 cannot encode, or None. JSON can escape half a UTF-16 pair (``"\\ud800"``), which is no
    text. A key that cannot be encoded is named by the object holding it."""
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, BaseModel):
        items: Iterable[tuple[str, Any]] = ((name, getattr(value, name)) for name in type(value).model_fields)
    elif isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), item) for i, item in enumerate(value))
    else:
        return None
    for key, child in items:
        if lone_surrogate_at(key, where) is not None:
            return f"{where} (a key)" if where else "a key"
        found = lone_surrogate_at(child, f"{where}.{key}" if where else key)
        if found is not None:
            return found
    return None


def lone_surrogate_message(where: str) -> str:
    return (f"{where or 'The request body'}: holds a lone UTF-16 surrogate (half of an escaped pair such as "
            "\\ud83d\\ude00), which is not text. Send valid Unicode: both halves of the pair, or the character "
            "itself in UTF-8")


def validation_message(errors: Iterable[dict[str, Any]], content_type: str | None = "application/json",
                       body: Any = None) -> str:
    """From pydantic's error list: the JSON error alone, else each field with what is wrong with it. A
    field no member of its union accepts gets one clause naming the accepted forms, not one per member.
    A body not sent as JSON (curl's default is a form) is said to be the cause. ``body``, the parsed
    request, tells a key the client sent from the name of a union's member."""
    if content_type is not None and "json" not in content_type.lower():
        return (f"The request body was sent as {content_type or 'no content type'}, not JSON: send a JSON object "
                "with Content-Type: application/json.")
    parts: dict[str, str] = {}
    unions: dict[str, list[str]] = {}
    for error in errors:
        if error.get("type") == "json_invalid":
            return f"The request body is not valid JSON ({error.get('ctx', {}).get('error', 'decode error')})."
        if error.get("type") == "missing" and tuple(error.get("loc", ())) == ("body",):  # was "Field required."
            return "The request body is empty: send a JSON object."
        raw = [p for p in error.get("loc", ()) if p != "body"]
        loc = [str(p) for p in raw]
        member = _union_member_at(raw, body)
        if member is not None:
            where = ".".join(loc[:member])
            form = _form_name(loc[member])
            if form == "an object" and loc[member + 1:]:  # what the object lacks or holds wrong
                form = f"an object ({'.'.join(loc[member + 1:])}: {error.get('msg')})"
            forms = unions.setdefault(where, [])
            if form not in forms and not any(f.startswith(f"{form} (") for f in forms):
                forms.append(form)
            parts.setdefault(where, "")
            continue
        where = ".".join(loc)
        parts.setdefault(where, f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    for where, forms in unions.items():
        listed = forms[0] if len(forms) == 1 else f"{', '.join(forms[:-1])} or {forms[-1]}"
        parts[where] = f"{where}: expected {listed}"
    return "Invalid request: " + "; ".join(parts.values()) + "."


def _union_member_at(loc: list[Any], body: Any) -> int | None:
    """Where in ``loc`` a union's member is named, or None. The body is walked along ``loc``: a part that
    is a key (or an index) of what the client sent there is the client's, not a member."""
    node = body
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(part, str) and _UNION_MEMBER.match(part):
            return i
        else:
            node = None  # past what was sent (a missing field): no key of the client's below
    return None


def _form_name(member: str) -> str:
    """A union member as a client would describe it: a model class is an object."""
    return _FORM_NAMES.get(member, "an object" if member[:1].isupper() else member)


def body_type(request: Any) -> str | None:
    """The content type a POST's body was sent as ("" when none), or None for a request without a body."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return None
    return request.headers.get("content-type", "")


def body_refusal(exc: Any, invalid: str = "invalid_request") -> tuple[int, str, str] | None:
    """Status, message and code for a body that failed while it was read (too large, not UTF-8, nested too
    deeply), which the router reports as an HTTPException caused by it; None for the router's own refusals.
    ``invalid``: the code the server gives its other 422s (the model server's, or the app's OpenAI type)."""
    cause = exc.__cause__
    if isinstance(cause, RequestTooLargeError):
        return 413, str(cause), "request_too_large"
    if isinstance(cause, UnicodeDecodeError):  # FastAPI's 400 "There was an error parsing the body"
        return 422, (f"The request body is not valid JSON: it is not UTF-8 ({cause.reason} at byte {cause.start}). "
                     "Send the JSON encoded as UTF-8."), invalid
    if isinstance(cause, RecursionError):  # valid JSON, but deeper than the parser goes
        return 422, ("The request body is nested too deeply to read (arrays or objects more than about 900 levels "
                     "deep): send flatter JSON."), invalid
    return None


def http_error_code(exc: Any) -> str:
    """The error code for a refusal the router makes itself (an unknown path, a wrong method)."""
    return {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")


def _only_text_parameters(operation: dict[str, Any]) -> bool:
    """Whether nothing the route reads can fail validation: no body, and path or query strings only."""
    def is_text(schema: dict[str, Any]) -> bool:
        return schema.get("type") == "string" or all(
            s.get("type") in ("string", "null") for s in schema.get("anyOf", [{"type": "object"}]))
    return "requestBody" not in operation and all(is_text(p.get("schema", {})) for p in operation.get("parameters", []))


def declare_only_sent_errors(app: Any) -> None:
    """FastAPI's spec gives every route with a parameter a 422 in FastAPI's own body, which these servers
    never send. Routes that can be refused declare their 422 in the server's shape; from routes whose
    parameters are all text, which nothing refuses, the undeclared one is dropped."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        spec = build()
        for operation in (op for ops in spec.get("paths", {}).values() for op in ops.values()):
            invalid = operation.get("responses", {}).get("422", {})
            if "HTTPValidationError" in str(invalid) and _only_text_parameters(operation):
                del operation["responses"]["422"]
        if "HTTPValidationError" not in str(spec.get("paths")):
            for name in ("HTTPValidationError", "ValidationError"):
                spec.get("components", {}).get("schemas", {}).pop(name, None)
        return spec

    app.openapi = openapi


class RequestSizeLimit:
    """Refuses a request body over ``max_bytes`` before it is read: by its Content-Length, or as its
    chunks arrive. A body's JSON is parsed on the event loop, so a huge one held every other client up.
    Plain ASGI; FastAPI turns the error raised while reading into a 400 whose cause is it, which each
    server's handler answers as a 413."""

    def __init__(self, app: Any, max_bytes: int, setting: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.setting = setting

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            if declared is not None and declared > self.max_bytes:
                raise self._too_large(declared)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._too_large(seen, at_least=True)
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self, size: int, *, at_least: bool = False) -> RequestTooLargeError:
        return RequestTooLargeError(
            f"The request body is {'over ' if at_least else ''}{size / 1e6:,.1f} MB; this server reads at most "
            f"{self.max_bytes / 1e6:,.1f} MB ({self.setting}). Send fewer or shorter texts per request.")


def _content_length(scope: Any) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
