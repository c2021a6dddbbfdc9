"""The Python API: everything the CLI does, as plain method calls.

    from unirank import Unirank
    ur = Unirank()                      # settings from unirank.toml and UNIRANK_* env
    ur.ingest("docs/", index="handbook")
    for hit in ur.search("how do I rotate keys?", index="handbook").hits:
        print(hit.score, hit.chunk.title)
"""

from __future__ import annotations

import os
import threading
from functools import cached_property
from typing import Callable, Iterable, Iterator, Mapping, TypeVar

from unirank.errors import ConfigurationError, InvalidQueryError, SourceError
from unirank.ingest.pipeline import Ingestor, ProgressCallback
from unirank.ingest.report import IngestReport
from unirank.models.embedder import Embedder
from unirank.models.loading import index_model_settings, load_embedder, load_reranker
from unirank.models.reranker import Reranker
from unirank.search.backend import SearchBackend
from unirank.search.factory import make_backend
from unirank.search.searcher import Searcher, stored_source_uri
from unirank.search.types import IndexInfo, ModelSignature, SearchMode, SearchResults
from unirank.settings import Settings


class Unirank:
    """Models load on first use, so listing indexes or showing settings stays instant.

    ``Unirank()`` reads settings as the CLI does (defaults < ``unirank.toml`` < ``UNIRANK_*`` variables);
    to set some in code, pass ``Settings.load(data_dir=..., search={"mode": "bm25"})``, which puts them above
    those and checks them as the CLI does (``Settings(...)`` raises pydantic's own errors). Errors are
    :class:`unirank.UnirankError` subclasses whose messages say what to do. Use it as a context manager, or
    call :meth:`close`, to release the index files.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        if settings is not None and not isinstance(settings, Settings):  # a dict failed later, as an AttributeError
            raise ConfigurationError(f"settings must be a unirank.settings.Settings, got {type(settings).__name__}: "
                                     "build one with Settings.load(data_dir=..., search={...}), or pass none to "
                                     "read unirank.toml and UNIRANK_* variables.")
        self.settings = settings if settings is not None else Settings.load()
        self._index_embedders: dict[str, Embedder] = {}
        self._loading = threading.Lock()  # the app server searches from several threads

    @cached_property
    def backend(self) -> SearchBackend:
        return make_backend(self.settings)

    @cached_property
    def embedder(self) -> Embedder:
        return load_embedder(self.settings)

    def embedder_for(self, index_model: ModelSignature) -> Embedder:
        """The embedder that reads and extends an index made by ``index_model``: the configured one when
        ``embedder.model`` is set, else the index's own model when it loads here, so an index rebuilt with
        a tuned model needs no setting to be searched (as Elasticsearch's semantic_text fields keep their
        inference endpoint). Anything else is refused by the vector check that follows."""
        ref = str(index_model)
        cached = self._index_embedders.get(ref)  # one read: another thread may replace the dict meanwhile
        if cached is not None:  # a version's files never change: no registry lookup a search
            return cached
        own = index_model_settings(self.settings, index_model)
        if own is None:
            return self.embedder
        with self._loading:
            if ref not in self._index_embedders:
                # A server outlives rebuilds: a model no index is made by any more is let go, not kept.
                in_use = {str(model) for model in self.backend.index_models().values()}
                self._index_embedders = {r: e for r, e in self._index_embedders.items() if r in in_use}
                self._index_embedders[ref] = load_embedder(own)
            return self._index_embedders[ref]

    @cached_property
    def reranker(self) -> Reranker | None:
        if self.settings.reranker.model.lower() == "none":
            return None
        return load_reranker(self.settings, lambda: self.embedder)  # loaded only for a bi-encoder reranker

    @cached_property
    def searcher(self) -> Searcher:
        return Searcher(self.backend, self.embedder_for, lambda: self.reranker, self.settings.search,
                        rerank_top_k=self.settings.reranker.top_k,
                        rerank_by_default=self.settings.reranker.enabled)

    def ingest(self, source: str | os.PathLike[str], index: str, *, prune: bool = False,
               progress: ProgressCallback | None = None) -> IngestReport:
        """Parse, chunk, embed and index ``source`` (a folder, a file, or ``s3://`` / ``oss://`` URI) into
        ``index``, created on first use; unchanged files are skipped, and ``prune`` removes the documents of
        files gone from the source. ``progress(done, total, uri)`` is called after each file.

        Bad files do not raise: they are listed in ``report.failed``. A run that stops partway (a model
        endpoint that fails) returns what it committed with ``report.stopped`` saying why; check
        ``report.ok``. A bad source, index name or setting raises before anything is written."""
        source = _source_text(source)
        # As search's rerank: a truthy string ("false", "no") pruned, and a non-callable failed after the first file.
        if not isinstance(prune, bool):
            raise InvalidQueryError(f"prune must be True or False, got {prune!r}.")
        _check_progress(progress, "progress(done, total, uri)")

        self._make_indexes_dir()

        def embedder() -> Embedder:  # loaded once the source is listed: a typo there costs no model load
            return self.embedder_for(self.backend.model(index)) if self.backend.exists(index) else self.embedder

        ingestor = Ingestor(self.backend, embedder, self.settings.chunking, self.settings.storage,
                            self.settings.ingest)
        return ingestor.run(source, index, prune=prune, progress=progress)

    def _make_indexes_dir(self) -> None:
        """A data_dir that cannot be made (/proc/nope, a read-only mount) failed the ingest with a bare
        FileNotFoundError or PermissionError."""
        try:
            self.settings.indexes_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"data_dir {self.settings.data_dir} cannot be used: making {self.settings.indexes_dir} failed "
                f"({exc.strerror or exc}). Set data_dir (in unirank.toml, UNIRANK_DATA_DIR or Settings.load("
                "data_dir=...)) to a folder this user can write.") from None

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
        """The ``top_k`` best passages of ``index`` for ``query``: ``mode`` is ``bm25``, ``knn`` or
        ``hybrid`` (default ``search.mode``), ``rerank`` rescores ``reranker.top_k`` candidates (at most 50)
        with the reranker (default ``reranker.enabled``; a reranker that fails at search time gives the
        un-reranked results with ``degraded`` set), and ``filters`` keep passages whose metadata,
        ``doc_id`` or ``source_uri`` equals the value. Raises :class:`InvalidQueryError` for an empty
        query, a ``top_k`` outside 1-1000 or a filter key no passage has, and its subclass
        :class:`RerankLimitError` for a reranked ``top_k`` above ``reranker.top_k``."""
        return self.searcher.search(query, index, mode=mode, top_k=top_k, rerank=rerank, filters=filters)

    def list_indexes(self) -> list[IndexInfo]:
        """Every readable index, with its model, chunk and source counts (``damaged_indexes``: the others)."""
        return self.backend.list_indexes()

    def damaged_indexes(self) -> dict[str, str]:
        """Each index that exists but cannot be read, with why: ``list_indexes`` leaves these out so one
        damaged index does not hide the others; delete it and ingest again."""
        return self.backend.damaged_indexes()

    def index_info(self, index: str) -> IndexInfo:
        """One index's model and counts; :class:`IndexNotFoundError` names the ones there are."""
        return self.backend.info(index)

    def rebuild_index(self, index: str, model: str, progress: Callable[[str], None] | None = None) -> IndexInfo:
        """Re-embed ``index`` with ``model`` (e.g. ``cisi-embed@3``) into a new version and switch to it.
        An index ``model`` already made is left as it is, with no new version: its info is returned."""
        from unirank.search.rebuild import reembedded_sources, refuse_chunks_over_window

        # An empty model read as unset, i.e. `base`: the index was re-embedded with a model no one named.
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError(f"The model to re-embed {index!r} with (--model) is empty or not text "
                                     f"({model!r}): name one, e.g. handbook-embed@prod, a model folder, or base.")
        _check_progress(progress, "progress(message)")  # a TypeError once the model had loaded
        self.backend.info(index)  # a missing index is said before the model takes seconds to load
        settings = self.settings.model_copy(deep=True)
        settings.embedder.model = model
        embedder = load_embedder(settings)
        if self.backend.model(index) == embedder.signature:  # its vectors again, and the kept version dropped
            return self.backend.info(index)
        refuse_chunks_over_window(self.backend, index, embedder)
        sources = reembedded_sources(self.backend, index, embedder)
        if progress:  # once the rebuild has begun: a second one, refused, said it was re-embedding too
            sources = _announced(sources, lambda: progress(f"re-embedding {index} with {embedder.signature}"))
        return self.backend.rebuild(
            index, sources, embedder.signature,
            # what was ingested or removed meanwhile, taken in under the write lock just before the switch
            catch_up=lambda uris: reembedded_sources(self.backend, index, embedder, sources=uris))

    def sources_under(self, index: str, source: str | os.PathLike[str]) -> list[str]:
        """The ingested sources at or under ``source`` (a folder, file or object-storage prefix), which
        need not exist any more: a renamed folder's old documents are found by their old path."""
        from unirank.ingest.sources import DocumentSource

        source = _source_text(source)  # None was a raw AttributeError
        return DocumentSource(source, self.settings.storage).under(self.backend.source_states(index))

    def remove_sources(self, index: str, uris: Iterable[str]) -> int:
        """Remove these sources' chunks from ``index``: each a URI as ingested, or a local path (the
        file:// URI it was ingested as); returns how many chunks went. Raises :class:`SourceError`, removing
        nothing, if one is not in the index (as ``unirank index remove`` does); :meth:`sources_under` lists
        those at or under a folder."""
        wanted = _source_uris(uris)
        if wanted:
            held = self.backend.source_states(index)
            missing = [uri for uri in wanted if uri not in held]
            if missing:
                shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
                raise SourceError(f"Index {index!r} holds no documents from {shown}, so nothing was removed. "
                                  f"ur.sources_under({index!r}, FOLDER) lists the sources ingested from a folder, "
                                  "as they are stored.")
        removed = self.backend.delete(index, wanted)
        self.backend.flush(index)
        return removed

    def delete_index(self, index: str) -> None:
        """Delete the index and all its versions (no confirmation: the CLI asks). Raises
        :class:`IndexLockedError` while another process is ingesting into it: wait for that run, or stop it."""
        self.backend.delete_index(index)

    def close(self) -> None:
        """Release the index files and model connections; a search running in another thread finishes first.

        Not final: a later call opens what it needs again (as a closed file is opened again to read it)."""
        if "backend" in self.__dict__:
            self.backend.close()
        loaded = [self.__dict__.get("embedder"), self.__dict__.get("reranker"), *self._index_embedders.values()]
        for model in loaded:  # a remote model holds a connection pool
            close = getattr(model, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> "Unirank":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _source_text(source: object) -> str:
    """A folder, file or object-storage URI, as text; a path object is taken as its text."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str) or not source:
        raise SourceError(f"The source must be a folder, a file or an s3:// / oss:// URI, got {source!r}.")
    return source


_Item = TypeVar("_Item")


def _announced(items: Iterable[_Item], announce: Callable[[], None]) -> Iterator[_Item]:
    """``items``, with ``announce()`` called when the first is asked for: when the work has really begun."""
    announce()
    yield from items


def _check_progress(progress: object, called_as: str) -> None:
    """A progress callback that is not a function failed only when first called, after work was done."""
    if progress is not None and not callable(progress):
        raise InvalidQueryError(f"progress must be a function called as {called_as}, or None; got {progress!r}.")


def _source_uris(uris: object) -> list[str]:
    """Sources as stored: a lone string was read character by character, and a None or a number in the
    list matched nothing; both removed 0 chunks without a word."""
    if isinstance(uris, (str, bytes)) or not isinstance(uris, Iterable):
        raise InvalidQueryError(f"The sources to remove must be a list of URIs or paths, got "
                                f"{type(uris).__name__} {uris!r}" + (f": pass [{uris!r}] for one." if isinstance(
                                    uris, str) else "."))
    wanted = []
    for uri in uris:
        if isinstance(uri, os.PathLike):  # as ingest and sources_under take them
            uri = os.fspath(uri)
        if not isinstance(uri, str) or not uri.strip():
            raise InvalidQueryError(f"Each source to remove must be a URI or path (text or a path object), got "
                                    f"{uri!r}.")
        wanted.append(stored_source_uri(uri))
    return wanted
