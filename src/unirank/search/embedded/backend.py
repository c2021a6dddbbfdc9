"""The embedded default backend: SQLite (truth) + tantivy (BM25) + usearch (kNN), no server.

Layout: ``<root>/<name>/CURRENT`` names the live version folder (``v1``, ``v2``...), which holds
``chunks.sqlite``, ``fulltext/``, ``vectors.usearch`` and ``derived.json``. ``derived.json`` records
which store generation each derived index reflects, so a crash is repaired on the next open.

Three locks in ``<root>/<name>/``: ``.write.lock`` (one write at a time), ``.writers.lock`` (shared by
every process with writes not yet flushed: between its batches an ingest's vectors are legitimately
behind the store, so a reader repairs only when it can take this lock exclusively, i.e. no writer is
alive) and ``.rebuild.lock`` (one rebuild at a time). The last two are OS locks (flock), which the
system drops when their process dies: a killed writer or rebuild never leaves one behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Iterable, Iterator, Sequence, TypeVar

import numpy as np
from filelock import FileLock, Timeout

from unirank.errors import (DimensionMismatchError, IndexChangedError, IndexCorruptedError, IndexLockedError,
                            IndexNotFoundError, IndexSwitchedError, InvalidQueryError, RebuildFailedError, RebuildRunningError,
                            UnirankError)
from unirank.search.backend import CatchUp, Filters, refuse_path_like_index_name, require_valid_index_name
from unirank.search.embedded.fulltext import ANALYZER_VERSION, FullTextIndex
from unirank.search.embedded.store import ChunkStore, WriteOutcome, filter_term_set, filter_terms, source_groups
from unirank.search.embedded.vectors import VectorIndex
from unirank.search.fusion import fuse_ranked_ids
from unirank.search.types import Chunk, Hit, IndexedSource, IndexInfo, ModelSignature, SourceState

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no writer sessions or rebuild lock (repairs as before)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
_Derived = TypeVar("_Derived")

#: Below this many filter matches, filtered kNN is exact instead of oversampled ANN.
EXACT_FILTER_LIMIT = 20_000
LOCK_TIMEOUT_S = 30.0
#: Held shared by each process with unflushed writes; taken exclusively to repair.
WRITERS_LOCK = ".writers.lock"
#: derived.json of a version with nothing in it yet, tokenized by this version's analyzer.
_NOTHING_DERIVED = {"fulltext": 0, "vectors": 0, "analyzer": ANALYZER_VERSION}
#: Held exclusively by a rebuild from start to end; it holds the rebuilding process's pid.
REBUILD_LOCK = ".rebuild.lock"
#: A file name's limit in bytes on Linux and macOS file systems: an index is a folder of that name.
_LONGEST_FOLDER_NAME = 255
#: What CURRENT names: a version folder of the index.
_VERSION_FOLDER = re.compile(r"v[0-9]+")


@dataclass(frozen=True)
class _Lag:
    """What the vectors in memory lack of the store (``missing``, with their ``vectors``) and still hold of
    what it deleted, between two generations: (the store's, the vectors')."""
    generations: tuple[int, int]
    deleted: frozenset[int]
    missing: list[int]
    vectors: np.ndarray


@dataclass
class _Handle:
    version_dir: Path
    store: ChunkStore
    fulltext: FullTextIndex
    vectors: VectorIndex
    model: ModelSignature
    derived_mtime: float = 0.0
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: The store generation the vectors in memory hold: another process's writes are behind it.
    generation: int = 0
    #: The store file's identity: an index deleted and made again by another process has the same path.
    identity: tuple[int, int] = (0, 0)
    closed: bool = False
    #: The last lag found behind another process's unflushed writes: each query then diffed every key.
    lag: _Lag | None = None

    def lag_behind_store(self) -> _Lag | None:
        """None when the vectors in memory hold what the store does."""
        generations = (self.store.generation(), self.generation)
        if generations[0] == generations[1]:
            return None
        lag = self.lag
        if lag is None or lag.generations != generations:
            stored, held = self.store.keys(), self.vectors.keys()
            missing = sorted(stored - held)
            lag = self.lag = _Lag(generations, frozenset(held - stored), missing,
                                  self.store.vectors_by_key(missing, self.model.dims))
        return lag

    @property
    def derived_path(self) -> Path:
        return self.version_dir / "derived.json"

    def read_derived(self) -> dict[str, int]:
        try:
            return json.loads(self.derived_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {"fulltext": -1, "vectors": -1}

    def write_derived(self, **generations: int) -> None:
        state = {**self.read_derived(), **generations}
        tmp = self.derived_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.derived_path)
        self.derived_mtime = self.derived_path.stat().st_mtime

    def close(self) -> None:
        """Under the handle's lock: a search in another thread finishes first (closing the store under it
        crashed the process), and a search waiting for the lock sees ``closed`` and opens the index again."""
        with self.lock:
            self.closed = True
            self.fulltext.release()
            self.store.close()


class EmbeddedBackend:
    name = "embedded"

    def __init__(self, root: Path, *, ef_search: int = 128, build_threads: int = 1) -> None:
        self.root = Path(root)
        self.ef_search = ef_search
        self.build_threads = build_threads
        self._handles: dict[str, _Handle] = {}
        self._guard = threading.Lock()
        #: Index -> the descriptor holding its writers' lock (shared) while this backend has unflushed writes.
        self._sessions: dict[str, int] = {}

    def _vectors(self, path: Path, dims: int) -> VectorIndex:
        return VectorIndex(path, dims, ef_search=self.ef_search, build_threads=self.build_threads)

    # -- index lifecycle ------------------------------------------------------------------------
    def _index_dir(self, index: str) -> Path:
        if not isinstance(index, str):  # every call on an index comes here first: said, not a TypeError below
            raise InvalidQueryError(f"The index must be named by its name (text), got {type(index).__name__}.")
        refuse_path_like_index_name(index)
        if len(index.encode("utf-8", "surrogatepass")) > _LONGEST_FOLDER_NAME:  # no index can have it
            raise InvalidQueryError(f"Invalid index name {index[:40]!r}... ({len(index)} characters): index "
                                    "names are at most 128 characters.")
        return self.root / index

    def _lock(self, index: str) -> FileLock:
        return FileLock(str(self._index_dir(index) / ".write.lock"), timeout=LOCK_TIMEOUT_S)

    def exists(self, index: str) -> bool:
        return (self._index_dir(index) / "CURRENT").exists()

    def model(self, index: str) -> ModelSignature:
        return self._handle(index).model

    def create_index(self, index: str, model: ModelSignature, *, copy_of: str | None = None) -> IndexInfo:
        if not self.exists(index):
            require_valid_index_name(index)
        folder = self._index_dir(index)
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock(index):
            if not self.exists(index):
                version_dir = folder / "v1"
                shutil.rmtree(version_dir, ignore_errors=True)  # a create that crashed half-way
                version_dir.mkdir()
                store = ChunkStore(version_dir / "chunks.sqlite")
                store.init_meta(model, copy_of=copy_of)
                store.close()
                (version_dir / "derived.json").write_text(json.dumps(_NOTHING_DERIVED))
                tmp = folder / "CURRENT.tmp"
                tmp.write_text("v1")
                os.replace(tmp, folder / "CURRENT")
        return self.info(index)

    def delete_index(self, index: str) -> None:
        """Under the write lock, so no write or repair (here or in another process) has its files removed
        midway; and CURRENT goes under ``_guard``, so no handle of this process is being opened meanwhile
        (a search racing the delete got tantivy's raw "Failed to acquire Lockfile"). Refused while another
        process's ingest or rebuild is writing to it, which then died at its next batch ("does not exist")."""
        # A CURRENT that is empty, unreadable or names no version is what `index delete` is said to mend.
        with self._write_lock(index, require_current=False), self._no_other_writer(index):
            folder = self._index_dir(index)
            with self._guard:
                handle = self._handles.pop(index, None)
                try:
                    _remove_current(folder / "CURRENT")
                except FileNotFoundError:  # deleted by another process just before this took the lock
                    raise IndexNotFoundError(index, self._names()) from None
            if handle:
                handle.close()  # after the search it is in
            self._end_session(index)
            shutil.rmtree(folder, ignore_errors=True)

    @contextmanager
    def _no_other_writer(self, index: str) -> Iterator[None]:
        """Under the write lock, for a delete: the writers' lock exclusively, not waited for. Between its
        batches an ingest holds only that one (shared); this process's own unflushed writes go with the
        index. (A rebuild deleted meanwhile says the index does not exist, having written nothing.)"""
        if fcntl is None:  # pragma: no cover - Windows: no writer sessions
            yield
            return
        with self._guard:
            had_session = index in self._sessions
        self._end_session(index)  # this process's own shared lock would refuse the exclusive one
        fd = self._lock_file(index, WRITERS_LOCK)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if had_session:  # kept deleting nothing: its unflushed writes stay guarded from a repair
                    self._begin_session(index)  # still under the write lock, so no repair came in between
                raise IndexLockedError(index, "an ingest (or a removal of sources) in another process") from None
            yield
        finally:
            os.close(fd)  # drops the lock

    def list_indexes(self) -> list[IndexInfo]:
        infos = []
        for name in self._names():
            try:
                infos.append(self.info(name))
            except IndexNotFoundError:  # deleted meanwhile
                continue
            except IndexCorruptedError as exc:  # one damaged index must not hide the others
                log.warning("%s", exc)
        return infos

    def damaged_indexes(self) -> dict[str, str]:
        damaged = {}
        for name in self._names():
            try:
                self.info(name)  # a readable index stays open for the list that comes with it
            except IndexNotFoundError:  # deleted meanwhile
                continue
            except IndexCorruptedError as exc:
                damaged[name] = exc.cause
        return damaged

    def index_models(self) -> dict[str, ModelSignature]:
        """Read from each store's metadata, read-only: no index is opened or repaired for it."""
        models = {}
        for name in self._names():
            try:
                models[name] = self._stored_model(name)
            except (UnirankError, sqlite3.Error, OSError, KeyError, ValueError):  # gone or damaged: not in use
                continue
        return models

    def _stored_model(self, index: str) -> ModelSignature:
        version_dir = self._current_dir(index)
        handle = self._handles.get(index)
        if handle is not None and handle.version_dir == version_dir:
            return handle.model
        store = ChunkStore(version_dir / "chunks.sqlite", readonly=True)
        try:
            return store.model()
        finally:
            store.close()

    def info(self, index: str) -> IndexInfo:
        with self._reading(index) as handle:
            meta = handle.store.meta()
            chunks, sources = handle.store.counts()
            return IndexInfo(
                name=index,
                model=handle.model,
                chunk_count=chunks,
                source_count=sources,
                backend=self.name,
                created_at=meta["created_at"],
                updated_at=meta["updated_at"],
                details={"path": str(handle.version_dir), "generation": int(meta["generation"])},
                copy_of=meta.get("copy_of"),
            )

    def rebuild(self, index: str, sources: Iterable[Sequence[IndexedSource]], model: ModelSignature,
                catch_up: CatchUp) -> IndexInfo:
        self._current_dir(index)  # a missing index is said before a lock file is made for it
        with self._rebuild_lock(index):  # a second rebuild is refused here, before it touches a folder
            current = self._current_dir(index)
            folder = current.parent
            # A rebuild killed before its switch left its half-written version above the live one.
            for stale in _versions(folder):
                if _number(stale) > _number(current):
                    shutil.rmtree(stale, ignore_errors=True)
            new_dir = folder / f"v{max(_number(p) for p in _versions(folder)) + 1}"
            shutil.rmtree(new_dir, ignore_errors=True)
            handle: _Handle | None = None
            switched = False
            try:
                new_dir.mkdir()
                rebuilt = self.info(index)  # a new version of the same index: its copy_of and created_at stay
                store = ChunkStore(new_dir / "chunks.sqlite")
                store.init_meta(model, copy_of=rebuilt.copy_of, created_at=rebuilt.created_at)
                store.close()
                (new_dir / "derived.json").write_text(json.dumps(_NOTHING_DERIVED))
                handle = _Handle(version_dir=new_dir, store=ChunkStore(new_dir / "chunks.sqlite"),
                                 fulltext=FullTextIndex(new_dir / "fulltext"),
                                 vectors=self._vectors(new_dir / "vectors.usearch", model.dims),
                                 model=model)
                self._write_rebuilt(index, handle, sources)
                with self._write(index) as live:  # ingests wait from here to the switch
                    if not self.exists(index):
                        raise IndexNotFoundError(index, self._names())
                    now, built = live.store.source_states(), handle.store.source_states()
                    gone = [uri for uri in built if uri not in now]
                    if gone:
                        self._apply_derived(handle, handle.store.delete_sources(gone))
                    changed = [uri for uri, state in now.items() if built.get(uri) != state]
                    if changed:  # ingested (or ingested again) while the rest was re-embedded
                        self._write_rebuilt(index, handle, catch_up(changed))
                    handle.vectors.save()
                    handle.write_derived(vectors=handle.store.generation())
                    handle.close()
                    tmp = folder / "CURRENT.tmp"
                    tmp.write_text(new_dir.name)
                    os.replace(tmp, folder / "CURRENT")  # the atomic switch
                    switched = True
            except BaseException as exc:
                if handle is not None:
                    handle.close()
                if switched:  # interrupted after the switch (leaving the lock): new_dir is the live version
                    raise
                shutil.rmtree(new_dir, ignore_errors=True)
                if not self.exists(index):  # deleted meanwhile: its files went from under the new version
                    raise IndexNotFoundError(index, self._names()) from None
                if isinstance(exc, Exception) and not isinstance(exc, UnirankError):
                    # tantivy, usearch, SQLite or the embedder: said in words, not as a traceback
                    raise RebuildFailedError(
                        f"Rebuilding index {index!r} with {model} failed: {type(exc).__name__}: {exc}. The index "
                        f"is unchanged (the half-built version was removed); run the command again.") from exc
                raise
            for old in _versions(folder):
                if old not in (new_dir, current):
                    shutil.rmtree(old, ignore_errors=True)  # keep the previous version, drop older ones
        return self.info(index)

    def _lock_file(self, index: str, name: str) -> int:
        """A descriptor of one of the index folder's OS-lock files (made on first use), to flock."""
        return os.open(self._index_dir(index) / name, os.O_RDWR | os.O_CREAT, 0o644)

    @contextmanager
    def _rebuild_lock(self, index: str) -> Iterator[None]:
        """One rebuild of an index at a time: two picked the same new version folder, and each one's
        clean-up deleted the other's (a raw tantivy "Failed to acquire Lockfile" 40 s in). Not waited for:
        the second is refused at once, naming the first's process."""
        if fcntl is None:  # pragma: no cover - Windows
            yield
            return
        try:
            fd = self._lock_file(index, REBUILD_LOCK)
        except FileNotFoundError:  # deleted a moment ago
            raise IndexNotFoundError(index, self._names()) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RebuildRunningError(index, _read_pid(fd)) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _write_rebuilt(self, index: str, handle: _Handle, sources: Iterable[Sequence[IndexedSource]]) -> None:
        model = handle.model
        for batch in sources:
            for source in batch:
                if len(source.chunks) and source.vectors.shape[1] != model.dims:
                    raise DimensionMismatchError(index, str(model), model.dims, "the given vectors",
                                                 int(source.vectors.shape[1]))
            self._apply_derived(handle, handle.store.replace_sources(batch))

    # -- opening and repair ---------------------------------------------------------------------
    def _handle(self, index: str) -> _Handle:
        # A handle's own lock is never taken under ``_guard`` (a write holding it opens handles too).
        with self._guard:
            handle = stale = self._handles.get(index)
            if (handle is not None and not handle.closed and self._current_dir(index) == handle.version_dir
                    and _identity(handle.version_dir) == handle.identity):
                stale = None
            else:  # not open yet, the alias moved to a new version, or the index was made again
                handle = self._open(index)
                self._handles[index] = handle
        if stale is not None:
            stale.close()
        else:
            self._refresh_if_changed(handle)
        return handle

    @contextmanager
    def _reading(self, index: str) -> Iterator[_Handle]:
        """The index's handle, locked; one closed meanwhile (by ``close`` or a version switch) is opened again."""
        while True:
            handle = self._handle(index)
            with handle.lock:
                if not handle.closed:
                    with _said_as_damage(index):  # a page of the store found malformed while reading it
                        yield handle
                    return

    def _current_dir(self, index: str) -> Path:
        folder = self._index_dir(index)
        try:
            name = (folder / "CURRENT").read_text().strip()
        except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a file where a folder above it should be
            raise IndexNotFoundError(index, self._names()) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise IndexCorruptedError(index, f"its CURRENT file cannot be read ({exc})") from None
        if not _VERSION_FOLDER.fullmatch(name):  # emptied, it named the index folder itself; "../x" another's
            raise IndexCorruptedError(index, f"its CURRENT file names no version folder ({name[:40]!r})")
        return folder / name

    def _names(self) -> list[str]:
        return [p.name for p in sorted(self.root.iterdir()) if (p / "CURRENT").exists()] if self.root.exists() else []

    def _open(self, index: str) -> _Handle:
        version_dir = self._current_dir(index)
        try:
            if not (version_dir / "chunks.sqlite").is_file():
                raise IndexCorruptedError(index, f"its version folder {version_dir.name} has no chunks.sqlite")
            with _said_as_damage(index):
                return self._open_version(index, version_dir)
        except Exception:
            if (self._index_dir(index) / "CURRENT").exists():
                raise
            # Deleted by another process while this opened it: its files went from under the store, the
            # full-text index or the repair (tantivy's "Failed to acquire Lockfile ... NotFound").
            raise IndexNotFoundError(index, self._names()) from None

    def _open_version(self, index: str, version_dir: Path) -> _Handle:
        store = ChunkStore(version_dir / "chunks.sqlite")
        try:
            if "model_name" not in store.meta():  # an emptied file: SQLite reads it as a new, empty database
                raise IndexCorruptedError(index, "its chunks.sqlite holds no model record")
            model = store.model()
            handle = _Handle(
                version_dir=version_dir,
                store=store,
                fulltext=_readable_or_anew(index, [version_dir / "fulltext"],
                                           lambda: FullTextIndex(version_dir / "fulltext")),
                vectors=_readable_or_anew(index, [version_dir / "vectors.usearch", version_dir / "vectors.copies.npy"],
                                          lambda: self._vectors(version_dir / "vectors.usearch", model.dims)),
                model=model,
            )
        except BaseException:
            store.close()
            raise
        try:
            self._repair_if_free(index, handle)
        except BaseException:
            handle.close()
            raise
        if handle.derived_path.exists():
            handle.derived_mtime = handle.derived_path.stat().st_mtime
        handle.generation = handle.read_derived().get("vectors", -1)
        handle.identity = _identity(version_dir)
        return handle

    def _repair_if_free(self, index: str, handle: _Handle) -> None:
        """Repair under the write lock when no one holds it (else another process is writing: its state is
        read as committed)."""
        lock = self._lock(index)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("index %s is being written elsewhere; opening read-only state", index)
        else:
            try:
                if not (handle.version_dir.parent / "CURRENT").exists():  # deleted before this took the lock
                    raise IndexNotFoundError(index, self._names())
                with self._no_live_writer(index) as repairable:
                    if repairable:
                        self._repair(index, handle)
                    else:  # between an ingest's batches its vectors are behind the store until its flush
                        log.info("index %s has a writer mid-run; opening its committed state", index)
            finally:
                lock.release()

    @contextmanager
    def _no_live_writer(self, index: str) -> Iterator[bool]:
        """Under the write lock: whether no live process (this one included) has unflushed writes to
        ``index``, so that derived indexes behind the store mean a crash. While True, the writers' lock is
        held exclusively, so no writer begins until the block (a repair) ends."""
        mine = index in self._sessions  # not under ``_guard``: ``_open`` runs under it
        if fcntl is None or mine:
            yield not mine
            return
        try:
            fd = self._lock_file(index, WRITERS_LOCK)
        except OSError:  # a folder this process may not write: repair as before
            yield True
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                free = True
            except BlockingIOError:  # a live writer holds it shared
                free = False
            yield free
        finally:
            os.close(fd)  # drops the lock

    def _begin_session(self, index: str) -> None:
        """Under the write lock, before a write that leaves the vectors behind the store until ``flush``:
        hold the writers' lock shared (every writer may; a repair takes it exclusively, and only under
        the write lock, so this never waits). The system drops it if this process dies."""
        if fcntl is None:  # pragma: no cover - Windows
            return
        with self._guard:
            if index in self._sessions:
                return
        fd = self._lock_file(index, WRITERS_LOCK)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        with self._guard:
            extra = fd if index in self._sessions else None
            self._sessions.setdefault(index, fd)
        if extra is not None:
            os.close(extra)

    def _end_session(self, index: str) -> None:
        with self._guard:
            fd = self._sessions.pop(index, None)
        if fd is not None:
            os.close(fd)  # drops the lock

    def _repair(self, index: str, handle: _Handle) -> None:
        """Rebuild a derived index that is behind the store (the last run was killed), holds another
        number of chunks (indexes written before replaced chunks were deleted from the full-text index),
        or, for the full-text index, was tokenized by another version of the analyzer or holds filter terms
        derived by another version of ``filter_terms`` (which are derived again in the store first)."""
        generation = handle.store.generation()
        derived = handle.read_derived()
        chunks, _ = handle.store.counts()
        old_analyzer = derived.get("analyzer", 1) != ANALYZER_VERSION  # derived.json before versions: 1
        old_terms = not handle.store.filter_terms_current()
        if old_terms:
            handle.store.rederive_filter_terms()
        rebuild_fulltext = (old_analyzer or old_terms or derived.get("fulltext") != generation
                            or handle.fulltext.num_docs() != chunks)
        rebuild_vectors = derived.get("vectors") != generation or len(handle.vectors) != chunks
        if not (rebuild_fulltext or rebuild_vectors):
            return
        if (old_analyzer or old_terms) and not rebuild_vectors and derived.get("fulltext") == generation:
            log.info("index %s: re-indexing its full text for this version of unirank's analyzer and "
                     "filter terms", index)
        else:
            log.warning("index %s: derived indexes disagree with the store (a crash?); rebuilding", index)
        if rebuild_fulltext:
            handle.fulltext.clear()
        if rebuild_vectors:
            handle.vectors.clear()
        for rows in handle.store.iter_all():
            if rebuild_fulltext:
                handle.fulltext.apply([], [(k, c, filter_terms(c)) for k, c, _ in rows])
            if rebuild_vectors:
                handle.vectors.apply([], [k for k, _, _ in rows], np.stack([v for _, _, v in rows]))
        if rebuild_fulltext:
            handle.fulltext.commit()
        if rebuild_vectors:
            handle.vectors.save()
        handle.write_derived(fulltext=generation, vectors=generation, analyzer=ANALYZER_VERSION)

    def _refresh_if_changed(self, handle: _Handle) -> None:
        """Pick up another process's committed writes."""
        try:
            mtime = handle.derived_path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == handle.derived_mtime:
            return
        with handle.lock:
            if not handle.closed and mtime != handle.derived_mtime and not handle.vectors.dirty:
                handle.fulltext.reload()
                handle.vectors = self._vectors(handle.vectors.path, handle.model.dims)
                handle.derived_mtime = mtime
                handle.generation = handle.read_derived().get("vectors", -1)

    @staticmethod
    def _catch_up(handle: _Handle) -> None:
        """Under the write lock, before writing: take in what another process wrote since this handle's
        vectors were read. Vectors are saved at flush, so without this two ingests into one index at once
        each saved only their own, and the last flush dropped the other's from kNN."""
        lag = handle.lag_behind_store()
        if lag is None:
            return
        handle.vectors.apply(sorted(lag.deleted), lag.missing, lag.vectors)
        handle.fulltext.reload()
        handle.generation = lag.generations[0]

    # -- writes ---------------------------------------------------------------------------------
    def source_states(self, index: str) -> dict[str, SourceState]:
        with self._reading(index) as handle:
            return handle.store.source_states()

    def index(self, index: str, sources: Sequence[IndexedSource], *, model: ModelSignature | None = None) -> None:
        self._check_write(index, self.model(index), sources, model)
        if not sources:
            return
        with self._write(index) as handle:
            # Again under the lock: an `index rebuild` may have switched the index to another model (of the
            # same size, as a tuned version of the base is) since the check above or the caller's own.
            self._check_write(index, handle.model, sources, model)
            self._begin_session(index)
            outcome = handle.store.replace_sources(sources)
            self._apply_derived(handle, outcome)

    @staticmethod
    def _check_write(index: str, index_model: ModelSignature, sources: Sequence[IndexedSource],
                     model: ModelSignature | None) -> None:
        if model is not None and model != index_model:
            raise IndexSwitchedError(index, model, index_model)
        for source in sources:
            if source.vectors.ndim != 2 or len(source.vectors) != len(source.chunks):
                raise ValueError(f"{source.state.uri}: {len(source.chunks)} chunks but vectors of shape "
                                 f"{source.vectors.shape}")
            if len(source.chunks) and source.vectors.shape[1] != index_model.dims:
                raise DimensionMismatchError(index, str(index_model), index_model.dims,
                                             "the given vectors", int(source.vectors.shape[1]))

    def update_states(self, index: str, states: Sequence[SourceState]) -> None:
        if not states:
            return
        with self._write(index) as handle:
            handle.store.update_states(states)

    def delete(self, index: str, source_uris: Sequence[str]) -> int:
        if not source_uris:
            self._handle(index)  # a missing index is said all the same
            return 0
        with self._write(index) as handle:
            self._begin_session(index)
            outcome = handle.store.delete_sources(source_uris)
            self._apply_derived(handle, outcome)
        return len(outcome.removed_keys)

    def iter_chunks(self, index: str, batch_size: int = 1000,
                    sources: Collection[str] | None = None) -> Iterator[list[Chunk]]:
        # A page at a time under the handle's lock, not the whole walk: a caller embeds each page (for
        # minutes) and must not hold up searches, and a handle closed meanwhile is opened again.
        version_dir = None
        for group in source_groups(sources):
            last = -1
            while True:
                with self._reading(index) as handle:
                    version_dir = version_dir or handle.version_dir
                    if handle.version_dir != version_dir:  # keys of one version mean nothing in another
                        raise IndexChangedError(
                            f"Index {index!r} was switched to a new version (an `index rebuild`?) while its chunks "
                            "were read. Run the command again.")
                    rows = handle.store.page(last, batch_size, group)
                if not rows:
                    break
                yield [chunk for _, chunk, _ in rows]
                last = rows[-1][0]

    def documents_present(self, index: str, doc_ids: Collection[str]) -> set[str]:
        with self._reading(index) as handle:
            return handle.store.documents_present(doc_ids)

    def filter_keys(self, index: str) -> set[str]:
        with self._reading(index) as handle:
            return handle.store.filter_keys()

    def flush(self, index: str) -> None:
        with self._write(index) as handle:
            if handle.vectors.dirty:
                handle.vectors.save()
            handle.write_derived(vectors=handle.store.generation())
            self._end_session(index)  # nothing of this process's is behind any more

    @contextmanager
    def _write(self, index: str) -> Iterator[_Handle]:
        """The cross-process write lock, then the index's handle, locked and caught up with what other
        processes wrote; a handle closed meanwhile is opened again."""
        with self._write_lock(index), self._reading(index) as handle:
            self._catch_up(handle)
            yield handle

    @contextmanager
    def _write_lock(self, index: str, *, require_current: bool = True) -> Iterator[None]:
        """The cross-process write lock of an index that exists; with ``require_current=False`` (a delete)
        its CURRENT need only be there, not readable."""
        # A missing index is said before the lock: taking it makes the lock file's folder, a stray index folder.
        if require_current:
            self._current_dir(index)
        elif not self.exists(index):
            raise IndexNotFoundError(index, self._names())
        lock = self._lock(index)
        try:
            lock.acquire()
        except Timeout:
            raise IndexLockedError(index) from None
        except FileNotFoundError:  # deleted while this waited: the lock file went with its folder
            raise IndexNotFoundError(index, self._names()) from None
        try:
            yield
        finally:
            lock.release()

    @staticmethod
    def _apply_derived(handle: _Handle, outcome: WriteOutcome) -> None:
        handle.generation = outcome.generation
        handle.fulltext.apply(
            outcome.removed_keys, [(k, c, filter_terms(c)) for k, c, _ in outcome.added]
        )
        handle.fulltext.commit()
        handle.write_derived(fulltext=outcome.generation)
        keys = [k for k, _, _ in outcome.added]
        vectors = np.stack([v for _, _, v in outcome.added]) if keys else np.zeros((0, handle.model.dims))
        # The vector index is saved by flush(); until then derived.json says it is behind.
        handle.vectors.apply(outcome.removed_keys, keys, vectors)

    # -- search ---------------------------------------------------------------------------------
    def _hydrate(self, handle: _Handle, scored: Sequence[tuple[int, float]], stage: str) -> list[Hit]:
        chunks = handle.store.chunks_by_key([k for k, _ in scored])
        return [Hit(chunk=chunks[k], score=s, scores={stage: s}) for k, s in scored if k in chunks]

    def bm25(self, index: str, query: str, top_k: int, filters: Filters | None = None) -> list[Hit]:
        with self._reading(index) as handle:
            return self._hydrate(handle, self._bm25_keys(handle, query, top_k, filters), "bm25")

    def knn(self, index: str, vector: np.ndarray, top_k: int, filters: Filters | None = None) -> list[Hit]:
        with self._reading(index) as handle:
            return self._hydrate(handle, self._knn_keys(handle, index, vector, top_k, filters), "knn")

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
        """Fuses chunk keys first and reads only the fused top_k chunks from the store."""
        depth = max(candidates, top_k)
        with self._reading(index) as handle:
            lexical = self._bm25_keys(handle, query, depth, filters) if bm25_weight > 0 else []
            if knn_weight > 0 and vector is None:
                raise InvalidQueryError("hybrid search with a kNN weight above 0 needs the query vector.")
            semantic = self._knn_keys(handle, index, vector, depth, filters) if knn_weight > 0 else []
            fused = fuse_ranked_ids([("bm25", lexical, bm25_weight), ("knn", semantic, knn_weight)],
                                    k=rrf_k, top_k=top_k)
            chunks = handle.store.chunks_by_key([key for key, _, _ in fused])
            return [Hit(chunk=chunks[key], score=score, scores=scores) for key, score, scores in fused
                    if key in chunks]

    def _bm25_keys(self, handle: _Handle, query: str, top_k: int, filters: Filters | None) -> list[tuple[int, float]]:
        return handle.fulltext.search(query, top_k, filter_term_set(filters or {}))

    def _knn_keys(self, handle: _Handle, index: str, vector: np.ndarray, top_k: int,
                  filters: Filters | None) -> list[tuple[int, float]]:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != handle.model.dims:
            raise DimensionMismatchError(index, str(handle.model), handle.model.dims,
                                         "the query vector", int(vector.shape[0]))
        if not filters:
            return self._ann(handle, vector, top_k)
        return self._filtered_knn(handle, vector, top_k, filters)

    @staticmethod
    def _ann(handle: _Handle, vector: np.ndarray, top_k: int) -> list[tuple[int, float]]:
        """The ANN index's top_k of what the store holds. While another process's ingest is between its
        batches the vector file is saved only at its flush, so it lacks the chunks written since and still
        holds the ones they replaced: those are fetched past, and the missing ones scored exactly."""
        lag = handle.lag_behind_store()
        if lag is None:
            return handle.vectors.search(vector, top_k)
        found = [(k, s) for k, s in handle.vectors.search(vector, top_k + len(lag.deleted)) if k not in lag.deleted]
        if lag.missing:
            found += _cosine_scores(lag.vectors, lag.missing, vector)
        return sorted(found, key=lambda hit: -hit[1])[:top_k]

    def _filtered_knn(self, handle: _Handle, vector: np.ndarray, top_k: int,
                      filters: Filters) -> list[tuple[int, float]]:
        allowed = handle.store.keys_matching(filters)
        if not allowed:
            return []
        if len(allowed) > EXACT_FILTER_LIMIT:
            wide = self._ann(handle, vector, top_k * 10)
            kept = [(k, s) for k, s in wide if k in allowed][:top_k]
            if len(kept) == top_k:
                return kept
        keys = sorted(allowed)
        sims = handle.store.vectors_by_key(keys, handle.model.dims) @ vector
        order = np.argsort(-sims)[:top_k]
        return [(keys[i], float(sims[i])) for i in order]

    def close(self) -> None:
        with self._guard:
            handles = list(self._handles.values())
            self._handles.clear()
        for handle in handles:  # each waits for the search it is in to finish
            handle.close()
        for index in list(self._sessions):  # unflushed writes are gone with the handles: a reader may repair
            self._end_session(index)


@contextmanager
def _said_as_damage(index: str) -> Iterator[None]:
    """SQLite's "database disk image is malformed" / "file is not a database" as an IndexCorruptedError.
    OperationalError (locked, unable to open, I/O) is no damage to the file and goes through as it is."""
    try:
        yield
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as exc:
        raise IndexCorruptedError(index, f"SQLite: {exc}") from exc


def _readable_or_anew(index: str, paths: Sequence[Path], open_derived: Callable[[], _Derived]) -> _Derived:
    """A derived file its library cannot read (truncated, overwritten) is moved aside as NAME.broken and opened
    empty: the repair then rebuilds it from chunks.sqlite, as it does a missing one. An OSError (I/O,
    permissions) is no damage to the file and goes through as it is."""
    try:
        return open_derived()
    except (RuntimeError, ValueError) as exc:
        log.warning("index %s: its %s cannot be read (%s); rebuilding it from the store", index, paths[0].name, exc)
        try:
            for path in paths:
                _move_aside(path)
        except OSError as move_exc:
            raise IndexCorruptedError(index, f"its {paths[0].name} cannot be read ({exc}) nor moved aside "
                                             f"({move_exc})") from exc
        return open_derived()


def _move_aside(path: Path) -> None:
    broken = path.with_name(path.name + ".broken")
    if broken.is_dir():  # the last one moved aside: os.replace cannot overwrite a folder
        shutil.rmtree(broken)
    if path.exists():
        os.replace(path, broken)


def _remove_current(current: Path) -> None:
    """CURRENT goes first, so the index is gone at once; a folder there (made by hand) goes whole."""
    if current.is_dir() and not current.is_symlink():
        shutil.rmtree(current)
    else:
        current.unlink()


def _cosine_scores(vectors: np.ndarray, keys: Sequence[int], query: np.ndarray) -> list[tuple[int, float]]:
    """As the ANN index scores (1 - cosine distance), so the two rank together."""
    norms = np.linalg.norm(vectors, axis=1) * (np.linalg.norm(query) or 1.0)
    sims = (vectors @ query) / np.where(norms == 0, 1.0, norms)
    return [(key, float(sim)) for key, sim in zip(keys, sims)]


def _number(version_dir: Path) -> int:
    return int(version_dir.name[1:])


def _versions(folder: Path) -> list[Path]:
    """The version folders (``v1``, ``v2``...) of an index folder."""
    return [p for p in folder.glob("v[0-9]*") if p.is_dir() and _VERSION_FOLDER.fullmatch(p.name)]


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _identity(version_dir: Path) -> tuple[int, int]:
    try:
        stat = (version_dir / "chunks.sqlite").stat()
    except FileNotFoundError:
        return (0, 0)
    return (stat.st_dev, stat.st_ino)
