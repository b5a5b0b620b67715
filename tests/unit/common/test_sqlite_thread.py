"""The SQLite worker thread both SQLite stores run on: every call in one thread, a call that
fails mid-transaction leaves no transaction behind, a failed open leaves nothing running."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from signalgate.common.sql.sqlite_thread import SqliteThread


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


async def test_every_call_runs_in_the_one_worker_thread(tmp_path: Path) -> None:
    worker = SqliteThread("test db", "test-sqlite")
    await worker.open(lambda: connect(tmp_path / "t.db"), lambda c: None)
    try:
        names = {await worker.run(lambda _: threading.current_thread().name) for _ in range(5)}
        assert len(names) == 1 and next(iter(names)).startswith("test-sqlite")
        assert names != {threading.current_thread().name}
    finally:
        await worker.close()
    with pytest.raises(RuntimeError, match="test db is not open"):
        await worker.run(lambda c: c.execute("SELECT 1"))


async def test_a_failed_call_leaves_no_open_transaction(tmp_path: Path) -> None:
    worker = SqliteThread("test db", "test-sqlite")
    await worker.open(lambda: connect(tmp_path / "t.db"), lambda c: None)
    try:
        await worker.run(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))

        def half_done(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (1)")
            raise ValueError("a bug")

        with pytest.raises(ValueError, match="a bug"):
            await worker.run(half_done)
        assert await worker.run(lambda c: c.in_transaction) is False
        assert await worker.run(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 0
    finally:
        await worker.close()


async def test_a_failed_setup_closes_the_connection_and_the_thread(tmp_path: Path) -> None:
    opened: list[sqlite3.Connection] = []

    def tracked() -> sqlite3.Connection:
        # check_same_thread off only so this test can look at it from outside the thread
        opened.append(sqlite3.connect(tmp_path / "t.db", check_same_thread=False))
        return opened[-1]

    def broken(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("setup failed")

    worker = SqliteThread("test db", "test-sqlite")
    with pytest.raises(sqlite3.OperationalError, match="setup failed"):
        await worker.open(tracked, broken)
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        opened[0].execute("SELECT 1")
    await worker.open(tracked, lambda c: None)  # not "already open": it can start again
    await worker.close()
