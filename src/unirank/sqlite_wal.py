"""Opening a SQLite file in WAL mode from several processes at once."""

from __future__ import annotations

import sqlite3
import time

#: How long a switch to WAL is retried while other connections hold the file.
WAL_SWITCH_TIMEOUT_S = 30.0


def use_wal(db: sqlite3.Connection, timeout_s: float = WAL_SWITCH_TIMEOUT_S) -> None:
    """``PRAGMA journal_mode=WAL``, retried while the file is locked. Switching needs an exclusive lock that
    SQLite refuses at once, without waiting its busy timeout, when another connection is taking one too:
    two processes opening a new registry, index or chat database together failed with "database is locked"."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
