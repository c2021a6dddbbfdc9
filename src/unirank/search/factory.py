"""Choose the search backend named in settings."""

from __future__ import annotations

from unirank.search.backend import SearchBackend
from unirank.settings import Settings


def make_backend(settings: Settings) -> SearchBackend:
    if settings.backend.kind == "embedded":
        from unirank.search.embedded.backend import EmbeddedBackend

        return EmbeddedBackend(settings.indexes_dir, ef_search=settings.search.ef_search,
                               build_threads=settings.search.build_threads)
    raise NotImplementedError(settings.backend.kind)  # pragma: no cover - settings validate kind
