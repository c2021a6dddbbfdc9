"""Durable conversations: sessions, their messages, and feedback events, in one SQLite file.

Every answer is kept (with the stand-alone query it was retrieved for and its citations), in a
session or not, so that thumbs up/down and citation clicks can later become training pairs
(:mod:`unirank.training.feedback`). One connection serves the app server's threads behind a lock.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, ParamSpec, TypeVar

from unirank.chat.types import Citation, Turn
from unirank.errors import (ConfigurationError, ConversationNotFoundError, ConversationStoreClosedError,
                            InvalidQueryError)
from unirank.search.backend import refuse_path_like_index_name
from unirank.sqlite_wal import use_wal

_P = ParamSpec("_P")
_R = TypeVar("_R")

FeedbackKind = Literal["up", "down", "click"]
FEEDBACK_KINDS: tuple[str, ...] = ("up", "down", "click")
#: The roles of a conversation's turns, as OpenAI's chat messages name them.
TURN_ROLES: tuple[str, ...] = ("user", "assistant")
#: A message's columns and its last vote (see Message.vote).
_MESSAGE_WITH_VOTE = ("SELECT m.*, (SELECT kind FROM feedback WHERE message_id = m.id AND kind IN ('up', 'down') "
                      "ORDER BY id DESC LIMIT 1) AS vote FROM messages AS m")
#: SQLite's largest integer: a larger limit lists every session too, and sqlite3 cannot bind it.
_SQLITE_MAX_INT = 2**63 - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    index_name TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    session_id TEXT REFERENCES sessions(id) ON DELETE CASCADE,
    index_name TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    query TEXT,
    grounded INTEGER,
    citations TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    answerer TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages(session_id, seq);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    citation_n INTEGER,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_by_message ON feedback(message_id);
"""


@dataclass
class Session:
    id: str
    index: str
    title: str
    created_at: str
    updated_at: str

    def to_dict(self) -> dict:
        return {"id": self.id, "index": self.index, "title": self.title, "created_at": self.created_at,
                "updated_at": self.updated_at}


@dataclass
class Message:
    id: str
    session_id: str | None
    index: str
    role: str
    content: str
    created_at: str
    #: For an assistant message: the question it answers, as retrieved for (stand-alone).
    query: str | None = None
    grounded: bool | None = None
    citations: list[Citation] = field(default_factory=list)
    #: For an answer: the last thumbs up or down given on it ("up", "down"), else None. A page reloaded
    #: showed its feedback buttons unpressed, and a second click recorded the vote again.
    vote: str | None = None
    #: For an answer: what wrote it (ChatAnswer.answerer: "extractive", "openai", "none" when nothing
    #: relevant was found). None for a question, and for an answer stored before unirank kept it: the
    #: web page told an LLM's quotes from the documents' own by the extractive answerer's opening words.
    answerer: str | None = None

    def citation(self, n: int) -> Citation:
        for c in self.citations:
            if c.n == n:
                return c
        raise ConversationNotFoundError(
            f"Message {self.id} has no citation [{n}]; it cites {[c.n for c in self.citations] or 'nothing'}."
        )

    def to_dict(self) -> dict:
        return {"id": self.id, "session_id": self.session_id, "index": self.index, "role": self.role,
                "content": self.content, "query": self.query, "grounded": self.grounded,
                "citations": [c.to_dict() for c in self.citations], "created_at": self.created_at,
                "vote": self.vote, "answerer": self.answerer}


@dataclass
class FeedbackEvent:
    id: int
    message_id: str
    kind: str
    citation_n: int | None
    created_at: str

    def to_dict(self) -> dict:
        return {"id": self.id, "message_id": self.message_id, "kind": self.kind, "citation": self.citation_n,
                "created_at": self.created_at}


#: Each table's columns, as _SCHEMA makes them.
_COLUMNS = {
    "sessions": ["id", "index_name", "title", "created_at", "updated_at"],
    "messages": ["id", "seq", "session_id", "index_name", "role", "content", "query", "grounded", "citations",
                 "created_at", "answerer"],
    "feedback": ["id", "message_id", "kind", "citation_n", "created_at"],
}
#: Columns added since a table was first made, in the order they were added (the last of _COLUMNS): a file
#: made before them is given them (ALTER TABLE ... ADD COLUMN, NULL in the rows it has) when it is opened.
_ADDED_COLUMNS = {"messages": {"answerer": "TEXT"}}


def turn_problem(role: object, content: object) -> str | None:
    """What makes a turn one no conversation holds, or None: the follow-up rewriter reads only "user"
    turns, so a "User" or "human" one was dropped without a word."""
    if role not in TURN_ROLES:
        return f"role must be 'user' or 'assistant', got {role!r}"
    if not isinstance(content, str):
        return f"content must be text (a str), got {type(content).__name__}"
    return None


def _require_text(name: str, value: object, meaning: str = "text", *, optional: bool = False) -> None:
    """An argument of the wrong type is the caller's mistake, said before any SQL: sqlite3 could not bind
    it (or a NOT NULL column refused None), which _database_errors reported as a disk to check."""
    if isinstance(value, str) or (optional and value is None):
        return
    raise InvalidQueryError(f"{name} must be {meaning}, a str{' or None' if optional else ''}; got "
                            f"{type(value).__name__}.")


def _session_id(value: object, *, optional: bool = False) -> None:
    _require_text("session_id", value, "a session's id (Session.id, as store.sessions() lists them)", optional=optional)


def _message_id(value: object, *, optional: bool = False) -> None:
    _require_text("message_id", value, "a message's id (Message.id, or an answer's ChatAnswer.message_id)",
                  optional=optional)


def _sql_limit(limit: object) -> int:
    """``limit`` as SQLite's LIMIT: None is every session (-1 to SQLite), as a notebook asking for them all
    would write it; anything but a whole number of 1 or more is refused."""
    if limit is None:
        return -1
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidQueryError(f"limit must be a whole number of sessions, 1 or more (or None for every "
                                f"session); got {limit!r}.")
    return min(limit, _SQLITE_MAX_INT)


def _check_tables(db: sqlite3.Connection, path: Path) -> None:
    """Another application's file with a table of the same name is kept by CREATE TABLE IF NOT EXISTS:
    refused before the schema's indexes are made on it, not at the first question (sqlite3's "table
    sessions has 1 columns")."""
    for table, columns in _COLUMNS.items():
        found = [row["name"] for row in db.execute(f"PRAGMA table_info({table})")]
        added = list(_ADDED_COLUMNS.get(table, {}))
        if found and found not in [columns[:len(columns) - n] for n in range(len(added) + 1)]:
            raise ConfigurationError(
                f"chat.db_path {path} has a table {table!r} with other columns ({', '.join(found)}): it is not a "
                "unirank conversation database. Set chat.db_path to another file (a new one is made there)."
            )


def _add_new_columns(db: sqlite3.Connection) -> None:
    """Gives a file an earlier unirank made the columns added since (their values unknown: NULL). Under the
    write lock, and looked at again there: two processes opening the file at once add each column once.
    A file that has them all is not locked: opening it does not wait for another process's write."""

    def missing() -> list[tuple[str, str, str]]:
        found = {table: {row["name"] for row in db.execute(f"PRAGMA table_info({table})")} for table in _ADDED_COLUMNS}
        return [(table, column, kind) for table, added in _ADDED_COLUMNS.items() for column, kind in added.items()
                if column not in found[table]]

    if not missing():
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for table, column, kind in missing():
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _database_errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """A store method whose database fails while in use (a page damaged since it was opened, a disk
    error) raises a :class:`ConfigurationError` naming the file and what to do, which the chat prints
    and goes on from, not sqlite3's DatabaseError."""
    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            store = args[0]
            raise _failed(store.path, exc) from exc  # type: ignore[attr-defined]
    return wrapper


class ConversationStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise _unusable(self.path, exc) from exc
        self._db.row_factory = sqlite3.Row
        try:
            with self._lock:
                use_wal(self._db)
                self._db.execute("PRAGMA foreign_keys=ON")
                _check_tables(self._db, self.path)
                self._db.executescript(_SCHEMA)
                _add_new_columns(self._db)
                _check_pages(self._db)
        except sqlite3.Error as exc:
            self._db.close()
            raise _unusable(self.path, exc) from exc
        except ConfigurationError:
            self._db.close()
            raise

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection, read under ``_lock``; after ``close`` an error that says so, not sqlite3's
        ProgrammingError."""
        if self._connection is None:
            raise ConversationStoreClosedError(self.path)
        return self._connection

    # -- sessions -------------------------------------------------------------------------------
    @_database_errors
    def create_session(self, index: str, title: str = "") -> Session:
        # As over HTTP: "" was stored as a session of no index, and None failed as sqlite3's IntegrityError.
        if not isinstance(index, str) or not index.strip():
            raise InvalidQueryError(f"A session answers from one index: name it (`unirank index list` lists them), "
                                    f"got {index!r}.")
        # '../x' was stored, and each question then failed on its name; a name made before the naming rule
        # ('docs.v2') is still an index's, and is still asked.
        refuse_path_like_index_name(index)
        if not isinstance(title, str):
            raise InvalidQueryError(f"The session's title must be text, got {type(title).__name__}.")
        now = utc_now()
        session = Session(id=uuid.uuid4().hex, index=index, title=_title(title), created_at=now, updated_at=now)
        with self._lock:
            self._db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                             (session.id, session.index, session.title, now, now))
        return session

    @_database_errors
    def session(self, session_id: str) -> Session:
        _session_id(session_id)
        with self._lock:
            row = self._db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise ConversationNotFoundError(
                f"Session {session_id!r} does not exist: create one with POST /v1/sessions, or in Python with "
                "store.create_session(index) (GET /v1/sessions and store.sessions() list them)."
            )
        return _session(row)

    @_database_errors
    def sessions(self, limit: int | None = 100) -> list[Session]:
        """The most recently updated first, at most ``limit`` of them (None: all)."""
        sql_limit = _sql_limit(limit)
        with self._lock:
            rows = self._db.execute("SELECT * FROM sessions ORDER BY updated_at DESC, rowid DESC LIMIT ?",
                                    (sql_limit,)).fetchall()
        return [_session(r) for r in rows]

    @_database_errors
    def delete_session(self, session_id: str) -> None:
        self.session(session_id)
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    # -- messages -------------------------------------------------------------------------------
    @_database_errors
    def add_message(self, session_id: str | None, index: str, role: str, content: str, *,
                    query: str | None = None, grounded: bool | None = None,
                    citations: list[Citation] | None = None, answerer: str | None = None) -> Message:
        problem = turn_problem(role, content)
        if problem:  # a "wizard" turn was stored, and handed back by history()
            raise InvalidQueryError(f"add_message: {problem}.")
        _check_message_fields(session_id, index, query)
        _require_text("answerer", answerer, "the name of what wrote the answer", optional=True)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")  # the write lock first: no other process deletes the session
            return self._insert(session_id, index, role, content, query=query, grounded=grounded,
                                citations=citations, answerer=answerer)

    def _insert(self, session_id: str | None, index: str, role: str, content: str, *,
                query: str | None = None, grounded: bool | None = None,
                citations: list[Citation] | None = None, answerer: str | None = None) -> Message:
        """One message, inside the caller's write transaction."""
        now = utc_now()
        message = Message(id=uuid.uuid4().hex, session_id=session_id, index=index, role=role, content=content,
                          created_at=now, query=query, grounded=grounded, citations=list(citations or []),
                          answerer=answerer)
        payload = json.dumps([c.to_dict() for c in message.citations], ensure_ascii=False)
        if session_id is not None and not self._db.execute("SELECT 1 FROM sessions WHERE id = ?",
                                                           (session_id,)).fetchone():
            raise _deleted_meanwhile(session_id)
        seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM messages").fetchone()[0]
        self._db.execute(
            f"INSERT INTO messages ({', '.join(_COLUMNS['messages'])}) VALUES ({', '.join('?' * len(_COLUMNS['messages']))})",
            (message.id, seq, session_id, index, role, content, query,
             None if grounded is None else int(grounded), payload, now, answerer))
        if session_id is not None:
            self._db.execute(
                "UPDATE sessions SET updated_at = ?, title = CASE WHEN title = '' AND ? = 'user' "
                "THEN ? ELSE title END WHERE id = ?", (now, role, _title(content), session_id))
        return message

    @_database_errors
    def add_turn(self, session_id: str | None, index: str, question: str, answer: str, *,
                 query: str | None = None, grounded: bool | None = None,
                 citations: list[Citation] | None = None, answerer: str | None = None) -> tuple[Message, Message]:
        """A question and its answer, stored together (one transaction): they sit side by side in the
        message order even with other requests answered meanwhile, so either one names its turn."""
        _require_text("question", question)
        _require_text("answer", answer)
        _require_text("answerer", answerer, "the name of what wrote the answer", optional=True)
        _check_message_fields(session_id, index, query)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            asked = self._insert(session_id, index, "user", question)
            answered = self._insert(session_id, index, "assistant", answer, query=query, grounded=grounded,
                                    citations=citations, answerer=answerer)
        return asked, answered

    @_database_errors
    def delete_turn(self, message_id: str) -> list[str]:
        """Deletes a question and its answer, given either (and the answer's feedback with it): an
        answer asked for without a session is kept for feedback, and this is how it is taken back.
        Returns the ids deleted."""
        message = self.message(message_id)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            seq = self._db.execute("SELECT seq FROM messages WHERE id = ?", (message_id,)).fetchone()
            if seq is None:  # deleted by another request meanwhile
                return []
            scope = "session_id IS ? AND index_name = ?"
            if message.role == "assistant":  # its question: the nearest earlier question of the same scope
                other = self._db.execute(
                    f"SELECT id, role FROM messages WHERE {scope} AND seq < ? ORDER BY seq DESC LIMIT 1",
                    (message.session_id, message.index, seq[0])).fetchone()
            else:  # its answer, unless the next message is another question (an answer that failed)
                other = self._db.execute(
                    f"SELECT id, role FROM messages WHERE {scope} AND seq > ? ORDER BY seq LIMIT 1",
                    (message.session_id, message.index, seq[0])).fetchone()
            ids = [message_id]
            if other is not None and other["role"] != message.role:
                ids.append(other["id"])
            # A title taken from the first question (as ``_insert`` takes it) goes with that question: it
            # is the next question's, or "" (then the next question asked gives it). A given title stays.
            first = self._first_question(message.session_id) if message.session_id is not None else None
            retitle = first is not None and first["id"] in ids and self._db.execute(
                "SELECT title FROM sessions WHERE id = ?", (message.session_id,)).fetchone()[0] == _title(
                first["content"])
            self._db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in ids])
            if retitle:
                left = self._first_question(message.session_id)
                self._db.execute("UPDATE sessions SET title = ? WHERE id = ?",
                                 (_title(left["content"]) if left is not None else "", message.session_id))
        return ids

    def _first_question(self, session_id: str) -> sqlite3.Row | None:
        return self._db.execute("SELECT id, content FROM messages WHERE session_id = ? AND role = 'user' "
                                "ORDER BY seq LIMIT 1", (session_id,)).fetchone()

    @_database_errors
    def messages(self, session_id: str) -> list[Message]:
        self.session(session_id)
        with self._lock:
            rows = self._db.execute(f"{_MESSAGE_WITH_VOTE} WHERE session_id = ? ORDER BY seq", (session_id,)).fetchall()
        return [_message(r) for r in rows]

    @_database_errors
    def message(self, message_id: str) -> Message:
        _message_id(message_id)
        with self._lock:
            row = self._db.execute(f"{_MESSAGE_WITH_VOTE} WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise ConversationNotFoundError(f"Message {message_id!r} does not exist.")
        return _message(row)

    @_database_errors
    def history(self, session_id: str) -> list[Turn]:
        """The session as turns; a user turn carries the stand-alone query its answer was retrieved for."""
        turns: list[Turn] = []
        for m in self.messages(session_id):
            if m.role == "assistant" and turns and turns[-1].role == "user":
                turns[-1].query = m.query
            turns.append(Turn(role=m.role, content=m.content))
        return turns

    # -- feedback -------------------------------------------------------------------------------
    @_database_errors
    def add_feedback(self, message_id: str, kind: str, citation_n: int | None = None) -> FeedbackEvent:
        if kind not in FEEDBACK_KINDS:
            raise InvalidQueryError(f"Feedback kind {kind!r} is not one of {', '.join(FEEDBACK_KINDS)}.")
        message = self.message(message_id)
        if message.role != "assistant":
            raise InvalidQueryError("Feedback is given on answers (assistant messages), not on questions.")
        if kind == "click":
            if citation_n is None:
                raise InvalidQueryError("A citation click names the citation: give its number n.")
            if isinstance(citation_n, bool) or not isinstance(citation_n, int):  # True was stored; "1" not found
                raise InvalidQueryError(f"citation must be a whole number, e.g. 1 (the n of [n]); got {citation_n!r}.")
            message.citation(citation_n)
        elif citation_n is not None:  # training reads a vote as about the whole answer: it would be lost
            raise InvalidQueryError(f"A {kind!r} vote is on the whole answer; only a click names a citation. "
                                    "Leave the citation out.")
        now = utc_now()
        try:
            with self._lock:
                cursor = self._db.execute("INSERT INTO feedback (message_id, kind, citation_n, created_at) "
                                          "VALUES (?, ?, ?, ?)", (message_id, kind, citation_n, now))
        except sqlite3.IntegrityError:  # deleted (its turn or session) since it was read above
            raise ConversationNotFoundError(f"Message {message_id!r} was deleted while its feedback was being "
                                            "recorded: there is no answer left to give feedback on.") from None
        return FeedbackEvent(id=int(cursor.lastrowid or 0), message_id=message_id, kind=kind,
                             citation_n=citation_n, created_at=now)

    @_database_errors
    def feedback(self, message_id: str | None = None) -> list[FeedbackEvent]:
        _message_id(message_id, optional=True)
        sql, args = "SELECT * FROM feedback", ()
        if message_id is not None:
            sql, args = sql + " WHERE message_id = ?", (message_id,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [FeedbackEvent(id=r["id"], message_id=r["message_id"], kind=r["kind"], citation_n=r["citation_n"],
                              created_at=r["created_at"]) for r in rows]

    def close(self) -> None:
        """Closes the database; closing again does nothing, and any other call raises
        :class:`ConversationStoreClosedError`."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> "ConversationStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _title(text: str) -> str:
    """A session's title: given, or its first question's text, cut to fit a list."""
    return text.strip()[:120]


def _check_message_fields(session_id: object, index: object, query: object) -> None:
    _session_id(session_id, optional=True)  # None: an answer asked for outside a session
    _require_text("index", index, "an index name")
    _require_text("query", query, "the stand-alone query the answer was retrieved for", optional=True)


class _DamagedPages(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found a damaged page."""


def _check_pages(db: sqlite3.Connection) -> None:
    """A damaged file is said when the store opens, not at the first question that reads the damage.
    ``quick_check(1)`` stops at the first problem and skips the index cross-checks: fast on a large file."""
    result = db.execute("PRAGMA quick_check(1)").fetchone()[0]
    if result != "ok":
        raise _DamagedPages(" ".join(result.split()))  # its report spans lines


def _deleted_meanwhile(session_id: str) -> ConversationNotFoundError:
    """A message for a session that is gone: it was deleted while its question was being answered (a
    session that never existed is refused before retrieval), so the turn cannot be kept in it."""
    return ConversationNotFoundError(
        f"Session {session_id!r} was deleted while its answer was being written, so the question and answer "
        "were not stored. Start a new session (POST /v1/sessions) and ask again."
    )


def _unusable(path: Path, exc: Exception) -> ConfigurationError:
    """The conversation database cannot be used: which file, why, and what to do (not SQLite's words alone)."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if _is_damage(exc):
        return ConfigurationError(
            f"chat.db_path {path} is not a SQLite database (SQLite says: {reason}): it holds something else, or "
            "it is damaged. Move it aside (a new, empty one is then made there) or set chat.db_path to another file."
        )
    return ConfigurationError(
        f"chat.db_path {path} cannot be opened as the conversation database ({reason}). It must be a file (or "
        "a place to make one) that this user may read and write; fix that, or set chat.db_path to another file."
    )


def _failed(path: Path, exc: sqlite3.DatabaseError) -> ConfigurationError:
    """The conversation database failed while in use: damaged as at start-up, or another error (a full disk)."""
    if _is_damage(exc):
        return _unusable(path, exc)
    return ConfigurationError(
        f"The conversation database chat.db_path {path} could not be read or written ({exc}). Check the disk "
        "and this file's permissions, or set chat.db_path to another file."
    )


def _is_damage(exc: Exception) -> bool:
    return isinstance(exc, _DamagedPages) or (
        isinstance(exc, sqlite3.DatabaseError)
        and getattr(exc, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"))


def utc_now() -> str:
    """Milliseconds, so that the conversation list orders turns within one second too."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _session(row: sqlite3.Row) -> Session:
    return Session(id=row["id"], index=row["index_name"], title=row["title"], created_at=row["created_at"],
                   updated_at=row["updated_at"])


def _message(row: sqlite3.Row) -> Message:
    return Message(id=row["id"], session_id=row["session_id"], index=row["index_name"], role=row["role"],
                   content=row["content"], created_at=row["created_at"], query=row["query"],
                   grounded=None if row["grounded"] is None else bool(row["grounded"]),
                   citations=[Citation.from_dict(c) for c in json.loads(row["citations"])], vote=row["vote"],
                   answerer=row["answerer"])
