"""One SQLite connection owned by a child process, for both SQLite stores.

Why a process and not a thread: sqlite3 lets go of the interpreter lock while SQLite works,
but takes it back after every statement, and a thread that wants the lock back waits for
the event loop to give it up (up to the interpreter's switch interval, 5 ms). A store
thread beside a busy event loop therefore runs in turns with it, not beside it: the
Gateway's loop and its SQLite thread together never used more than one core, and SQLite's
creates reached about 60 % of PostgreSQL's, whose work runs in processes of its own (see
docs/performance.md). In a child process the connection has an interpreter of its own, so
SQLite's work runs on the other core while the event loop goes on.

The child (`sqlite_child`) holds the connection and runs one call at a time, in the order
sent: SQLite's one-writer rule is met by construction, as with a thread. A call is a
module-level function and its arguments, pickled over a private socket pair; the function
runs as `fn(connection, *args)` in the child, its result or exception comes back pickled.
So a call's function must be importable (no lambdas or closures), and its arguments and
result plain data.

The child lives exactly as long as its socket: it exits when the parent shuts its side
(after answering every call it was sent) or dies (even by `kill -9`), and ignores SIGINT and
SIGTERM so that a signal sent to the whole process group cannot end it before the parent
has finished with it. A child is used only once its connection is open, and each child
has its own queue of calls waiting for answers: a child that dies fails its own calls with
`ProcessLost` (the store's "unavailable"), and the next call starts a new one. A call that
was sent is never withdrawn: a caller that stops waiting leaves it to finish (and commit)
unseen, as a thread would.

The child runs the parent's interpreter with the parent's isolation flags, its `sys.path`
(so it imports the same code, whatever the working directory holds) and its environment
(so a start-up hook the environment names, such as a coverage agent's, runs there too).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import pickle
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from signalgate.common.interpreter import interpreter_flags
from signalgate.common.sql import sqlite_child
from signalgate.common.sql.sqlite_child import FRAME, frame
from signalgate.common.tasks import within

log = logging.getLogger(__name__)

T = TypeVar("T")

STOP_WAIT = 10.0  # seconds a closing child has to finish its calls before it is killed
# after a child failed to start (its file unreadable, the disk gone), calls fail with that
# error for this long instead of each starting another child
START_PAUSE = 1.0


class ProcessLost(sqlite3.OperationalError):
    """The child process holding the connection exited (or its socket broke) before it
    answered. An `OperationalError`, so the stores read it as any other "unavailable"."""


class SqliteProcess:
    """The child process and its connection; `name` names the store in messages,
    `process_name` the child on its command line (seen in `ps`)."""

    def __init__(self, name: str, process_name: str) -> None:
        self.name = name
        self._process_name = process_name
        self._open_call: tuple[Callable[..., sqlite3.Connection], tuple[Any, ...]] | None = None
        self._child: _Child | None = None  # set only once its connection is open
        # a replacement being started: its own task, so a caller that gives up (a request
        # past its deadline) does not cancel it for the callers after it
        self._restarting: asyncio.Task[_Child] | None = None
        self._failed_start: tuple[float, Exception] | None = None

    async def open(self, connect: Callable[..., sqlite3.Connection], *args: Any) -> None:
        """Start the child and run `connect(*args)` there; the connection it returns (set
        up: pragmas, migrations) serves every later call. On failure the child is stopped
        and the error raised. `connect` is run again in every child started after one
        died."""
        if self._open_call is not None:
            raise RuntimeError(f"{self.name} is already open")
        self._open_call = (connect, args)
        try:
            self._child = await self._start(connect, args)
        except BaseException:
            self._open_call = None
            raise

    @property
    def is_open(self) -> bool:
        """`open` succeeded and `close` has not been called since."""
        return self._open_call is not None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` in the child; a child that died is replaced first."""
        child = self._child
        if child is None or child.lost is not None:
            child = await self._replace()
        return await child.send(sqlite_child.call, fn, args)  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Let the child finish the calls it was sent and answer them, then stop it."""
        self._open_call = None
        if self._restarting is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._restarting)
        child, self._child = self._child, None
        if child is not None:
            await child.stop()

    # --- the child --------------------------------------------------------------------------

    async def _replace(self) -> _Child:
        """A new child for the one that died, one start for every call waiting; a start
        that failed less than `START_PAUSE` ago fails again at once, with its error."""
        if self._open_call is None:
            raise RuntimeError(f"{self.name} is not open")
        if self._restarting is None:
            if self._failed_start is not None:
                failed_at, error = self._failed_start
                if asyncio.get_running_loop().time() - failed_at < START_PAUSE:
                    raise ProcessLost(f"{self.name}: its process could not start: {error}")
            self._restarting = asyncio.create_task(
                self._restart(*self._open_call), name=f"{self._process_name}-start"
            )
            # retrieved here: every caller may have given up before it ends
            self._restarting.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(self._restarting)

    async def _restart(
        self, connect: Callable[..., sqlite3.Connection], args: tuple[Any, ...]
    ) -> _Child:
        loop = asyncio.get_running_loop()
        try:
            child = await self._start(connect, args)
        except Exception as exc:
            self._failed_start = (loop.time(), exc)
            raise
        finally:
            self._restarting = None
        self._failed_start = None
        if self._open_call is None:  # closed meanwhile
            await child.stop()
            raise RuntimeError(f"{self.name} is not open")
        self._child = child
        return child

    async def _start(
        self, connect: Callable[..., sqlite3.Connection], args: tuple[Any, ...]
    ) -> _Child:
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, *interpreter_flags(safe_path=True), "-c", sqlite_child.BOOTSTRAP),
                *(self._process_name, str(theirs.fileno())),
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env={**os.environ, sqlite_child.PATH_VARIABLE: json.dumps(sys.path)},
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        child = _Child(self.name, proc, reader, writer)
        try:
            await child.send(sqlite_child.connect, connect, args)
        except BaseException:
            await child.stop()
            raise
        return child


class _Child:
    """One child process: its socket, and the calls sent to it waiting for their answers,
    which it gives in the order they were sent."""

    def __init__(
        self,
        name: str,
        proc: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.name = name
        self.proc = proc
        self.lost: str | None = None  # why it can take no more calls, once it cannot
        self._writer = writer
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._reader = asyncio.create_task(self._read_answers(reader), name=f"{name} answers")

    async def send(self, *message: Any) -> Any:
        if self.lost is None and self._writer.transport.is_closing():
            self.lost = "its process exited"  # seen by the transport before our reader
        if self.lost is not None:
            raise ProcessLost(f"{self.name}: {self.lost}")
        data = frame(message)  # an argument that does not pickle fails here, before sending
        try:
            self._writer.write(data)
        except (RuntimeError, OSError) as exc:  # uvloop: a closed transport raises
            raise ProcessLost(f"{self.name}: {exc}") from exc
        # queued only once written: answers come in the order of the writes
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(answer)
        try:
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:  # gone: its reader fails `answer`
            log.debug("%s: %r", self.name, exc)
        return await answer

    async def stop(self) -> None:
        """No more calls; the child answers those it was sent, sees the end of its input
        and exits. Killed if it has not within `STOP_WAIT`."""
        if self.lost is None:
            self.lost = "its process was stopped"
        if not self._writer.transport.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                self._writer.write_eof()  # our side shut for writing, theirs still read
        try:
            await within(asyncio.shield(self._reader), STOP_WAIT)
        except TimeoutError:
            log.warning("%s: its process did not stop in %.0fs; killed", self.name, STOP_WAIT)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self._reader

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        """Hand each answer to its call, in order; at end of input (the child exited) fail
        the calls still waiting."""
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
                self.proc.kill()
        unexpected = self.lost is None
        self.lost = self.lost or why
        pending, self._pending = self._pending, collections.deque()
        for answer in pending:
            if not answer.done():
                answer.set_exception(ProcessLost(f"{self.name}: {why}"))
        self._writer.close()
        code = await self.proc.wait()
        if unexpected:
            log.error(
                "%s: %s (exit code %s); a new one starts with the next call", self.name, why, code
            )
