"""Costly reads at once: the one bound both services' many-row reads pass through.

A costly read is one that can touch many rows and build a large answer: DataStorage's event
query pages and chain checks, the Gateway's RR list. Unbounded, many of them at once took
SQLite's one connection in turns and PostgreSQL's whole pool, queuing every other read
behind them, and held every page being built in memory together (a page of 1,000 events
near the 256 KiB maximum takes hundreds of megabytes to build); a client that had given up
left its query running to the end. So, per process:

- at most `running` costly reads run at once (`server.maxConcurrentReads`); the answer is
  built inside the place, so the memory of pages being built is bounded with them;
- at most `waiting` more wait for a place, in arrival order (`server.maxQueuedReads`), each
  for at most `wait` seconds (`server.readQueueTimeout`);
- a read beyond those, or one that waited too long, is answered 503 with `Retry-After` and a
  problem document naming the bound (nothing was read: a retry may be served), and counted in
  `<service>_reads_refused_total{reason}`;
- a read whose client goes away (ASGI `http.disconnect`, which the server delivers when the
  connection closes) while it waits leaves the queue and never starts; one whose client goes
  away while it runs is cancelled (asyncpg then cancels the query on the server; SQLite's
  child process finishes the statement it is in, but a chain check reads no further page),
  and its place goes to the next;
- once the service stops accepting (`closing`: SIGTERM, after `server.shutdownDelay`), the
  reads waiting and any new one are refused at once, 503 as above (`reason="draining"`):
  waiting on, they were cancelled by the server at the grace's end (`server.shutdownGrace`),
  which answered 500 with a traceback in the log. A read still running then is cut by that
  cancellation; it is answered 503 too (`reason="grace_ended"`), after its read has stopped.

Probes, metrics and writes never come here: they must be answered while reads are saturated.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.types import Receive

from signalgate.common.problems import Problem, service_unavailable

T = TypeVar("T")

# what a client that went away is "answered" (nobody reads it; the request metrics and the
# log show it as nginx's 499, not as a failure of the service)
CLIENT_GONE = "the client went away before its read was answered; the read was stopped"
RETRY_AFTER = 1  # seconds: places free as soon as a read ends


class ReadMetrics:
    """`<service>_reads_refused_total{reason}` (`queue_full`, `wait_timeout`, `draining`,
    `grace_ended`) and `<service>_reads{state}` (`running`, `waiting`) on `registry`."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.refused = Counter(
            f"{service}_reads_refused_total",
            "Costly reads answered 503 for the bound on reads at once, by reason "
            "(queue_full, wait_timeout, draining: the service stopping; grace_ended: cut, "
            "running, at the end of its shutdown grace)",
            ["reason"],
            registry=registry,
        )
        self.refused_full = self.refused.labels("queue_full")
        self.refused_late = self.refused.labels("wait_timeout")
        self.refused_draining = self.refused.labels("draining")
        self.refused_cut = self.refused.labels("grace_ended")
        self.reads = Gauge(
            f"{service}_reads",
            "Costly reads (queries, lists, chain checks) running or waiting for a place",
            ["state"],
            registry=registry,
        )
        self.running = self.reads.labels("running")
        self.waiting = self.reads.labels("waiting")


class ReadLimiter:
    """The bound on costly reads at once of one process (see the module's docstring).
    `closing` is set when the service stops accepting (its `Lifecycle.closing`)."""

    def __init__(
        self, running: int, waiting: int, wait: float, metrics: ReadMetrics, closing: asyncio.Event
    ) -> None:
        self.max_running = running
        self.max_waiting = waiting
        self.wait = wait
        self.metrics = metrics
        self.closing = closing
        self.running = 0
        # the waiters in arrival order; a place is handed on by setting one's result
        self.queue: deque[asyncio.Future[None]] = deque()

    async def run(self, receive: Receive, read: Callable[[], Awaitable[T]]) -> T:
        """`read()` in a place, stopped when the client of `receive` goes away. Raises the
        503 `Problem` when no place is free in time or the service is stopping, and a 499 one
        when the client left."""
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await self._take(gone)
            try:
                return await _unless_gone(read, gone)
            except asyncio.CancelledError:
                if not self.closing.is_set():
                    raise
                # the server cancels what still runs when its shutdown grace ends; the read
                # has stopped (`_unless_gone`), and its client is told so, not 500 and a
                # traceback. Nothing else cancels a request: this one is answered instead.
                _uncancel()
                self.metrics.refused_cut.inc()
                raise service_unavailable(
                    "the service stopped before this costly read ended (server.shutdownGrace); "
                    "it was cut; retry on another instance",
                    RETRY_AFTER,
                ) from None
            finally:
                self._give()
        finally:
            gone.cancel()

    async def _take(self, gone: asyncio.Future[None]) -> None:
        if self.closing.is_set():
            raise self._refused_draining()
        if self.running < self.max_running and not self.queue:
            self._set_running(self.running + 1)
            return
        if gone.done():
            raise _client_gone()
        if len(self.queue) >= self.max_waiting:
            self.metrics.refused_full.inc()
            raise service_unavailable(
                f"{self.max_running} costly reads are running and {self.max_waiting} waiting "
                "(server.maxConcurrentReads, server.maxQueuedReads); nothing was read; retry "
                "shortly",
                RETRY_AFTER,
            )
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.append(turn)
        self.metrics.waiting.set(len(self.queue))
        closing = asyncio.ensure_future(self.closing.wait())
        either: set[asyncio.Future[Any]] = {turn, gone, closing}
        try:
            await asyncio.wait(either, timeout=self.wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not turn.done():  # not handed a place: leave the queue
                turn.cancel()
                self.queue.remove(turn)
                self.metrics.waiting.set(len(self.queue))
            elif not turn.cancelled() and (gone.done() or _cancelling()):
                self._give()  # handed a place it will not use: hand it on
        if turn.cancelled():
            if gone.done():
                raise _client_gone()
            if self.closing.is_set():
                raise self._refused_draining()
            self.metrics.refused_late.inc()
            raise service_unavailable(
                f"a costly read waited {self.wait:g}s for one of the {self.max_running} places "
                "(server.maxConcurrentReads, server.readQueueTimeout); nothing was read; retry "
                "shortly",
                RETRY_AFTER,
            )
        if gone.done():
            raise _client_gone()

    def _refused_draining(self) -> Problem:
        self.metrics.refused_draining.inc()
        return service_unavailable(
            "the service is stopping: costly reads waiting for a place, and new ones, are "
            "refused; nothing was read; retry on another instance",
            RETRY_AFTER,
        )

    def _give(self) -> None:
        """A place ends: the first waiter takes it over, or it is free."""
        while self.queue:
            turn = self.queue.popleft()
            self.metrics.waiting.set(len(self.queue))
            if not turn.done():
                turn.set_result(None)
                return
        self._set_running(self.running - 1)

    def _set_running(self, running: int) -> None:
        self.running = running
        self.metrics.running.set(running)


async def _disconnected(receive: Receive) -> None:
    """Returns once the client has gone (`http.disconnect`). A costly read's body, if any,
    has been read before (verify-chain's POST): what arrives here is the end of an empty
    body, then nothing until the connection closes or the answer is sent."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(read: Callable[[], Awaitable[T]], gone: asyncio.Future[None]) -> T:
    """`read()`, cancelled if the client goes away first."""
    task = asyncio.ensure_future(read())
    either: set[asyncio.Future[Any]] = {task, gone}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            # the place is given back once the read has stopped, not while it still holds
            # the store's connection; a cancellation of this request meanwhile (the
            # server's shutdown) waits for that too, then goes on as a cancellation
            cancelled = False
            while not task.done():
                try:
                    await asyncio.wait({task})
                except asyncio.CancelledError:
                    cancelled = True
            if cancelled:
                raise asyncio.CancelledError
    if task.cancelled():
        raise _client_gone()
    return task.result()


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _client_gone() -> Problem:
    return Problem(499, "client-closed-request", CLIENT_GONE)
