"""Query path: embed the query, retrieve (bm25 | knn | hybrid), then rerank at most 50 candidates."""

from __future__ import annotations

import logging
import math
import os
import time
import unicodedata
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from unirank.errors import DimensionMismatchError, IndexChangedError, InvalidQueryError, RerankLimitError
from unirank.models.embedder import Embedder, require_comparable_vectors
from unirank.models.reranker import Reranker
from unirank.search.backend import SearchBackend, refuse_unknown_filter_keys
from unirank.search.blend import blended_order
from unirank.search.types import Hit, ModelSignature, SearchMode, SearchResults
from unirank.settings import MAX_RERANK_TOP_K, MAX_TOP_K, SearchSettings
from unirank.text import LONE_SURROGATE, is_blank

log = logging.getLogger(__name__)

MODES: tuple[SearchMode, ...] = ("bm25", "knn", "hybrid")
#: Gives the embedder to query an index made by the given model with (``Unirank.embedder_for``).
EmbedderFor = Callable[[ModelSignature], Embedder]
#: Searches made again when the index swaps to another model's vectors meanwhile (one swap is all a
#: rebuild makes; more means something rebuilds in a loop).
_SWAP_RETRIES = 2


class Searcher:
    def __init__(
        self,
        backend: SearchBackend,
        embedder: Embedder | EmbedderFor,
        reranker: Reranker | Callable[[], Reranker | None] | None,
        settings: SearchSettings,
        *,
        rerank_top_k: int = MAX_RERANK_TOP_K,
        rerank_by_default: bool = True,
    ) -> None:
        """``embedder`` may be a function of the index's model and ``reranker`` a loader, called the first
        time a search needs them: BM25 without reranking loads no model (a CLI search in bm25 mode takes
        0.5 s, not 6)."""
        self.backend = backend
        self._embedder = embedder
        self._reranker = reranker
        self.rerank_by_default = rerank_by_default
        self.settings = settings
        self.rerank_top_k = min(rerank_top_k, MAX_RERANK_TOP_K)

    def search(
        self,
        query: str,
        index: str,
        *,
        mode: SearchMode | None = None,
        top_k: int | None = None,
        rerank: bool | None = None,
        filters: Mapping[str, str] | None = None,
    ) -> SearchResults:
        mode = self.settings.mode if mode is None else mode  # "", 0 or False is a mistake, not the default
        top_k = self.settings.top_k if top_k is None else top_k
        rerank = self.rerank_by_default if rerank is None else rerank
        self._validate(query, index, mode, top_k, rerank, filters)  # loads the reranker on first use, before the clock
        # Fullwidth letters (a CJK input method's), ligatures and the like, as the models' vocabularies
        # spell them: "ｂａｃｋｕｐｓ" was a row of unknown tokens to the embedder and the reranker.
        asked, query = query, unicodedata.normalize("NFKC", query)
        filters = _as_stored(filters)
        lexical_only = mode == "hybrid" and self.settings.knn_weight == 0  # the query vector would weigh 0
        if mode != "bm25" and not lexical_only:  # the model is loaded on first use before the clock starts
            index_model = self.backend.model(index)
            chosen = index_model, self.embedder_for(index, index_model)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        depth = self.rerank_top_k if rerank else top_k
        if mode == "bm25" or lexical_only:
            embedder = None
            t = time.perf_counter()
            hits = self.backend.bm25(index, query, depth, filters) if mode == "bm25" else self._fused(
                index, query, None, depth, filters)
            timings["retrieve"] = _ms(t)
        else:
            embedder, hits = self._vector_search(query, index, mode, depth, filters, timings, chosen)
        if filters and not hits:  # a misspelt key matches nothing: said, not an empty result
            refuse_unknown_filter_keys(filters, self.backend.filter_keys(index))

        reranked = degraded = False
        if rerank and hits:
            t = time.perf_counter()
            try:
                hits = self._rerank(query, hits)
                reranked = True
            except Exception as exc:  # a remote or broken reranker must not take search down
                log.warning("reranker %s failed (%s: %s); returning the un-reranked %s results, marked degraded",
                            getattr(self._reranker, "name", "?"), type(exc).__name__, exc, mode)
                degraded = True
            timings["rerank"] = _ms(t)
        timings["total"] = _ms(started)
        return SearchResults(query=asked, mode=mode, hits=hits[:top_k], reranked=reranked,
                             degraded=degraded, timings_ms=timings,
                             embedder=str(embedder.signature) if embedder is not None else None)

    def _vector_search(self, query: str, index: str, mode: SearchMode, depth: int, filters: Mapping[str, str] | None,
                       timings: dict[str, float], chosen: tuple[ModelSignature, Embedder]) -> tuple[Embedder, list[Hit]]:
        """kNN or hybrid retrieval with the query embedded by the index's model. When `index rebuild` swaps
        the index to another model's vectors between the two steps, the search is made again with the new
        model: one model's query vector is never scored against another model's vectors."""
        index_model, embedder = chosen
        for attempt in range(_SWAP_RETRIES + 1):
            if attempt:
                index_model = self.backend.model(index)
                embedder = self.embedder_for(index, index_model)
            t = time.perf_counter()
            vector = embedder.embed_query(query)
            timings["embed"] = _ms(t)
            t = time.perf_counter()
            try:
                if mode == "knn":
                    hits = self.backend.knn(index, vector, depth, filters)
                else:
                    hits = self._fused(index, query, vector, depth, filters)
            except DimensionMismatchError:
                if attempt == _SWAP_RETRIES or self.backend.model(index) == index_model:
                    raise
                continue  # swapped to a model of other dims meanwhile
            timings["retrieve"] = _ms(t)
            if self.backend.model(index) == index_model:
                return embedder, hits
            log.info("index %s moved from %s to %s during a search; searching again", index, index_model,
                     self.backend.model(index))
        raise IndexChangedError(f"Index {index!r} was switched to another model's vectors {_SWAP_RETRIES + 1} "
                                "times during one search (an `index rebuild` loop?). Search again.")

    def _fused(self, index: str, query: str, vector: np.ndarray | None, depth: int,
               filters: Mapping[str, str] | None) -> list[Hit]:
        s = self.settings
        return self.backend.hybrid(index, query, vector, depth, filters, candidates=max(s.candidates, depth),
                                   rrf_k=s.rrf_k, bm25_weight=s.bm25_weight, knn_weight=s.knn_weight)

    def _validate(self, query: str, index: str, mode: str, top_k: int, rerank: bool,
                  filters: Mapping[str, str] | None) -> None:
        """Arguments of the wrong type are refused here, in words, rather than deep in a library."""
        if not isinstance(query, str):
            raise InvalidQueryError(f"The query must be text, got {type(query).__name__}.")
        if is_blank(query):  # a zero-width space passed .strip(), and kNN returned noise as results
            raise InvalidQueryError("The query is empty: give some words to search for.")
        if LONE_SURROGATE.search(query):
            raise InvalidQueryError("The query holds a lone surrogate (\\ud800-\\udfff), which is not text: "
                                    "decode the bytes it came from as UTF-8.")
        if not isinstance(index, str):
            raise InvalidQueryError(f"The index must be named by its name (text), got {type(index).__name__}.")
        if mode not in MODES:
            raise InvalidQueryError(f"Unknown search mode {mode!r}: use one of {', '.join(MODES)}.")
        if isinstance(top_k, bool) or not isinstance(top_k, int):
            raise InvalidQueryError(f"top_k must be a whole number, got {top_k!r}.")
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidQueryError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}.")
        if not isinstance(rerank, bool):
            raise InvalidQueryError(f"rerank must be True, False or None, got {rerank!r}.")
        if filters is not None and not (isinstance(filters, Mapping) and all(
                isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in filters.items())):
            raise InvalidQueryError(f"filters must map each key to one value (text or a number), e.g. "
                                    f"{{'category': 'account'}}; got {filters!r}.")
        source_uri = _trimmed(filters).get("source_uri", "") if filters is not None else ""
        if not isinstance(source_uri, str):  # read as a path below
            raise InvalidQueryError(f"The source_uri filter must be a path or URI (text), got {source_uri!r}.")
        _refuse_lone_surrogates(filters or {})
        if rerank:
            if top_k > self.rerank_top_k:
                raise RerankLimitError(top_k, self.rerank_top_k)
            if not self.backend.exists(index):  # said before the reranker takes seconds to load
                self.backend.info(index)
            if self.reranker is None:
                raise InvalidQueryError(
                    "Reranking was asked for but no reranker is configured: set reranker.model "
                    "(a cross-encoder, a registry ref, or `base`), or search without reranking (--no-rerank; "
                    "\"rerank\": false over HTTP)."
                )

    def embedder_for(self, index: str, index_model: ModelSignature | None = None) -> Embedder:
        """The embedder for ``index``'s queries, refused unless its vectors are comparable with the index's."""
        index_model = index_model or self.backend.model(index)
        embedder = self._embedder if hasattr(self._embedder, "embed_query") else self._embedder(index_model)
        require_comparable_vectors(index, index_model, embedder)  # type: ignore[arg-type]
        return embedder  # type: ignore[return-value]

    @property
    def reranker(self) -> Reranker | None:
        if callable(self._reranker) and not hasattr(self._reranker, "score"):
            self._reranker = self._reranker()
        return self._reranker  # type: ignore[return-value]

    @reranker.setter
    def reranker(self, value: Reranker | None) -> None:
        self._reranker = value

    def _rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        assert self.reranker is not None
        scores = list(self.reranker.score(query, [h.chunk.embedding_input() for h in hits]))
        # Checked before any hit is written: degraded results must carry no reranker score.
        if len(scores) != len(hits):
            raise ValueError(f"the reranker gave {len(scores)} scores for {len(hits)} passages")
        if not all(math.isfinite(score) for score in scores):  # a broken model's NaN orders nothing
            raise ValueError(f"the reranker gave scores that are not finite numbers: {scores[:5]}")
        for hit, score in zip(hits, scores, strict=True):
            hit.scores["rerank"] = score
        weight = getattr(self.reranker, "blend_weight", 1.0)
        ordered = blended_order(hits, scores, weight)
        for hit, blended in ordered:
            hit.score = hit.scores["rerank"] if weight >= 1.0 else blended
        return [hit for hit, _ in ordered]


def _refuse_lone_surrogates(filters: Mapping[str, str]) -> None:
    """A byte that is not UTF-8 in ``--filter`` (read with surrogateescape) reached tantivy and SQLite, which
    failed with a traceback. A ``source_uri`` given as a local path is exempt when it names a file's bytes:
    its file:// URI percent-encodes them."""
    for key, value in filters.items():
        if isinstance(value, str) and key.strip() == "source_uri" and "://" not in value and _is_fs_path(value):
            value = ""
        if LONE_SURROGATE.search(key) or (isinstance(value, str) and LONE_SURROGATE.search(value)):
            raise InvalidQueryError(f"The filter {key!r} holds a lone surrogate (\\ud800-\\udfff), which is not "
                                    "text: decode the bytes it came from as UTF-8.")


def _is_fs_path(value: str) -> bool:
    """Whether ``value`` is a path as the file system gives one (a byte that is not UTF-8 escaped)."""
    try:
        os.fsencode(value)
    except UnicodeEncodeError:
        return False
    return True


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


def _as_stored(filters: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """Keys and text values without the spaces around them, as the CLI's ``--filter key= value`` has them
    (" data " matched there and nothing over HTTP or in Python); and a ``source_uri`` given as a local path
    is the file:// URI it is stored as (percent-encoded): ``--filter source_uri=./docs/my file.md`` matches."""
    if filters is None:
        return None
    trimmed = _trimmed(filters)
    value = trimmed.get("source_uri")
    if not value or "://" in value:  # type: ignore[operator]
        return trimmed
    return {**trimmed, "source_uri": stored_source_uri(value)}  # type: ignore[arg-type]


def _trimmed(filters: Mapping[str, str]) -> dict[str, str]:
    """Keys and text values without the spaces around them; two keys that trim to one, or a key of only
    spaces, are refused (the last of two would win without a word)."""
    trimmed: dict[str, str] = {}
    for key, value in filters.items():
        name = key.strip()
        if not name:
            raise InvalidQueryError(f"A filter key is empty ({key!r}): name the metadata key to match, e.g. "
                                    "{'category': 'account'}.")
        if name in trimmed:
            raise InvalidQueryError(f"The filter key {name!r} is given twice (spaces around it aside): each key "
                                    "takes one value, and a result must match every filter.")
        trimmed[name] = value.strip() if isinstance(value, str) else value
    return trimmed


def stored_source_uri(value: str) -> str:
    """The URI a source is stored under: a URI as given, a local path as its (percent-encoded) file:// URI."""
    if "://" in value:
        return value
    # Absolute, not resolved through links: ingestion keeps a linked folder's path (docs/share/a.md).
    return Path(os.path.abspath(os.path.expanduser(value))).as_uri()
