"""One SQLite connection owned by a child process, for the RR store.

Why a process and not a thread: sqlite3 lets go of the interpreter lock while SQLite works,
but takes it back after every statement, and a thread that wants the lock back waits for
the event loop to give it up (up to the interpreter's switch interval, 5 ms). A store
thread beside a busy event loop therefore runs in turns with it, not beside it: the
Gateway's loop and its SQLite thread together never used more than one core, and SQLite's
creates reached about 60 % of PostgreSQL's, whose work runs in processes of its own. In a
child process the connection has an interpreter of its own, so SQLite's work runs on the
other core while the event loop goes on.

The child (`sqlite_child`) holds the connection and runs one call at a time, in the order
sent: SQLite's one-writer rule is met by construction, as with a thread. A call is a
module-level function and its arguments, pickled over a private socket pair; the function
runs as `fn(connection, *args)` in the child, its result or exception comes back pickled.
So a call's function must be importable (no lambdas or closures), and its arguments and
result plain data.

The child lives exactly as long as its socket: it exits when the parent closes it or dies
(even by `kill -9`), and ignores SIGINT and SIGTERM so that a signal sent to the whole
process group cannot end it before the parent has finished with it. A child that dies
fails the calls in flight with `ProcessLost` (the store's "unavailable"), and the next call
starts a new one. A call that was sent is never withdrawn: a caller that stops waiting
leaves it to finish (and commit) unseen, as a thread would.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import pickle
import socket
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from signalgate.common.sql import sqlite_child

log = logging.getLogger(__name__)

T = TypeVar("T")

FRAME = struct.Struct(">I")  # each message: its length, then its pickle
STOP_WAIT = 10.0  # seconds a closing child has to finish its calls before it is killed
# after a child failed to start (its file unreadable, the disk gone), calls fail with that
# error for this long instead of each starting another child
START_PAUSE = 1.0


class ProcessLost(sqlite3.OperationalError):
    """The child process holding the connection exited (or its socket broke) before it
    answered. An `OperationalError`, so the stores read it as any other "unavailable"."""


def frame(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(data)) + data


class SqliteProcess:
    """The child process and its connection; `name` names the store in messages,
    `process_name` the child on its command line (seen in `ps`)."""

    def __init__(self, name: str, process_name: str) -> None:
        self.name = name
        self._process_name = process_name
        self._open_call: tuple[Callable[..., sqlite3.Connection], tuple[Any, ...]] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._starting = asyncio.Lock()
        self._failed_start: tuple[float, BaseException] | None = None

    async def open(self, connect: Callable[..., sqlite3.Connection], *args: Any) -> None:
        """Start the child and run `connect(*args)` there; the connection it returns (set
        up: pragmas, migrations) serves every later call. On failure the child is stopped
        and the error raised. `connect` is run again in every child started after one
        died."""
        if self._open_call is not None:
            raise RuntimeError(f"{self.name} is already open")
        self._open_call = (connect, args)
        try:
            await self._start()
        except BaseException:
            self._open_call = None
            raise

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` in the child; a child that died is replaced first."""
        if self._open_call is None:
            raise RuntimeError(f"{self.name} is not open")
        if self._writer is None:
            async with self._starting:
                if self._writer is None:
                    await self._restart()
        return await self._send(sqlite_child.call, fn, args)  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Let the child finish the calls it was sent and answer them, then stop it."""
        self._open_call = None
        writer, proc, reader = self._writer, self._proc, self._reader_task
        if writer is not None:
            writer.close()  # the child's end of input: it finishes, answers, closes, exits
        if reader is not None:
            try:
                await asyncio.wait_for(asyncio.shield(reader), STOP_WAIT)
            except TimeoutError:
                log.warning("%s: its process did not stop in %.0fs; killed", self.name, STOP_WAIT)
                if proc is not None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                await reader
        self._lost("the store was closed")

    # --- the child --------------------------------------------------------------------------

    async def _restart(self) -> None:
        """A new child for the one that died; a start that failed less than `START_PAUSE`
        ago fails again at once, with its error."""
        loop = asyncio.get_running_loop()
        if self._failed_start is not None:
            failed_at, error = self._failed_start
            if loop.time() - failed_at < START_PAUSE:
                raise ProcessLost(f"{self.name}: its process could not start: {error}")
        try:
            await self._start()
        except Exception as exc:
            self._failed_start = (loop.time(), exc)
            raise
        self._failed_start = None

    async def _start(self) -> None:
        assert self._open_call is not None
        connect, args = self._open_call
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-c", sqlite_child.BOOTSTRAP, self._process_name),
                str(theirs.fileno()),
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        self._proc, self._writer = proc, writer
        self._reader_task = asyncio.create_task(
            self._read_answers(reader, proc), name=f"{self._process_name}-answers"
        )
        try:
            await self._send(sqlite_child.connect, connect, args)
        except BaseException:
            self._writer = self._proc = None
            writer.close()
            await self._reader_task
            raise

    async def _send(self, *message: Any) -> Any:
        writer = self._writer
        if writer is None:
            raise ProcessLost(f"{self.name}: its process is not running")
        data = frame(message)  # an argument that does not pickle fails here, before sending
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(answer)
        writer.write(data)
        try:
            await writer.drain()
        except ConnectionError as exc:  # the child is gone: its reader fails `answer`
            log.debug("%s: %r", self.name, exc)
        return await answer

    async def _read_answers(
        self, reader: asyncio.StreamReader, proc: asyncio.subprocess.Process
    ) -> None:
        """Hand each answer to its call, in order; at end of input (the child exited) fail
        the calls still waiting and forget the child, so the next call starts another."""
        why = "its process exited"
        try:
            while True:
                size = FRAME.unpack(await reader.readexactly(FRAME.size))[0]
                ok, value = pickle.loads(await reader.readexactly(size))  # noqa: S301 - our child
                answer = self._pending.popleft()
                if answer.done():  # its caller stopped waiting
                    continue
                if ok:
                    answer.set_result(value)
                else:
                    answer.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as exc:  # an answer that does not unpickle: the child is not ours
            why = f"unreadable answer from its process ({exc!r})"
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        # forgotten before anything is awaited: the next call starts a new child, and the
        # calls failed here are this child's only
        unexpected = self._proc is proc and self._open_call is not None
        if self._proc is proc:
            self._writer = self._proc = None
            self._lost(why)
        code = await proc.wait()
        if unexpected:
            log.error(
                "%s: %s (exit code %s); a new one starts with the next call", self.name, why, code
            )

    def _lost(self, why: str) -> None:
        pending, self._pending = self._pending, collections.deque()
        for answer in pending:
            if not answer.done():
                answer.set_exception(ProcessLost(f"{self.name}: {why}"))
