"""Ingestion: list -> read -> hash -> parse -> chunk -> embed -> write, incrementally.

Files are embedded in batches across files (the embedder is the cost), and each batch is
written in one transaction, so a run killed at any point leaves the last committed batch
readable and a re-run finishes the rest without duplicates.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import PurePosixPath
from typing import Callable

from unirank.errors import (DimensionMismatchError, DuplicateDocumentError, EmbedderMismatchError, IndexSwitchedError,
                            InputRefusedError, ParseError, SourceError, UnirankError)
from unirank.ingest.chunking import Chunker
from unirank.ingest.parsers import PARSER_VERSION, SUPPORTED_EXTENSIONS, TEXT_EXTENSIONS, parse_document
from unirank.ingest.report import IngestInterrupted, IngestReport
from unirank.ingest.sources import DocumentSource, SourceFile
from unirank.ingest.uris import at_or_under, local_path, uri_path
from unirank.models.embedder import Embedder, loaded, require_comparable_vectors
from unirank.search.backend import SearchBackend, require_valid_index_name
from unirank.search.types import Chunk, IndexedSource, ModelSignature, SourceState
from unirank.settings import ChunkingSettings, IngestSettings, StorageSettings

log = logging.getLogger(__name__)

#: Called as progress(files_done, files_total, uri) after each file.
ProgressCallback = Callable[[int, int, str], None]


@dataclass
class _Pending:
    state: SourceState
    chunks: list[Chunk]
    #: What the index held for the file before this run (None: not indexed).
    previous: SourceState | None = None


class Ingestor:
    def __init__(
        self,
        backend: SearchBackend,
        embedder: Embedder | Callable[[], Embedder],
        chunking: ChunkingSettings,
        storage: StorageSettings | None = None,
        ingest: IngestSettings | None = None,
    ) -> None:
        """``embedder`` may be a loader, called once the source is listed and the index name checked: a
        typo in either is said in a second, not after the model's load."""
        self.backend = backend
        self._embedder = embedder
        self.chunking = chunking
        self.storage = storage or StorageSettings()
        self.ingest = ingest or IngestSettings()
        #: The model of the index this run makes at its first commit, and whether it made it.
        self._to_create: ModelSignature | None = None
        self._created = False
        #: The index's model this run's vectors were checked against: each write carries it, and the
        #: backend refuses it once an `index rebuild` has switched the index to another model.
        self._index_model: ModelSignature | None = None
        #: Files re-read with their content unchanged (touched): their new size and marker to store.
        self._touched: list[SourceState] = []

    @cached_property
    def embedder(self) -> Embedder:
        return loaded(self._embedder)

    @cached_property
    def _chunker_and_warnings(self) -> tuple[Chunker, list[str]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            chunker = Chunker(self.embedder.tokenizer, self.embedder.max_seq_length,
                              size=self.chunking.size, overlap=self.chunking.overlap)
        return chunker, [str(w.message) for w in caught]

    @property
    def chunker(self) -> Chunker:
        return self._chunker_and_warnings[0]

    @property
    def chunker_warnings(self) -> list[str]:
        """A chunk size clamped to the model's window, said in the report."""
        return self._chunker_and_warnings[1]

    def run(self, source: str, index: str, *, prune: bool = False,
            progress: ProgressCallback | None = None) -> IngestReport:
        started = time.perf_counter()
        docs = DocumentSource(source, self.storage)
        files = docs.list()  # a missing folder or bad credentials fail here, before any write
        existed = self.backend.exists(index)
        if not any(_is_document(f) for f in files):
            self._refuse_no_documents(docs, index, files, existed=existed, prune=prune)
        if not existed:
            require_valid_index_name(index)
        loading = time.perf_counter()
        _ = self.chunker  # the model loads here: its seconds are not the ingest's
        started += time.perf_counter() - loading
        self._check_model(index, existed)
        report = IngestReport(source=source, index=index, warnings=list(self.chunker_warnings))
        states = self.backend.source_states(index) if existed else {}
        files = docs.as_indexed(files, states)
        report.files_seen = len(files)
        self._source, self._gone = docs.shown, _gone(docs, files, states)
        self._gone_ids: dict[str, tuple[int, str]] | None = None  # doc id -> its first gone holder
        try:
            self._ingest_files(docs, files, index, states, report, progress)
            if prune:  # before the collided retry: a renamed JSONL file's records collide with its old name's
                self._prune(index, report)
            self._write_last(index, report)
        except _CallerError as exc:  # the caller's own callback failed: theirs to see, not a stopped ingest
            self._flush_if_made(index, existed)  # what was committed stays searchable
            raise exc.__cause__ from None  # type: ignore[misc]
        except KeyboardInterrupt:  # flushed, or the next opener rebuilt the whole vector index
            self._flush_if_made(index, existed)
            raise IngestInterrupted(report) from None
        except IndexSwitchedError:
            # Not a stopped run to finish with the same vectors: the rest needs the new model. What was
            # committed before the switch is in the new version (the rebuild re-embedded it).
            self.backend.flush(index)
            raise
        except Exception as exc:  # an endpoint or model that dies partway: keep and say what was committed
            self._stop(index, report, exc)
        self._flush_if_made(index, existed)
        report.seconds = time.perf_counter() - started
        return report

    def _flush_if_made(self, index: str, existed: bool) -> None:
        """A new index no batch made yet has nothing to flush (nor a folder)."""
        if existed or self._created:
            self.backend.flush(index)

    def _ingest_files(self, docs: DocumentSource, files: list[SourceFile], index: str,
                      states: dict[str, SourceState], report: IngestReport,
                      progress: ProgressCallback | None) -> None:
        pending: list[_Pending] = []
        self._touched = []
        self._collided: list[tuple[IndexedSource, SourceState | None]] = []
        for done, file in enumerate(files, start=1):
            try:
                item = (self._broken_link(docs, file, states, report) if file.broken
                        else self._prepare(docs, file, states.get(file.uri), report))
            except _StorageDown as down:
                # Every file after it would wait out the same timeouts and fail as its own, and one indexed
                # before would be said to need fixing: the run stops, keeping what it read before.
                self._write_read(index, pending, report)
                left, why = len(files) - done + 1, str(down.error).rstrip().rstrip(".")
                raise SourceError(
                    f"The storage failed while reading {down.uri}, so the run stopped with "
                    f"{_counted(left, 'file')} of {len(files)} not read: {why}. "
                    "A re-run skips the files already ingested.") from down.error
            if item is not None:
                pending.append(item)
                if sum(len(p.chunks) for p in pending) >= self.ingest.batch_chunks:
                    self._write(index, pending, report)
                    pending = []
            if progress:
                try:
                    progress(done, len(files), file.uri)
                except Exception as exc:
                    raise _CallerError() from exc
        self._write(index, pending, report)  # the colliding files and touched states come after any prune

    def _write_read(self, index: str, pending: list[_Pending], report: IngestReport) -> None:
        """Write what was read and not yet written, when the storage fails."""
        self._write(index, pending, report)
        self._write_last(index, report)

    def _write_last(self, index: str, report: IngestReport) -> None:
        """After every file's own write (and a prune's deletes): the colliding files again, and the new
        markers of touched files."""
        self._write_collided(index, report)
        self.backend.update_states(index, self._touched)

    def _prune(self, index: str, report: IngestReport) -> None:
        gone, self._gone = self._gone, []  # removed: no longer for a collision to name
        if gone:
            report.chunks_removed += self.backend.delete(index, gone)
            report.pruned.extend(gone)

    def _broken_link(self, docs: DocumentSource, file: SourceFile, states: dict[str, SourceState],
                     report: IngestReport) -> _Pending | None:
        """A broken link fails whatever its name (one to a folder has no extension: it was skipped as
        "unsupported file type '(none)'", and --prune removed the folder's documents), and so does a
        folder that cannot be listed: the run exits 1, and what was ingested at or under it stays."""
        problem = _broken_by(docs, file)
        if problem is None:  # mended since it was listed
            return self._prepare(docs, file, states.get(file.uri), report)
        reason = f"cannot read: {problem}"
        kept = [uri for uri in states if at_or_under(uri, file.uri)]
        if kept and kept != [file.uri]:
            mend = ("make it readable and enterable (r and x)" if os.path.isdir(local_path(file.uri))
                    else "make the folders on its way enterable (x)" if isinstance(problem, PermissionError)
                    else "mend the link")
            reason += (f" ({_counted(len(kept), 'document')} ingested from under it stay indexed; {mend}, "
                       "or remove it and use --prune)")
        _fail(report, file.uri, reason, states.get(file.uri))
        return None

    def _stop(self, index: str, report: IngestReport, exc: Exception) -> None:
        """A run that committed nothing raises as it was (an index it created goes: it would be locked to
        the model that failed); one that committed some batches returns its report, marked stopped,
        since a re-run finishes the rest from there."""
        if not report.ingested:
            if self._created:
                self.backend.delete_index(index)
                self._created = False
            raise exc
        log.debug("ingest stopped", exc_info=exc)
        report.stopped = str(exc) if isinstance(exc, UnirankError) else f"{type(exc).__name__}: {exc}"

    def _refuse_no_documents(self, docs: DocumentSource, index: str, files: list[SourceFile], *,
                             existed: bool, prune: bool) -> None:
        """An unmounted share, a mistyped empty folder or one of other files (a CSV) holds nothing to read:
        pruning against it would remove every document ingested from there, and ingesting it made an
        empty index and said nothing."""
        if prune and existed:
            self._refuse_emptying(docs, index, files)
        others = sorted({PurePosixPath(f.uri).suffix.lower() or "(none)" for f in files if not f.broken})
        notes = ([f"only files of other types: {', '.join(others)}"] if others else []) + _broken_links(docs, files)
        found = f" ({'; '.join(notes)})" if notes else ""
        created = "" if existed else f"; index {index!r} was not created"
        raise SourceError(
            f"No documents found in {docs.shown}{found}. unirank reads {', '.join(sorted(SUPPORTED_EXTENSIONS))}. "
            f"Nothing was written{created}. Check the path (an unmounted share looks empty).")

    def _refuse_emptying(self, docs: DocumentSource, index: str, files: list[SourceFile]) -> None:
        """Pruning against a source with no documents would remove every document ingested from there."""
        doomed = docs.under(self.backend.source_states(index))
        if doomed:
            broken = "; ".join(_broken_links(docs, files))
            raise SourceError(
                f"{docs.shown} holds no documents{f' ({broken})' if broken else ''}, so --prune "
                f"would remove all {len(doomed)} ingested from it. "
                "Check the path (an unmounted share looks empty); to remove them on purpose, "
                f"`unirank index remove {index} {docs.shown}`.")

    def _check_model(self, index: str, existed: bool) -> None:
        """A new index is made by the first batch that commits, not here: a run whose endpoint or model
        fails before then left an empty index that refused every other model."""
        self._created = False
        if existed:
            self._index_model = self.backend.model(index)
            require_comparable_vectors(index, self._index_model, self.embedder)
            self._to_create = None
        else:
            self._to_create = self.embedder.signature  # a remote endpoint is probed now, before any parsing
            self._index_model = self._to_create

    def _create_if_new(self, index: str) -> None:
        if self._to_create is not None:
            made = self.backend.create_index(index, self._to_create).model
            if made != self._to_create:
                self._require_joinable(index, made)
            self._index_model = made
            self._to_create, self._created = None, True

    def _require_joinable(self, index: str, made: ModelSignature) -> None:
        """Another run created the index first, with its model: writing on is refused as the up-front check
        refuses it (the write's model check would say an `index rebuild` switched it, which none did)."""
        try:
            require_comparable_vectors(index, made, self.embedder)
        except (DimensionMismatchError, EmbedderMismatchError) as exc:
            exc.args = (f"Another run created index {index!r} with {made} after this one found it missing. "
                        f"{exc}",)
            raise

    def _recipe(self, suffix: str) -> str:
        """What decides a file's chunks besides its bytes: a setting changed since it was ingested must
        apply to it when ingesting again, not only to new and edited files."""
        parts = [f"parser={PARSER_VERSION}", f"size={self.chunker.size}", f"overlap={self.chunker.overlap}"]
        if suffix in TEXT_EXTENSIONS:
            parts.append(f"encoding={self.ingest.legacy_encoding}")
        return ";".join(parts)

    def _prepare(self, docs: DocumentSource, file: SourceFile, previous: SourceState | None,
                 report: IngestReport) -> _Pending | None:
        suffix = PurePosixPath(file.uri).suffix.lower()
        if suffix not in SUPPORTED_EXTENSIONS:
            report.skipped.append((file.uri, f"unsupported file type {suffix or '(none)'!r}"))
            return None
        recipe = self._recipe(suffix)
        current = previous if previous and previous.recipe == recipe else None  # else cut another way
        if current and current.size == file.size and current.modified == file.modified:
            report.skipped.append((file.uri, "unchanged"))
            return None
        try:
            data = docs.read(file)
        except SourceError as exc:  # the storage failed (a timeout, no connection), not this file
            raise _StorageDown(file.uri, exc) from exc
        except Exception as exc:  # unreadable: permissions, vanished
            _fail(report, file.uri, f"cannot read: {exc}", previous)
            return None
        digest = hashlib.sha256(data).hexdigest()
        if previous and previous.content_hash == digest:
            if current:  # touched, not changed: its new marker is stored, or every run reads it again
                self._touched.append(replace(current, size=file.size, modified=file.modified))
                report.skipped.append((file.uri, "unchanged"))
                return None
            report.reread.append(file.uri)
        try:
            parsed = parse_document(data, file.uri, legacy_encoding=self.ingest.legacy_encoding)
            chunks = [c for doc in parsed for c in self.chunker.chunk(doc, file.uri)]
        except ParseError as exc:
            _fail(report, file.uri, str(exc), previous)
            return None
        except Exception as exc:  # a parser or tokenizer bug this file's text meets: it fails, not the run
            log.debug("reading %s failed", file.uri, exc_info=exc)
            _fail(report, file.uri, f"cannot parse: {type(exc).__name__}: {exc}", previous)
            return None
        if not chunks:
            _fail(report, file.uri, "no text to index", previous)
            return None
        shown = uri_path(file.uri) if file.uri.startswith("file://") else file.uri  # s3://b/k, not b/k
        report.warnings.extend(f"{shown}: {warning}" for doc in parsed for warning in doc.warnings)
        state = SourceState(uri=file.uri, content_hash=digest, size=file.size, modified=file.modified,
                            chunk_count=len(chunks), recipe=recipe)
        return _Pending(state=state, chunks=chunks, previous=previous)

    def _write(self, index: str, pending: list[_Pending], report: IngestReport) -> None:
        if not pending:
            return
        sources = self._embedded(pending, report)
        if not sources:
            return
        self._create_if_new(index)
        try:
            self.backend.index(index, sources, model=self._index_model)
            written = sources
        except DuplicateDocumentError:
            previous = {p.state.uri: p.previous for p in pending}
            written = self._write_one_by_one(index, sources, previous)
        report.ingested.extend(s.state.uri for s in written)
        report.chunks_written += sum(len(s.chunks) for s in written)

    def _embedded(self, pending: list[_Pending], report: IngestReport) -> list[IndexedSource]:
        """The files' chunks with their vectors, embedded together. An endpoint that refuses an input of
        the batch refused the whole run (exit 2, nothing written, no file named): the files are then
        embedded one by one, and those it refuses fail, named, while the others are written."""
        try:
            vectors = self.embedder.embed_documents([c.embedding_input() for p in pending for c in p.chunks])
        except InputRefusedError as exc:
            if len(pending) > 1:
                return [source for p in pending for source in self._embedded([p], report)]
            _fail(report, pending[0].state.uri, f"the embedding endpoint refused it: {exc}", pending[0].previous)
            return []
        sources, offset = [], 0
        for p in pending:
            sources.append(IndexedSource(p.state, p.chunks, vectors[offset : offset + len(p.chunks)]))
            offset += len(p.chunks)
        return sources

    def _write_one_by_one(self, index: str, sources: list[IndexedSource],
                          previous: dict[str, SourceState | None]) -> list[IndexedSource]:
        """Isolate the source that collides so the others still land; it is tried again at the end, with
        what the index held for it before this run (``previous``)."""
        written = []
        for source in sources:
            try:
                self.backend.index(index, [source], model=self._index_model)
                written.append(source)
            except DuplicateDocumentError:
                self._collided.append((source, previous.get(source.state.uri)))
        return written

    def _write_collided(self, index: str, report: IngestReport) -> None:
        """A JSONL record moved from z.jsonl to a.jsonl collides with z's old copy until z is written:
        after the run's other writes, the ids are free; what still collides is a real duplicate."""
        for source, previous in self._collided:
            try:
                self.backend.index(index, [source], model=self._index_model)
            except DuplicateDocumentError as exc:
                _fail(report, source.state.uri, self._collision(index, source, exc), previous)
                continue
            report.ingested.append(source.state.uri)
            report.chunks_written += len(source.chunks)

    def _collision(self, index: str, source: IndexedSource, exc: DuplicateDocumentError) -> str:
        """Why ``source`` still collides, without its own URI (its report line names it), and, where a file
        gone from the source holds one of its ids, that --prune removes it (a run without it keeps it)."""
        reason = str(exc).removeprefix(f"{source.state.uri}: ")
        owner = self._gone_owner(index, source)
        if owner is not None:
            reason += (f" {uri_path(owner)}, which holds one of them, is gone from {self._source}: ingest again "
                       "with --prune to remove it")
        return reason

    def _gone_owner(self, index: str, source: IndexedSource) -> str | None:
        """The file gone from the source, and not pruned, that holds one of ``source``'s document ids."""
        if not self._gone:
            return None
        if self._gone_ids is None:  # read once, not once a colliding file (a renamed folder of JSONL files)
            self._gone_ids = {}
            for batch in self.backend.iter_chunks(index, sources=self._gone):
                for chunk in batch:  # each id's first holder, with its place in the read
                    self._gone_ids.setdefault(chunk.doc_id, (len(self._gone_ids), chunk.source_uri))
        held = [self._gone_ids[chunk.doc_id] for chunk in source.chunks if chunk.doc_id in self._gone_ids]
        return min(held)[1] if held else None


def _gone(docs: DocumentSource, files: list[SourceFile], states: dict[str, SourceState]) -> list[str]:
    """The indexed files under the source that it no longer lists: what --prune removes. What was
    ingested at or under a broken link (an unmounted share) is not gone, nor is a hidden file still
    there (ingested by naming it): the listing passes it over whether it is there or not."""
    seen = {f.uri for f in files}
    broken = [f.uri for f in files if f.broken]
    return [uri for uri in docs.under(states) if uri not in seen and not docs.passed_over(uri)
            and not any(at_or_under(uri, link) for link in broken)]


def _is_document(file: SourceFile) -> bool:
    """A file of a type unirank reads: only these make a source worth ingesting or pruning against."""
    return PurePosixPath(file.uri).suffix.lower() in SUPPORTED_EXTENSIONS


def _broken_links(docs: DocumentSource, files: list[SourceFile], most: int = 5) -> list[str]:
    """The broken links of a source refused as empty, named (an unmounted share leaves one)."""
    broken = [f for f in files if f.broken]
    named = [f"{uri_path(f.uri)} is {_broken_by(docs, f) or 'a link mended since it was listed'}"
             for f in broken[:most]]
    return named + ([f"and {len(broken) - most} more broken links"] if len(broken) > most else [])


def _broken_by(docs: DocumentSource, file: SourceFile) -> Exception | None:
    """Why a link or folder listed as broken cannot be read (None: mended since)."""
    try:
        docs.read(file)
    except Exception as exc:
        return exc
    return None


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


#: Said after a failure of a file indexed before (see ``_fail``).
PREVIOUS_KEPT = " (the previous version stays indexed; fix the file, or remove it and use --prune)"


def _fail(report: IngestReport, uri: str, reason: str, previous: SourceState | None) -> None:
    """A file indexed before keeps its old chunks when its new version cannot be read (nothing is lost
    on a bad save); the report says so, or the index would answer from the old text with no word."""
    if previous is not None:
        reason += PREVIOUS_KEPT
    report.failed.append((uri, reason))


class _StorageDown(Exception):
    """DocumentSource.read's SourceError: the storage failed (a timeout, no connection), not one file."""

    def __init__(self, uri: str, error: SourceError) -> None:
        super().__init__(uri, error)
        self.uri, self.error = uri, error


class _CallerError(Exception):
    """Carries an exception raised by the caller's progress callback past the stop-and-report handling."""
