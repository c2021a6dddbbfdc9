"""``POST /v1/search``: the search layer over HTTP, with the results contract of ``unirank search --json``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from unirank.app.openai_format import FilterValue, RequestBody
from unirank.search.types import SearchMode
from unirank.settings import MAX_TOP_K


class SearchRequest(RequestBody):
    #: A misspelt option must not be searched without, and ``"rerank": "no"`` must not read as true.
    model_config = ConfigDict(extra="forbid", strict=True)

    #: "" is refused by the searcher as a blank query is (a 400), not by a 422 of its own.
    query: str
    #: The index to search; omitted: ``chat.index``, or the only index ("" is refused).
    index: str | None = None
    #: ``search.mode`` when omitted.
    mode: SearchMode | None = None
    #: ``search.top_k`` when omitted; at most ``reranker.top_k`` (50) when reranking.
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K)
    #: ``reranker.enabled`` when omitted.
    rerank: bool | None = None
    #: Only chunks whose metadata, ``doc_id`` or ``source_uri`` match every pair.
    filters: dict[str, FilterValue] | None = None


class SearchHit(BaseModel):
    id: str
    doc_id: str
    score: float
    #: Each stage's score: ``bm25``, ``knn``, ``rrf``, ``rerank``.
    scores: dict[str, float]
    title: str
    text: str
    source_uri: str
    heading_path: list[str]
    page: int | None
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    query: str
    mode: SearchMode
    #: The model that embedded the query (``NAME@VERSION``); null for BM25.
    embedder: str | None
    reranked: bool
    #: True when reranking was asked for and failed: the hits are the un-reranked ones.
    degraded: bool
    timings_ms: dict[str, float]
    hits: list[SearchHit]
