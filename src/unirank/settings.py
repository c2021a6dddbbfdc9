"""The one settings object: defaults < ``unirank.toml`` < ``UNIRANK_*`` environment variables.

Nested fields use a double underscore in the environment, e.g. ``UNIRANK_SEARCH__RRF_K=30``.
The TOML file is ``./unirank.toml`` unless ``UNIRANK_CONFIG`` names another.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

#: The most candidates a cross-encoder may rescore in one search.
MAX_RERANK_TOP_K = 50


class EmbedderSettings(BaseModel):
    #: ``base`` is the bundled all-MiniLM-L6-v2; otherwise a local path or a hub id.
    model: str = "base"
    batch_size: int = Field(64, ge=1)
    device: str = "cpu"
    #: Threads for embedding one query (0: torch's default). On a quiet 2-core machine two are
    #: faster for long queries (CISI p50 14 vs 21 ms); under load one is far steadier.
    query_threads: int = Field(0, ge=0)


class RerankerSettings(BaseModel):
    #: A cross-encoder folder, a registry ref (``NAME-rerank@prod``), a hub id, ``base`` (the
    #: bundled bi-encoder rescoring by cosine), or ``none``.
    model: str = "base"
    #: Rerank every search unless told not to. Off by default: the bundled base model is a
    #: bi-encoder and reranking with it lowers nDCG@10 (CISI: hybrid 0.444, +base rerank 0.419).
    enabled: bool = False
    #: How many fused candidates the reranker rescores.
    top_k: int = Field(MAX_RERANK_TOP_K, ge=1)
    batch_size: int = Field(32, ge=1)

    @field_validator("top_k")
    @classmethod
    def _at_most_limit(cls, value: int) -> int:
        if value > MAX_RERANK_TOP_K:
            raise ValueError(
                f"reranker.top_k is {value}, but at most {MAX_RERANK_TOP_K} candidates can be reranked"
            )
        return value


class ChunkingSettings(BaseModel):
    #: Tokens per chunk, counted with the embedder's own tokenizer.
    size: int = Field(512, ge=16)
    overlap: int = Field(64, ge=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> "ChunkingSettings":
        if self.overlap >= self.size:
            raise ValueError(f"chunking.overlap ({self.overlap}) must be smaller than chunking.size ({self.size})")
        return self


class IngestSettings(BaseModel):
    #: Chunks embedded and committed together; a killed run loses at most one batch of work.
    batch_chunks: int = Field(512, ge=1)


class SearchSettings(BaseModel):
    mode: Literal["bm25", "knn", "hybrid"] = "hybrid"
    top_k: int = Field(10, ge=1, le=1000)
    #: Reciprocal-rank-fusion constant: larger flattens the rank curve.
    rrf_k: int = Field(60, ge=1)
    bm25_weight: float = Field(1.0, ge=0)
    knn_weight: float = Field(1.0, ge=0)
    #: Candidates each retriever contributes to fusion.
    candidates: int = Field(100, ge=1, le=1000)
    #: HNSW search breadth; higher is more exact and slower.
    ef_search: int = Field(256, ge=8)


class StorageSettings(BaseModel):
    """Object storage (S3 and S3-compatible such as Alibaba OSS, MinIO)."""

    endpoint_url: str | None = None
    #: Endpoint for ``oss://`` URIs (e.g. https://oss-cn-hangzhou.aliyuncs.com).
    oss_endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str | None = None
    #: OSS wants virtual-hosted buckets; ``path`` suits local S3-compatible test servers.
    oss_addressing_style: Literal["virtual", "path"] = "virtual"


class BackendSettings(BaseModel):
    kind: Literal["embedded"] = "embedded"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="UNIRANK_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    #: Where indexes and models live.
    data_dir: Path = Path(".unirank")
    embedder: EmbedderSettings = EmbedderSettings()
    reranker: RerankerSettings = RerankerSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    ingest: IngestSettings = IngestSettings()
    search: SearchSettings = SearchSettings()
    storage: StorageSettings = StorageSettings()
    backend: BackendSettings = BackendSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("UNIRANK_CONFIG", "unirank.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_path))

    @property
    def indexes_dir(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"
