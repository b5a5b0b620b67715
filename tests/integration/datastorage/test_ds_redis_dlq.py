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


async def test_replay_dlq_command_drains_the_queue_now(
    queue: RedisDeadLetterQueue, redis_server: RedisServer, tmp_path: object
) -> None:
    import asyncio
    import os
    import subprocess
    import sys
    from pathlib import Path

    written = [validate_event(event_body("rr-cli"), datetime.now(UTC)) for _ in range(4)]
    await queue.put(written, due=time.time() + 3600)  # not due for an hour
    db = Path(str(tmp_path)) / "audit.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE_")}
    env |= {
        "SIGNALGATE_STORE__DSN": f"sqlite:///{db}",
        "SIGNALGATE_DLQ__REDISURL": redis_server.url.rsplit("/", 1)[0] + "/7",
        "SIGNALGATE_DATADIR": str(tmp_path),
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "signalgate.datastorage.cli", "replay-dlq"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "replayed 4, rescheduled 0, dead 0, still queued 0" in result.stdout
    store = SqliteStore(db)
    await store.open()
    try:
        assert len(await store.chain("rr-cli")) == 4
    finally:
        await store.close()
