"""One SQLite connection owned by one worker thread, for DataStorage's SQLite store.

sqlite3 blocks, so every store call is one function run in that thread
(`loop.run_in_executor` on a single-thread pool): the event loop never waits on disk or on a
lock, the connection is never shared between threads, and SQLite's one-writer rule is met by
construction. A call that fails inside a transaction it left open is rolled back before the
error goes up, so the next call starts clean. Which errors mean "unavailable" is the store's
translation (`drivers.SQLITE_UNAVAILABLE`), not this module's.

The thread takes turns with the event loop for the interpreter lock (see `sqlite_process`,
which the Gateway's RR store uses for that reason); DataStorage's calls are few and large
(a batch of up to `batchSize` events per call), so it has stayed on a thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class SqliteThread:
    """The worker thread and its connection; `name` names the store in messages."""

    def __init__(self, name: str, thread_name: str) -> None:
        self.name = name
        self._thread_name = thread_name
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only in the worker thread

    async def open(
        self,
        connect: Callable[[], sqlite3.Connection],
        setup: Callable[[sqlite3.Connection], None],
    ) -> None:
        """Start the thread, `connect` in it, then `setup` the connection (pragmas,
        migrations). On any failure the connection is closed, the thread stopped, the error
        raised."""
        if self._executor is not None:
            raise RuntimeError(f"{self.name} is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._thread_name)

        def start() -> None:
            self._conn = connect()
            setup(self._conn)

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, start)
        except BaseException:
            await self.close()
            raise

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` in the worker thread; everything it reads, it reads there."""
        executor = self._executor
        if executor is None:
            raise RuntimeError(f"{self.name} is not open")
        return await asyncio.get_running_loop().run_in_executor(executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise RuntimeError(f"{self.name} is not open")
        try:
            return fn(conn)
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(executor, self._close)
        executor.shutdown(wait=True)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
