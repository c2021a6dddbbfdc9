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
    "ChatService": "unirank.chat",
    "ChatAnswer": "unirank.chat",
    "Citation": "unirank.chat",
    "ConversationStore": "unirank.chat",
    "ModelRegistry": "unirank.registry",
    # every error a method of the classes above raises
    "UnirankError": "unirank.errors",
    "ConfigurationError": "unirank.errors",
    "IndexNotFoundError": "unirank.errors",
    "DimensionMismatchError": "unirank.errors",
    "EmbedderMismatchError": "unirank.errors",
    "ChunksTooLongError": "unirank.errors",
    "RerankLimitError": "unirank.errors",
    "InvalidQueryError": "unirank.errors",
    "SourceError": "unirank.errors",
    "ExportError": "unirank.errors",
    "ParseError": "unirank.errors",
    "UnsupportedFormatError": "unirank.errors",
    "DuplicateDocumentError": "unirank.errors",
    "ModelLoadError": "unirank.errors",
    "ModelNotFoundError": "unirank.errors",
    "PromotionRefusedError": "unirank.errors",
    "RegistrationError": "unirank.errors",
    "InvalidModelReferenceError": "unirank.errors",
    "AliasInUseError": "unirank.errors",
    "AliasMovedError": "unirank.errors",
    "LeakageError": "unirank.errors",
    "EvaluationDataError": "unirank.errors",
    "TrainingError": "unirank.errors",
    "TrainingRunningError": "unirank.errors",
    "IndexLockedError": "unirank.errors",
    "IndexChangedError": "unirank.errors",
    "IndexCorruptedError": "unirank.errors",
    "IndexSwitchedError": "unirank.errors",
    "RebuildRunningError": "unirank.errors",
    "RebuildFailedError": "unirank.errors",
    "RemoteModelError": "unirank.errors",
    "InputRefusedError": "unirank.errors",
    "AnswererError": "unirank.errors",
    "ConversationNotFoundError": "unirank.errors",
    "ConversationStoreClosedError": "unirank.errors",
    "OptimizationRefusedError": "unirank.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from unirank.api import Unirank
    from unirank.chat import ChatAnswer, ChatService, Citation, ConversationStore
    from unirank.errors import (
        AliasInUseError, AliasMovedError, AnswererError, ChunksTooLongError, ConfigurationError, ConversationNotFoundError, ConversationStoreClosedError,
        DimensionMismatchError, DuplicateDocumentError, EmbedderMismatchError, EvaluationDataError, ExportError,
        IndexChangedError, IndexCorruptedError, IndexLockedError, IndexNotFoundError, IndexSwitchedError, InputRefusedError,
        InvalidModelReferenceError, InvalidQueryError, LeakageError, ModelLoadError, ModelNotFoundError, OptimizationRefusedError, ParseError,
        PromotionRefusedError, RebuildFailedError, RegistrationError, RebuildRunningError, RemoteModelError, RerankLimitError,
        SourceError, TrainingError, TrainingRunningError,
        UnirankError, UnsupportedFormatError,
    )
    from unirank.ingest.report import IngestReport
    from unirank.registry import ModelRegistry
    from unirank.search.types import Chunk, Hit, IndexInfo, ModelSignature, SearchResults
    from unirank.settings import Settings


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'unirank' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The lazily imported names too, so ``dir(unirank)`` and editors' completion list them."""
    return sorted({*globals(), *_EXPORTS})
