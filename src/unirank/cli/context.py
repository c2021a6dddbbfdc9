"""What every command starts from: the settings, or a client on them, with bad settings reported once."""

from __future__ import annotations

from unirank.api import Unirank
from unirank.cli.output import fail
from unirank.errors import ConfigurationError, InvalidQueryError
from unirank.settings import Settings


def load_settings() -> Settings:
    try:
        return Settings.load()
    except ConfigurationError as exc:
        fail(exc)


def client(*, embedder_model: str | None = None) -> Unirank:
    """``embedder_model``: a command's ``--model``, over ``embedder.model``."""
    settings = load_settings()
    if embedder_model is not None:
        if not embedder_model.strip():
            fail(ConfigurationError("--model is empty: name a model (e.g. handbook-embed@prod), or leave it out."))
        settings.embedder.model = embedder_model
    return Unirank(settings)


FILTER_HELP = "key=value metadata filter (doc_id, source_uri or a metadata field); repeatable."


def parse_filters(values: list[str] | None) -> dict[str, str]:
    """``--filter key=value`` options, as search and the chat take them."""
    filters: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidQueryError(f"Filter {item!r} is not key=value.")
        if key in filters:  # the last would silently win
            raise InvalidQueryError(f"--filter {key} is given twice: each key takes one value, and a "
                                    "result must match every filter.")
        filters[key] = value.strip()
    return filters
