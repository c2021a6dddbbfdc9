"""Bearer tokens, rotated without a restart.

Tokens come from ``serving.api_keys`` and from ``serving.api_keys_file``: one ``TOKEN`` or
``TOKEN EXPIRES`` (ISO 8601) per line (``#`` starts a comment at the start of a line or after a space),
re-read whenever the file changes. To rotate, add the new
token and give the old one an expiry: both work until then, the old one not after.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from unirank.errors import AuthenticationError, ConfigurationError

log = logging.getLogger(__name__)


class TokenStore:
    def __init__(self, keys: list[str], keys_file: Path | None) -> None:
        self._static: dict[str, datetime | None] = {k: None for k in static_keys(keys)}
        self._file = keys_file
        self._file_state: tuple[float, int] | None = None
        self._file_keys: dict[str, datetime | None] = {}
        self._missing_logged = False
        if keys_file is not None:  # at start there is no last good set to fall back on: it must read
            if not Path(keys_file).is_file():
                raise ConfigurationError(f"serving.api_keys_file {keys_file} does not exist: create it (one "
                                         "`TOKEN [EXPIRES]` a line) or unset it. Serving without it would refuse "
                                         "every request.")
            self._file_tokens(strict=True)
            self._refuse_only_expired_tokens()

    @property
    def enabled(self) -> bool:
        return bool(self._static) or self._file is not None

    def check(self, authorization: str | None) -> None:
        if not self.enabled:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("Missing bearer token: send `Authorization: Bearer <key>`.")
        now = datetime.now(timezone.utc)
        for known, expires in self._keys().items():
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                if expires is not None and now >= expires:
                    raise AuthenticationError("This token has expired (rotated out); use the new key.")
                return
        raise AuthenticationError("Invalid bearer token.")

    def _keys(self) -> dict[str, datetime | None]:
        return {**self._file_tokens(), **self._static}

    def _file_tokens(self, *, strict: bool = False) -> dict[str, datetime | None]:
        if self._file is None:
            return {}
        try:
            stat = os.stat(self._file)
        except FileNotFoundError:
            self._log_missing_once()
            return self._file_keys  # deleted, or mid-rotation: keep the last good set
        self._missing_logged = False
        state = (stat.st_mtime, stat.st_size)
        if state != self._file_state:
            self._file_state = state
            try:
                self._file_keys = parse_keys_file(read_keys_file(Path(self._file)))
            except ConfigurationError as exc:
                if strict:
                    raise
                # A typo made while rotating must not lock every client out: the last good set stays.
                # The message is whole sentences ("…to serve without keys."): this one follows it.
                log.error("%s Keeping the tokens read before until the file is fixed.", _sentence(str(exc)))
        return self._file_keys

    def _refuse_only_expired_tokens(self) -> None:
        """At start, a keys file whose every token has expired would refuse every request, as one holding none."""
        now = datetime.now(timezone.utc)
        if self._static or any(expires is None or expires > now for expires in self._file_keys.values()):
            return
        raise ConfigurationError(f"Every token in serving.api_keys_file {self._file} has expired, so every "
                                 "request would be refused: add a token (or a later expiry), or unset it to serve "
                                 "without keys.")

    def _log_missing_once(self) -> None:
        """Every request looks at the file: once a disappearance, not once a request."""
        if not self._missing_logged:
            self._missing_logged = True
            log.error("serving.api_keys_file %s is missing: put it back (one `TOKEN [EXPIRES]` a line). Keeping the "
                      "tokens read before until it is back.", self._file)


def static_keys(keys: list[str]) -> list[str]:
    """``serving.api_keys`` as clients send them (a bearer token is compared stripped, so a padded key could never
    match). A blank key is refused: it turned auth off in silence (``["$MODEL_KEY"]`` with the variable unset)."""
    keys = [key.strip() for key in keys]
    blank = [i for i, key in enumerate(keys) if not key]
    if blank:
        raise ConfigurationError(f"serving.api_keys entry {blank[0]} is empty (a variable that is not set?): give "
                                 "each key its text, or unset serving.api_keys to serve without keys.")
    return keys


def read_keys_file(path: Path) -> str:
    """The file's text: UTF-8, a byte-order mark (Notepad's "UTF-8 with BOM") dropped, as it is no part of the
    first token. Text that cannot be read is a ConfigurationError, handled as a file that does not parse."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"serving.api_keys_file {path} cannot be read as UTF-8 text ({exc}): save it as "
                                 "UTF-8, one `TOKEN [EXPIRES]` a line.") from None


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


#: A comment: ``#`` at the start of a line or after whitespace. One inside a token (``tok-a#b``) is part of it.
_COMMENT = re.compile(r"(?:^|\s)#.*")


def parse_keys_file(text: str) -> dict[str, datetime | None]:
    """The file's tokens and their expiry times; a file without one is refused (it would lock every client out),
    as is a line that cannot be read one way only: more than two fields, or a token listed before."""
    keys: dict[str, datetime | None] = {}
    line_of: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = _COMMENT.sub("", line).strip()
        if not line:
            continue
        token, *rest = line.split()
        if len(rest) > 1:  # a third field (a token written after the expiry) would be dropped unread
            raise ConfigurationError(f"api_keys_file line {number}: {len(rest) + 1} fields, where a line is "
                                     "`TOKEN [EXPIRES]`: put each token on a line of its own.")
        if token in line_of:  # the later line would win: an expiry added above the old line is lost
            raise ConfigurationError(f"api_keys_file lines {line_of[token]} and {number}: the same token twice; "
                                     "keep one line for it (with its expiry, if it has one).")
        line_of[token] = number
        keys[token] = _expiry(rest[0], number) if rest else None
    if not keys:
        raise ConfigurationError("api_keys_file holds no tokens, so every request would be refused: add one "
                                 "`TOKEN [EXPIRES]` a line, or unset serving.api_keys_file to serve without keys.")
    return keys


def _expiry(text: str, number: int) -> datetime:
    try:
        expires = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(f"api_keys_file line {number}: {text!r} is not an ISO 8601 time "
                                 "(e.g. 2026-12-01T00:00:00+00:00).") from None
    return expires if expires.tzinfo is not None else expires.replace(tzinfo=timezone.utc)
