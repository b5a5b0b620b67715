"""The bound on costly reads at once (common/reads.py), in-process: who runs, who waits,
who is refused, and what a client that goes away gives back. Reads are held by events, and
a client "goes away" when its ASGI `receive` says `http.disconnect`."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from signalgate.common.problems import Problem
from signalgate.common.reads import ReadLimiter, ReadMetrics


class Client:
    """An ASGI `receive` of a request without a body, disconnected by `leave()`."""

    def __init__(self) -> None:
        self.left = asyncio.Event()
        self.sent_request = False

    async def receive(self) -> dict[str, object]:
        if not self.sent_request:
            self.sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.left.wait()
        return {"type": "http.disconnect"}

    def leave(self) -> None:
        self.left.set()


class Read:
    """A read that runs until `release()`; counts its starts and cancellations."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.released = asyncio.Event()
        self.cancelled = False

    async def __call__(self) -> str:
        self.started.set()
        try:
            await self.released.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return "page"

    def release(self) -> None:
        self.released.set()


def limiter(
    running: int = 1, waiting: int = 1, wait: float = 60.0, closing: asyncio.Event | None = None
) -> ReadLimiter:
    metrics = ReadMetrics("test", CollectorRegistry())
    return ReadLimiter(running, waiting, wait, metrics, closing or asyncio.Event())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_beyond_the_places_and_the_queue_is_503_naming_the_settings() -> None:
    bound = limiter(running=1, waiting=1)
    first, second = Read(), Read()
    running = asyncio.create_task(bound.run(Client().receive, first))
    waiting = asyncio.create_task(bound.run(Client().receive, second))
    await first.started.wait()
    await settle()
    with pytest.raises(Problem) as refused:
        await bound.run(Client().receive, Read())
    assert refused.value.status == 503
    assert refused.value.headers == {"Retry-After": "1"}
    assert "server.maxConcurrentReads" in refused.value.detail
    assert not second.started.is_set()  # it waits its turn
    first.release()
    assert await running == "page"
    await second.started.wait()  # the place is handed on
    second.release()
    assert await waiting == "page"
    assert bound.running == 0 and not bound.queue


async def test_a_read_that_waits_too_long_is_503_and_never_starts() -> None:
    bound = limiter(running=1, waiting=1, wait=0.01)
    first, late = Read(), Read()
    running = asyncio.create_task(bound.run(Client().receive, first))
    await first.started.wait()
    with pytest.raises(Problem) as refused:
        await bound.run(Client().receive, late)
    assert refused.value.status == 503
    assert "server.readQueueTimeout" in refused.value.detail
    assert not late.started.is_set() and not bound.queue
    first.release()
    await running


async def test_a_client_gone_while_waiting_leaves_the_queue_and_its_read_never_starts() -> None:
    bound = limiter(running=1, waiting=1)
    first, gone_read, after = Read(), Read(), Read()
    running = asyncio.create_task(bound.run(Client().receive, first))
    await first.started.wait()
    client = Client()
    gone = asyncio.create_task(bound.run(client.receive, gone_read))
    await settle()
    assert len(bound.queue) == 1
    client.leave()
    with pytest.raises(Problem) as stopped:
        await gone
    assert stopped.value.status == 499
    assert not bound.queue  # its place in the queue is free for another
    waiting = asyncio.create_task(bound.run(Client().receive, after))
    await settle()
    first.release()
    await running
    await after.started.wait()
    after.release()
    await waiting
    assert not gone_read.started.is_set()


async def test_a_client_gone_while_its_read_runs_cancels_it_and_hands_its_place_on() -> None:
    bound = limiter(running=1, waiting=1)
    first, second = Read(), Read()
    client = Client()
    running = asyncio.create_task(bound.run(client.receive, first))
    await first.started.wait()
    waiting = asyncio.create_task(bound.run(Client().receive, second))
    await settle()
    client.leave()
    with pytest.raises(Problem) as stopped:
        await running
    assert stopped.value.status == 499
    assert first.cancelled
    await second.started.wait()
    second.release()
    assert await waiting == "page"
    assert bound.running == 0


async def test_a_failing_read_gives_its_place_back() -> None:
    bound = limiter(running=1, waiting=0)

    async def failing() -> str:
        raise RuntimeError("store away")

    with pytest.raises(RuntimeError):
        await bound.run(Client().receive, failing)
    assert bound.running == 0
    read = Read()
    read.release()
    assert await bound.run(Client().receive, read) == "page"


async def test_a_request_cancelled_while_its_read_stops_keeps_the_place_until_then() -> None:
    """A client goes away, its read is being stopped (SQLite's child finishes its statement)
    and the request is cancelled meanwhile (the server's shutdown): the request ended with
    InvalidStateError ('Result is not set', a 500 and a traceback) instead of its
    cancellation, and gave its place back while the read still held the store, so one more
    read than `server.maxConcurrentReads` ran (an outside check)."""
    bound = limiter(running=1, waiting=1)
    stopped = asyncio.Event()

    async def slow_to_stop() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await stopped.wait()
            raise
        return "page"

    client = Client()
    request = asyncio.create_task(bound.run(client.receive, slow_to_stop))
    await settle()
    client.leave()
    await settle()
    request.cancel()
    await settle()
    assert not request.done() and bound.running == 1  # the read has not stopped yet
    stopped.set()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert bound.running == 0


async def test_closing_refuses_the_waiting_reads_and_new_ones_at_once() -> None:
    """The service stops accepting: a read waiting for a place is answered 503 then, not
    cancelled at the grace's end (a 500 and a traceback); a new one likewise; the running one
    goes on."""
    closing = asyncio.Event()
    bound = limiter(running=1, waiting=1, closing=closing)
    first, queued = Read(), Read()
    running = asyncio.create_task(bound.run(Client().receive, first))
    await first.started.wait()
    waiting = asyncio.create_task(bound.run(Client().receive, queued))
    await settle()
    closing.set()
    with pytest.raises(Problem) as refused:
        await waiting
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
    assert "stopping" in refused.value.detail
    assert not queued.started.is_set() and not bound.queue
    with pytest.raises(Problem) as new:
        await bound.run(Client().receive, Read())
    assert new.value.status == 503
    assert bound.metrics.refused_draining._value.get() == 2
    first.release()
    assert await running == "page"
    assert bound.running == 0


async def test_a_running_read_cut_at_the_grace_end_is_a_503_once_it_has_stopped() -> None:
    """The server cancels what still runs when its shutdown grace ends: the read is stopped
    and the request answered 503, not ended by its cancellation (a 500 and a traceback)."""
    closing = asyncio.Event()
    bound = limiter(running=1, waiting=1, closing=closing)
    read = Read()
    request = asyncio.create_task(bound.run(Client().receive, read))
    await read.started.wait()
    closing.set()
    request.cancel()
    with pytest.raises(Problem) as cut:
        await request
    assert cut.value.status == 503
    assert "server.shutdownGrace" in cut.value.detail
    assert read.cancelled and bound.running == 0
    assert bound.metrics.refused_cut._value.get() == 1


async def test_a_request_cancelled_while_not_closing_stays_cancelled() -> None:
    bound = limiter(running=1, waiting=1)
    read = Read()
    request = asyncio.create_task(bound.run(Client().receive, read))
    await read.started.wait()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert read.cancelled and bound.running == 0
