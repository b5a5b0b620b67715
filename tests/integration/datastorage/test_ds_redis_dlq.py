"""The Redis Streams dead-letter queue against a real redis-server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from dstools import event_body
from prometheus_client import CollectorRegistry

from e2ecov.recipes import RedisServer
from signalgate.datastorage.dlq import DEAD_STREAM, STREAM, RedisDeadLetterQueue, ReplayWorker
from signalgate.datastorage.events import validate_event
from signalgate.datastorage.metrics import DataStorageMetrics
from signalgate.datastorage.sqlite import SqliteStore


@pytest.fixture
async def queue(redis_server: RedisServer) -> AsyncIterator[RedisDeadLetterQueue]:
    dlq = RedisDeadLetterQueue(redis_server.url.rsplit("/", 1)[0] + "/7")
    await dlq.open()
    await dlq.redis.delete(STREAM, DEAD_STREAM)
    try:
        yield dlq
    finally:
        await dlq.redis.delete(STREAM, DEAD_STREAM)
        await dlq.close()


async def test_redis_queue_replays_into_a_store_once(
    queue: RedisDeadLetterQueue, tmp_path: object
) -> None:
    from pathlib import Path

    store = SqliteStore(Path(str(tmp_path)) / "audit.db")
    await store.open()
    try:
        written = [validate_event(event_body("rr-r"), datetime.now(UTC)) for _ in range(5)]
        await queue.put(written, due=time.time())
        await queue.put(written[:2], due=time.time())  # a client retry queued twice
        assert await queue.depth() == 7
        worker = ReplayWorker(queue, store, [0.0], DataStorageMetrics(CollectorRegistry()))
        assert (await worker.run_once()).replayed == 7
        assert await queue.depth() == 0
        rows = await store.chain("rr-r")
        assert [row["event_id"] for row in rows] == [e.event_id for e in written]
    finally:
        await store.close()


async def test_reschedule_and_bury_move_each_entry_once(queue: RedisDeadLetterQueue) -> None:
    written = [validate_event(event_body("rr-d"), datetime.now(UTC)) for _ in range(3)]
    await queue.put(written, due=0)
    letters = await queue.due(time.time(), 10)
    await queue.reschedule(letters)
    await queue.reschedule(letters)  # a second replica acting on the same entries: no-op
    assert await queue.depth() == 3
    letters = await queue.due(None, 10)
    await queue.bury(letters, "attempts exhausted")
    await queue.bury(letters, "attempts exhausted")
    assert await queue.depth() == 0
    dead = await queue.dead()
    assert sorted(d.fields["event_id"] for d in dead) == sorted(e.event_id for e in written)
