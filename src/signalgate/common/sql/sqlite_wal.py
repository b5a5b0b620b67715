"""Both SQLite stores' connection (`connect_migrated`) and its journal mode: WAL, with
`synchronous = NORMAL`.

WAL lets readers run beside the one writer, and with `NORMAL` a commit is not fsync'd
(WAL is synced at checkpoints): a process killed at any moment loses nothing committed, only
a power loss can lose the last commits.

Switching a file to WAL takes an exclusive lock. When several processes open a new file at
the same moment (Gateway workers sharing one SQLite file, or replicas on one host), SQLite
answers some of them "database is locked" at once instead of waiting out the busy timeout:
two connections each holding a read lock and wanting the write lock would deadlock, so it
refuses one without calling its busy handler. `use_wal` retries the switch, with a short
growing pause, until the busy timeout has passed.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from signalgate.common.sql.migrations import Schema, sqlite_migrate

FIRST_PAUSE = 0.002  # seconds; doubled after each refusal
LONGEST_PAUSE = 0.1


def use_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Put `conn`'s file in WAL mode (retrying a lock refusal for up to `busy_timeout`
    seconds) and its commits at `synchronous = NORMAL`. Runs in the store's own process."""
    deadline = time.monotonic() + busy_timeout
    pause = FIRST_PAUSE
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            break
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # "database is locked"
            if not busy or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)  # the store's process, never the event loop
        pause = min(pause * 2, LONGEST_PAUSE)
    conn.execute("PRAGMA synchronous = NORMAL")


def connect_migrated(
    path: Path, busy_timeout: float, schema: Schema, where: str
) -> sqlite3.Connection:
    """A store's connection: autocommit (the stores begin their own transactions), rows by
    column name, WAL, `schema` migrated (`where` names the store in its messages); closed
    again when any of that fails. Runs in the store's own process."""
    conn = connect_wal(path, busy_timeout)
    try:
        sqlite_migrate(conn, schema, where)
    except BaseException:
        conn.close()
        raise
    return conn


def connect_wal(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """`connect_migrated` without the migration (a `migrate` command reports what it
    applies itself); closed again when any of it fails."""
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        use_wal(conn, busy_timeout)
    except BaseException:
        conn.close()
        raise
    return conn
