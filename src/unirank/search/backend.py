"""The search backend contract. The embedded engine implements it; Elasticsearch/OpenSearch can too.

Writes are per source: all of a source's chunks land together or not at all. Hits come back with
their chunks hydrated and ``scores`` naming the stage that produced each score.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import unicodedata
from typing import Callable, Collection, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from unirank.errors import InvalidQueryError
from unirank.search.types import Chunk, Hit, IndexedSource, IndexInfo, ModelSignature, SourceState

Filters = Mapping[str, str]
#: The named sources as they are in the index now, with the new model's vectors (``rebuild``'s catch-up).
CatchUp = Callable[[Collection[str]], Iterable[Sequence[IndexedSource]]]

#: Names a new index may take on every backend: they are folder names, URL path segments and CLI words.
_INDEX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def unknown_filter_keys(filters: Mapping[str, str] | None, filter_keys: Collection[str]) -> list[str]:
    """A line for each filter whose key no passage has (a misspelt key matches nothing, silently)."""
    notes = []
    known = {unicodedata.normalize("NFC", k) for k in filter_keys}  # as keys are matched: "café" either way
    for key in [k for k in filters or {} if filter_keys and unicodedata.normalize("NFC", k) not in known]:
        close = difflib.get_close_matches(key, sorted(filter_keys), n=1)
        notes.append(f"No passage has the key {key!r}{f' (did you mean {close[0]!r}?)' if close else ''}; "
                     f"the keys there are: {', '.join(sorted(filter_keys))}.")
    return notes


def refuse_unknown_filter_keys(filters: Mapping[str, str] | None, filter_keys: Collection[str]) -> None:
    """Where no person reads a "no results" line (HTTP, ``--json``), a misspelt key is an error, not an
    empty result."""
    notes = unknown_filter_keys(filters, filter_keys)
    if notes:
        raise InvalidQueryError(" ".join(notes) + " Fix the filter's key, or drop it.")


#: Derived names stay within the 128 characters of ``_INDEX_NAME``, with room to spare.
_DERIVED_NAME_MAX = 120


def derived_index_name(*parts: str) -> str:
    """A valid name for an index unirank makes itself (``INDEX--MODEL-VERSION``): other characters become '-'.
    A name too long ends in a digest of the whole: cut short, a 120-character INDEX's copy was named INDEX
    itself (and replaced it), and two models' copies of a long INDEX shared one name."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", "--".join(parts)).lstrip("-_")
    if len(name) > _DERIVED_NAME_MAX:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = f"{name[:_DERIVED_NAME_MAX - len(digest) - 1]}-{digest}"
    return name or "index"


def refuse_path_like_index_name(index: str) -> None:
    """What no index can be named, even one made before the naming rule: empty, or a path (a separator, a
    leading dot, NUL), which would read or write outside the indexes' folder."""
    if not index or "/" in index or index.startswith(".") or "\\" in index or "\x00" in index:
        raise InvalidQueryError(f"Invalid index name {index!r}: use letters, digits, '-' and '_'.")


def require_valid_index_name(index: str) -> None:
    """Checked when an index is created (names made before the rule keep working)."""
    if not _INDEX_NAME.fullmatch(index):
        raise InvalidQueryError(f"Invalid index name {index!r}: use letters, digits, '-' and '_' (at most 128, "
                                "starting with a letter or digit).")


class SearchBackend(Protocol):
    name: str

    def create_index(self, index: str, model: ModelSignature, *, copy_of: str | None = None) -> IndexInfo:
        """Create an empty index for vectors of ``model``'s dimensions (``require_valid_index_name`` first).
        ``copy_of``: the index it re-embeds, kept in ``IndexInfo.copy_of`` (also across a rebuild)."""
        ...

    def info(self, index: str) -> IndexInfo:
        """Raises IndexNotFoundError when there is no such index."""
        ...

    def exists(self, index: str) -> bool: ...

    def model(self, index: str) -> ModelSignature:
        """The embedding model the index was built with (cheap: called on every query)."""
        ...

    def list_indexes(self) -> list[IndexInfo]:
        """Every index that can be read; a damaged one is left out (with a warning in the log), not raised:
        it must not hide the others."""
        ...

    def damaged_indexes(self) -> dict[str, str]:
        """Each index that exists but cannot be read, with why: what ``list_indexes`` leaves out, for the
        user to delete and ingest again."""
        ...

    def index_models(self) -> dict[str, ModelSignature]:
        """Each index's model, without opening (or repairing) the indexes: which models are still in use.
        An index whose model cannot be read is left out."""
        ...

    def delete_index(self, index: str) -> None:
        """Delete the index and all its versions. Raises :class:`IndexLockedError` while another process
        has writes in progress to it (an ingest between its batches), which the delete would break."""
        ...

    def source_states(self, index: str) -> dict[str, SourceState]:
        """What each ingested source looked like, for incremental re-ingestion."""
        ...

    def index(self, index: str, sources: Sequence[IndexedSource], *, model: ModelSignature | None = None) -> None:
        """Replace each source's chunks with the given ones. Checks dims before writing anything.

        ``model``: the index's model the caller checked its embedder against (``model(index)`` when it
        began, or the model it created the index with). Under the index's write lock, before anything of
        the write lands, a write whose ``model`` is no longer the index's (an ``index rebuild`` switched
        it to another model meanwhile, perhaps of the same size) is refused with IndexSwitchedError.
        None checks dims only."""
        ...

    def update_states(self, index: str, states: Sequence[SourceState]) -> None:
        """Record the size and change marker of sources re-read with their content unchanged (a touched
        file), so the next run skips them without reading; their chunks stay as they are."""
        ...

    def delete(self, index: str, source_uris: Sequence[str]) -> int:
        """Remove sources and their chunks; returns the number of chunks removed."""
        ...

    def iter_chunks(self, index: str, batch_size: int = 1000,
                    sources: Collection[str] | None = None) -> Iterator[list[Chunk]]:
        """Every chunk in the index (or of these ``sources`` only), in batches (training data, re-embedding
        into a new index); a source's chunks come together, so a re-embedding can write each source whole
        while holding one batch."""
        ...

    def documents_present(self, index: str, doc_ids: Collection[str]) -> set[str]:
        """Which of ``doc_ids`` have chunks in the index, without reading the chunks (checking an eval
        set's judgements against a large index)."""
        ...

    def filter_keys(self, index: str) -> set[str]:
        """The keys its chunks can be filtered by (their metadata's, ``doc_id``, ``source_uri``): to say
        which filter of a search that found nothing names a key no chunk has."""
        ...

    def flush(self, index: str) -> None:
        """Make everything written so far durable in every structure (end of an ingest run)."""
        ...

    def rebuild(self, index: str, sources: Iterable[Sequence[IndexedSource]], model: ModelSignature,
                catch_up: CatchUp) -> IndexInfo:
        """Write ``sources`` into a new version of ``index`` for ``model``, then switch the name to it
        atomically: searches see the old version until the new one is complete.

        Writes to ``index`` go on while ``sources`` are read; none may be lost. Before the switch, under
        the index's write lock, the new version drops the sources ``index`` no longer has and takes the
        ones whose state differs (added or re-ingested meanwhile) from ``catch_up(uris)``.

        One rebuild of an index at a time: a second is refused at once with RebuildRunningError. A failure
        in a library below (full-text or vector index, embedder) is raised as RebuildFailedError, with the
        index as it was."""
        ...

    def bm25(self, index: str, query: str, top_k: int, filters: Filters | None = None) -> list[Hit]: ...

    def knn(self, index: str, vector: np.ndarray, top_k: int, filters: Filters | None = None) -> list[Hit]: ...

    def hybrid(
        self,
        index: str,
        query: str,
        vector: np.ndarray | None,
        top_k: int,
        filters: Filters | None = None,
        *,
        candidates: int = 100,
        rrf_k: int = 60,
        bm25_weight: float = 1.0,
        knn_weight: float = 1.0,
    ) -> list[Hit]:
        """BM25 and kNN fused by weighted reciprocal rank; ``vector`` may be None when ``knn_weight`` is 0
        (the query is then not embedded at all)."""
        ...

    def close(self) -> None: ...
