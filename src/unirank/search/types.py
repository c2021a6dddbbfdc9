"""The records every search backend stores and returns: one results contract for all backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

MetadataScalar = str | int | float | bool
#: A list (front matter's ``tags: [a, b]``) matches a filter on any of its items, as a keyword array
#: does in Elasticsearch.
MetadataValue = MetadataScalar | list[MetadataScalar]
Metadata = dict[str, MetadataValue]
SearchMode = Literal["bm25", "knn", "hybrid"]


#: The version of a model given as a folder path: ``local-<digest of its files>``; indexes made before the
#: digest say ``local`` alone.
FOLDER_VERSION = "local"


def is_folder_version(version: str) -> bool:
    return version == FOLDER_VERSION or version.startswith(f"{FOLDER_VERSION}-")


@dataclass(frozen=True)
class ModelSignature:
    """What an index's vectors were made with; a query or write with other dims is refused."""

    name: str
    version: str
    dims: int

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass
class Chunk:
    """A passage of a document: the unit that is embedded, indexed and returned."""

    id: str
    doc_id: str
    source_uri: str
    ordinal: int
    text: str
    title: str = ""
    heading_path: tuple[str, ...] = ()
    page: int | None = None
    metadata: Metadata = field(default_factory=dict)

    def embedding_input(self) -> str:
        """Title and headings give a short passage its context, for the embedder and BM25 alike."""
        context = [part for part in (self.title, *self.heading_path) if part]
        # Avoid repeating a heading that is also the title.
        deduped = [p for i, p in enumerate(context) if p not in context[:i]]
        return "\n".join([" > ".join(deduped), self.text]) if deduped else self.text


@dataclass(frozen=True)
class SourceState:
    """What was ingested from one source file, so unchanged files are skipped next time."""

    uri: str
    content_hash: str
    size: int
    modified: str = ""
    chunk_count: int = 0
    #: How the file was parsed and chunked (``Ingestor.recipe``): one ingested another way (other chunk
    #: settings, another encoding setting, an older parser) is read again even when it is unchanged.
    recipe: str = ""


@dataclass
class IndexedSource:
    """One source's complete set of chunks and their vectors: written all or nothing."""

    state: SourceState
    chunks: list[Chunk]
    vectors: np.ndarray  # (len(chunks), dims), float32, L2-normalised


@dataclass
class Hit:
    chunk: Chunk
    score: float
    #: Each stage's score, e.g. {"bm25": 7.1, "knn": 0.62, "rrf": 0.031, "rerank": 4.2}.
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.chunk.id

    def to_dict(self) -> dict:
        c = self.chunk
        return {
            "id": c.id,
            "doc_id": c.doc_id,
            "score": self.score,
            "scores": self.scores,
            "title": c.title,
            "text": c.text,
            "source_uri": c.source_uri,
            "heading_path": list(c.heading_path),
            "page": c.page,
            "metadata": c.metadata,
        }


@dataclass
class SearchResults:
    query: str
    mode: SearchMode
    hits: list[Hit]
    reranked: bool = False
    #: True when reranking was asked for but failed, and the hits are the un-reranked ones.
    degraded: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: The model that embedded the query (``NAME@VERSION``); None for BM25, which needs none.
    embedder: str | None = None

    def to_dict(self) -> dict:
        return {
            "query": self.query,
            "mode": self.mode,
            "embedder": self.embedder,
            "reranked": self.reranked,
            "degraded": self.degraded,
            "timings_ms": self.timings_ms,
            "hits": [h.to_dict() for h in self.hits],
        }


@dataclass(frozen=True)
class IndexInfo:
    name: str
    model: ModelSignature
    chunk_count: int
    source_count: int
    backend: str
    created_at: str
    updated_at: str
    details: dict = field(default_factory=dict)
    #: The index this one re-embeds with another model (``eval``/``train`` make such copies): it is
    #: searchable by name, but never taken as the default index.
    copy_of: str | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "model": {"name": self.model.name, "version": self.model.version, "dims": self.model.dims},
            "chunk_count": self.chunk_count,
            "source_count": self.source_count,
            "backend": self.backend,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "copy_of": self.copy_of,
            **self.details,
        }
