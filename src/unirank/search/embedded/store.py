"""The durable record of an embedded index: SQLite holds chunks, vectors and source states.

SQLite is the source of truth. The full-text and vector indexes are derived from it and stamped
with the store's ``generation``; a crash between the two leaves them stale, and they are rebuilt.
"""

from __future__ import annotations

import json
import sqlite3
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable, Iterator, Mapping, Sequence

import numpy as np

from unirank.errors import DuplicateDocumentError
from unirank.timeutil import now_iso

from unirank.search.types import Chunk, IndexedSource, ModelSignature, SourceState
from unirank.sqlite_wal import use_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    uri TEXT PRIMARY KEY, content_hash TEXT NOT NULL, size INTEGER NOT NULL,
    modified TEXT NOT NULL, chunk_count INTEGER NOT NULL, ingested_at TEXT NOT NULL,
    recipe TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS chunks (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL, source_uri TEXT NOT NULL,
    ordinal INTEGER NOT NULL, text TEXT NOT NULL, title TEXT NOT NULL,
    heading_path TEXT NOT NULL, page INTEGER, metadata TEXT NOT NULL, vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_source ON chunks (source_uri);
CREATE TABLE IF NOT EXISTS chunk_filters (key INTEGER NOT NULL, term TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS filters_by_term ON chunk_filters (term, key);
CREATE INDEX IF NOT EXISTS filters_by_key ON chunk_filters (key);
"""

_CHUNK_COLUMNS = "key, id, doc_id, source_uri, ordinal, text, title, heading_path, page, metadata"


#: Bumped whenever ``filter_terms`` changes what it stores: an index whose terms were derived by another
#: version has them derived again (and its full text re-indexed) on the next write-locked open.
FILTER_TERMS_VERSION = "3"


def filter_terms(chunk: Chunk) -> list[str]:
    """The ``key=value`` terms a chunk can be filtered by: its metadata plus doc_id and source_uri.

    Metadata keys and text values are stored without the spaces around them (a filter is trimmed, so a
    front matter ``status: " draft"`` could never be matched) and in Unicode's composed form, as a filter
    is looked up (``filter_term_set``). A whole number is stored both ways it is written (``version: 2``
    and ``version: 2.0`` each match ``version=2`` and ``version=2.0``); text that looks like a number is
    left as it is: ``"2.10"`` is not ``"2.1"``."""
    terms = (f"{_nfc(k.strip())}={form}" for k, v in chunk.metadata.items() if k.strip() not in _OWN_FIELDS
             for item in (v if isinstance(v, list) else [v]) for form in _stored_forms(item))
    # doc_id and source_uri as they are (a metadata field of either name does not stand in for them):
    # documents_present looks a document up by its exact id.
    return [*dict.fromkeys(terms), f"doc_id={chunk.doc_id}", f"source_uri={chunk.source_uri}"]


_OWN_FIELDS = frozenset({"doc_id", "source_uri"})


def _stored_forms(value: object) -> list[str]:
    if isinstance(value, str):
        return [_nfc(value.strip())]
    if isinstance(value, int) and not isinstance(value, bool):
        return [str(value), f"{value}.0"]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:  # beyond, str() writes 1e+16
        return [str(value), str(int(value))]
    return [_term_value(value)]


def _term_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def filter_term_set(filters: Mapping[str, str]) -> list[str]:
    """The terms ``filters`` match, as ``filter_terms`` stores them: metadata in Unicode's composed form."""
    return [f"{k}={v}" if k in _OWN_FIELDS else f"{_nfc(k)}={_nfc(_term_value(v))}" for k, v in filters.items()]


def _nfc(text: str) -> str:
    """One form for text that looks the same: "café" typed on one machine (é) and saved on another (e and
    a combining accent, as macOS writes file names) are one filter value."""
    return unicodedata.normalize("NFC", text)


@dataclass
class WriteOutcome:
    removed_keys: list[int]
    added: list[tuple[int, Chunk, np.ndarray]]
    generation: int


class ChunkStore:
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.db = sqlite3.connect(path, check_same_thread=False)
            use_wal(self.db)
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Indexes made before a column existed get it, empty, so they open and are written as they are."""
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(sources)")}
        if "recipe" not in columns:
            with self.db:
                self.db.execute("ALTER TABLE sources ADD COLUMN recipe TEXT NOT NULL DEFAULT ''")

    # -- metadata -------------------------------------------------------------------------------
    def init_meta(self, model: ModelSignature, *, copy_of: str | None = None, created_at: str | None = None) -> None:
        """``created_at``: the index's, for a new version of it (a rebuild), which is no new index."""
        stamp = now_iso()
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [
                    ("model_name", model.name),
                    ("model_version", model.version),
                    ("dims", str(model.dims)),
                    ("created_at", created_at or stamp),
                    ("updated_at", stamp),
                    ("generation", "0"),
                    ("filter_terms", FILTER_TERMS_VERSION),
                    *([("copy_of", copy_of)] if copy_of else []),
                ],
            )

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())

    def model(self) -> ModelSignature:
        m = self.meta()
        return ModelSignature(name=m["model_name"], version=m["model_version"], dims=int(m["dims"]))

    def filter_terms_current(self) -> bool:
        return self.meta().get("filter_terms") == FILTER_TERMS_VERSION

    def rederive_filter_terms(self) -> None:
        """Every chunk's filter terms as this version derives them, in one transaction: a filter must
        match a document ingested before the change as it matches one ingested after."""
        with self.db:
            self.db.execute("DELETE FROM chunk_filters")
            for rows in self.iter_all():
                self.db.executemany("INSERT INTO chunk_filters (key, term) VALUES (?, ?)",
                                    [(key, term) for key, chunk, _ in rows for term in filter_terms(chunk)])
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('filter_terms', ?)",
                            (FILTER_TERMS_VERSION,))

    def generation(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return int(row[0]) if row else 0

    def keys(self) -> set[int]:
        return {key for (key,) in self.db.execute("SELECT key FROM chunks")}

    def counts(self) -> tuple[int, int]:
        chunks = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        sources = self.db.execute("SELECT COUNT(*) FROM sources").fetchone()[0]
        return int(chunks), int(sources)

    # -- writes ---------------------------------------------------------------------------------
    def replace_sources(self, sources: Sequence[IndexedSource]) -> WriteOutcome:
        """One transaction: every source's old chunks out, new chunks in, generation bumped."""
        removed: list[int] = []
        added: list[tuple[int, Chunk, np.ndarray]] = []
        stamp = now_iso()
        with self.db:
            for source in sources:  # all out first: a record moved between two files of the batch
                removed += self._delete_source_rows(source.state.uri)
            for source in sources:
                for chunk, vector in zip(source.chunks, source.vectors, strict=True):
                    vec = np.ascontiguousarray(vector, dtype=np.float32)
                    try:
                        cur = self._insert_chunk(chunk, vec)
                    except sqlite3.IntegrityError:
                        raise DuplicateDocumentError(
                            f"{source.state.uri}: chunk {chunk.id!r} is already in the index from "
                            f"{self._owner(chunk.id)}; document ids must be unique within an index."
                        ) from None
                    key = int(cur.lastrowid)  # type: ignore[arg-type]
                    self.db.executemany(
                        "INSERT INTO chunk_filters (key, term) VALUES (?, ?)",
                        [(key, t) for t in filter_terms(chunk)],
                    )
                    added.append((key, chunk, vec))
                s = source.state
                self.db.execute(
                    "INSERT OR REPLACE INTO sources (uri, content_hash, size, modified, chunk_count,"
                    " ingested_at, recipe) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (s.uri, s.content_hash, s.size, s.modified, len(source.chunks), stamp, s.recipe),
                )
            generation = self._bump(stamp)
        return WriteOutcome(removed_keys=removed, added=added, generation=generation)

    def _insert_chunk(self, chunk: Chunk, vec: np.ndarray) -> sqlite3.Cursor:
        return self.db.execute(
            "INSERT INTO chunks (id, doc_id, source_uri, ordinal, text, title, heading_path,"
            " page, metadata, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                chunk.id, chunk.doc_id, chunk.source_uri, chunk.ordinal, chunk.text, chunk.title,
                json.dumps(list(chunk.heading_path)), chunk.page, json.dumps(chunk.metadata),
                vec.tobytes(),
            ),
        )

    def update_states(self, states: Sequence[SourceState]) -> None:
        """New size and change marker of sources whose content is unchanged: no chunk moves, so no new
        generation."""
        with self.db:
            self.db.executemany("UPDATE sources SET size = ?, modified = ? WHERE uri = ? AND content_hash = ?",
                                [(s.size, s.modified, s.uri, s.content_hash) for s in states])

    def delete_sources(self, uris: Sequence[str]) -> WriteOutcome:
        removed: list[int] = []
        stamp = now_iso()
        with self.db:
            for uri in uris:
                removed += self._delete_source_rows(uri)
                self.db.execute("DELETE FROM sources WHERE uri = ?", (uri,))
            generation = self._bump(stamp)
        return WriteOutcome(removed_keys=removed, added=[], generation=generation)

    def _owner(self, chunk_id: str) -> str:
        row = self.db.execute("SELECT source_uri FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
        return row[0] if row else "another source of this batch"

    def _delete_source_rows(self, uri: str) -> list[int]:
        keys = [r[0] for r in self.db.execute("SELECT key FROM chunks WHERE source_uri = ?", (uri,))]
        if keys:
            self.db.execute(
                "DELETE FROM chunk_filters WHERE key IN (SELECT key FROM chunks WHERE source_uri = ?)",
                (uri,),
            )
            self.db.execute("DELETE FROM chunks WHERE source_uri = ?", (uri,))
        return keys

    def _bump(self, stamp: str) -> int:
        generation = self.generation() + 1
        self.db.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [("generation", str(generation)), ("updated_at", stamp)],
        )
        return generation

    # -- reads ----------------------------------------------------------------------------------
    def source_states(self) -> dict[str, SourceState]:
        rows = self.db.execute("SELECT uri, content_hash, size, modified, chunk_count, recipe FROM sources")
        return {r[0]: SourceState(uri=r[0], content_hash=r[1], size=r[2], modified=r[3], chunk_count=r[4],
                                  recipe=r[5]) for r in rows}

    def chunks_by_key(self, keys: Sequence[int]) -> dict[int, Chunk]:
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = self.db.execute(f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE key IN ({marks})", list(keys))
        return {row[0]: _row_to_chunk(row) for row in rows}

    def keys_matching(self, filters: Mapping[str, str]) -> set[int]:
        """Chunk keys that satisfy every ``key=value`` filter."""
        terms = filter_term_set(filters)
        result: set[int] | None = None
        for term in terms:
            keys = {r[0] for r in self.db.execute("SELECT key FROM chunk_filters WHERE term = ?", (term,))}
            result = keys if result is None else result & keys
            if not result:
                return set()
        return result or set()

    def filter_keys(self) -> set[str]:
        rows = self.db.execute("SELECT DISTINCT substr(term, 1, instr(term, '=') - 1) FROM chunk_filters")
        return {key for (key,) in rows} | {"doc_id", "source_uri"}

    def documents_present(self, doc_ids: Collection[str]) -> set[str]:
        """Looked up in the filter terms' index (``doc_id=…``), so the chunk rows are never read."""
        wanted = list(dict.fromkeys(doc_ids))
        found: set[str] = set()
        for start in range(0, len(wanted), 900):
            terms = [f"doc_id={d}" for d in wanted[start : start + 900]]
            marks = ",".join("?" * len(terms))
            rows = self.db.execute(f"SELECT DISTINCT term FROM chunk_filters WHERE term IN ({marks})", terms)
            found.update(term.removeprefix("doc_id=") for (term,) in rows)
        return found

    def vectors_by_key(self, keys: Sequence[int], dims: int) -> np.ndarray:
        out = np.zeros((len(keys), dims), dtype=np.float32)
        position = {k: i for i, k in enumerate(keys)}
        for start in range(0, len(keys), 900):
            part = keys[start : start + 900]
            marks = ",".join("?" * len(part))
            for key, blob in self.db.execute(f"SELECT key, vector FROM chunks WHERE key IN ({marks})", part):
                out[position[key]] = np.frombuffer(blob, dtype=np.float32)
        return out

    def iter_all(self, batch: int = 2048) -> Iterator[list[tuple[int, Chunk, np.ndarray]]]:
        """Every chunk with its vector, in key order (what a derived index is rebuilt from)."""
        last = -1
        while rows := self.page(last, batch):
            yield rows
            last = rows[-1][0]

    def page(self, after_key: int, batch: int,
             sources: Sequence[str] | None = None) -> list[tuple[int, Chunk, np.ndarray]]:
        """Up to ``batch`` chunks (of ``sources``, at most 500 of them) with keys above ``after_key``."""
        where, params = ("1", []) if sources is None else (f"source_uri IN ({','.join('?' * len(sources))})",
                                                           list(sources))
        rows = self.db.execute(
            f"SELECT {_CHUNK_COLUMNS}, vector FROM chunks WHERE key > ? AND {where} ORDER BY key LIMIT ?",
            (after_key, *params, batch),
        ).fetchall()
        return [(r[0], _row_to_chunk(r), np.frombuffer(r[10], dtype=np.float32)) for r in rows]

    def close(self) -> None:
        self.db.close()


def source_groups(sources: Collection[str] | None) -> list[list[str] | None]:
    """``sources`` in groups that fit one query's parameters; ``[None]`` (every chunk) when not given."""
    if sources is None:
        return [None]
    uris = sorted(set(sources))
    return [uris[start:start + 500] for start in range(0, len(uris), 500)]


def _row_to_chunk(row: Iterable) -> Chunk:
    r = list(row)
    return Chunk(
        id=r[1], doc_id=r[2], source_uri=r[3], ordinal=r[4], text=r[5], title=r[6],
        heading_path=tuple(json.loads(r[7])), page=r[8], metadata=json.loads(r[9]),
    )
