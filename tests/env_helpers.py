"""Keep the developer's UNIRANK_* settings out of a test.

pydantic-settings matches environment names ignoring case, so ``unirank_search__rrf_k`` is a setting
too: the prefix is compared upper-cased here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest

PREFIX = "UNIRANK_"


def is_unirank_setting(name: str) -> bool:
    """Whether pydantic-settings would read ``name`` as a unirank setting (any case)."""
    return name.upper().startswith(PREFIX)


def without_unirank_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` without its UNIRANK_* variables, for a subprocess's ``env``."""
    return {k: v for k, v in environ.items() if not is_unirank_setting(k)}


def clear_unirank_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Delete every UNIRANK_* variable from ``os.environ`` through ``monkeypatch`` (restored after)."""
    for name in [k for k in os.environ if is_unirank_setting(k)]:
        monkeypatch.delenv(name)
