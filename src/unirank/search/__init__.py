"""The search layer: one backend Protocol, an embedded default, hybrid fusion and reranking."""

from unirank.search.backend import SearchBackend
from unirank.search.searcher import Searcher
from unirank.search.types import Chunk, Hit, IndexInfo, ModelSignature, SearchResults

__all__ = ["Chunk", "Hit", "IndexInfo", "ModelSignature", "SearchBackend", "SearchResults", "Searcher"]
