"""unirank: one custom-trained model for document Q&A retrieval and semantic recommendations.

Names are imported on first use so ``import unirank.errors`` (or the CLI's ``--help``) stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Unirank": "unirank.api",
    "Settings": "unirank.settings",
    "IngestReport": "unirank.ingest.report",
    "Chunk": "unirank.search.types",
    "Hit": "unirank.search.types",
    "IndexInfo": "unirank.search.types",
    "ModelSignature": "unirank.search.types",
    "SearchResults": "unirank.search.types",
    "UnirankError": "unirank.errors",
    "ConfigurationError": "unirank.errors",
    "DimensionMismatchError": "unirank.errors",
    "EmbedderMismatchError": "unirank.errors",
    "IndexNotFoundError": "unirank.errors",
    "InvalidQueryError": "unirank.errors",
    "ParseError": "unirank.errors",
    "RerankLimitError": "unirank.errors",
    "SourceError": "unirank.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from unirank.api import Unirank
    from unirank.errors import (ConfigurationError, DimensionMismatchError, EmbedderMismatchError,
                                IndexNotFoundError, InvalidQueryError, ParseError, RerankLimitError, SourceError,
                                UnirankError)
    from unirank.ingest.report import IngestReport
    from unirank.search.types import Chunk, Hit, IndexInfo, ModelSignature, SearchResults
    from unirank.settings import Settings


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'unirank' has no attribute {name!r}")
