"""The Redis Streams dead-letter queue against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import orjson
import pytest
from prometheus_client import CollectorRegistry

from e2ecov.recipes import RedisServer
from signalgate.datastorage.dlq import DEAD_STREAM, STREAM, RedisDeadLetterQueue, ReplayWorker
from signalgate.datastorage.dlq.redis_streams import DUE_INDEX, EVENT_INDEX
from signalgate.datastorage.errors import StoreUnavailable
from signalgate.datastorage.events import AuditEvent, validate_event
from signalgate.datastorage.metrics import DataStorageMetrics
from signalgate.datastorage.postgres import PostgresAuditStore
from signalgate.datastorage.sqlite import SqliteAuditStore
from tests.support.event_bodies import event_body

KEYS = (STREAM, DEAD_STREAM, DUE_INDEX, EVENT_INDEX)


@pytest.fixture
async def queue(redis_server: RedisServer) -> AsyncIterator[RedisDeadLetterQueue]:
    dlq = RedisDeadLetterQueue(redis_server.url.rsplit("/", 1)[0] + "/7")
    await dlq.open()
    await dlq.redis.delete(*KEYS)
    try:
        yield dlq
    finally:
        await dlq.redis.delete(*KEYS)
        await dlq.close()


def events(count: int, correlation_id: str = "rr-q") -> list[AuditEvent]:
    return [validate_event(event_body(correlation_id), datetime.now(UTC)) for _ in range(count)]


class DatabaseDown:
    """An audit store whose database refuses every write: the writer queues or refuses."""

    async def write(self, batch: object) -> None:
        raise StoreUnavailable("connection refused")


async def assert_in_step(queue: RedisDeadLetterQueue) -> None:
    """The indexes name exactly the live letters: one due entry each, event ids → live ids."""
    live = {_text(key) for key, _ in await _entries(queue, STREAM)}
    members = cast(list[bytes], await queue.redis.zrange(DUE_INDEX, 0, -1))
    assert sorted(_unpad(m) for m in members) == sorted(live)
    for stream_id in (await queue.redis.hgetall(EVENT_INDEX)).values():
        assert _text(stream_id) in live


def _unpad(member: bytes) -> str:
    ms, seq = member.decode().split("-")
    return f"{int(ms)}-{int(seq)}"


async def _entries(
    queue: RedisDeadLetterQueue, stream: str
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """A stream's entries as the queue's client (bytes, not decoded) returns them."""
    return cast(list[tuple[bytes, dict[bytes, bytes]]], await queue.redis.xrange(stream))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def test_redis_queue_replays_into_a_store_once(
    queue: RedisDeadLetterQueue, tmp_path: object
) -> None:
    from pathlib import Path

    store = SqliteAuditStore(Path(str(tmp_path)) / "audit.db")
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
    store = SqliteAuditStore(db)
    await store.open()
    try:
        assert len(await store.chain("rr-cli")) == 4
    finally:
        await store.close()


async def test_a_poll_reads_the_due_letters_only(queue: RedisDeadLetterQueue) -> None:
    """Thousands not due, two due: the poll looks up two stream entries (a scan of the
    stream, as before, needed a page read per thousand letters)."""
    later = events(4000)
    for start in range(0, len(later), 500):
        await queue.put(later[start : start + 500], due=time.time() + 3600)
    due_now = events(2)
    await queue.put(due_now, due=time.time() - 1)
    await queue.redis.config_resetstat()
    letters = await queue.due(time.time(), 500)
    assert [letter.event_id for letter in letters] == [e.event_id for e in due_now]
    stats = await queue.redis.info("commandstats")
    assert stats["cmdstat_xrange"]["calls"] == 2  # one lookup per due letter, no page scan
    assert stats["cmdstat_zrangebyscore"]["calls"] == 1


async def test_due_letters_come_earliest_due_first_and_in_queue_order(
    queue: RedisDeadLetterQueue,
) -> None:
    """Equal dues keep queue order past ten letters in one millisecond ("1-10" < "1-9")."""
    now = time.time()
    late, early = events(3), events(25)
    await queue.put(late, due=now - 10)
    await queue.put(early, due=now - 20)
    await queue.put(events(2), due=now + 3600)
    letters = await queue.due(now, 500)
    assert [ltr.event_id for ltr in letters] == [e.event_id for e in early + late]
    assert [ltr.event_id for ltr in await queue.due(now, 7)] == [e.event_id for e in early[:7]]
    drained = await queue.due(None, 500)
    assert [ltr.event_id for ltr in drained][:28] == [e.event_id for e in late + early]
    assert len(drained) == 30
    await assert_in_step(queue)


async def test_letters_of_the_previous_version_are_indexed_and_replayed(
    queue: RedisDeadLetterQueue, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A stream written before the index existed: `open()` indexes it; a letter an old
    replica adds later is indexed by the next polls; all replay once, in queue order."""
    old = events(4, "rr-old")
    for event in old[:3]:
        await queue.redis.xadd(
            STREAM, {"event": orjson.dumps(event.fields), "attempts": 0, "due": repr(time.time())}
        )
    await queue.redis.xadd(STREAM, {"event": b"{torn", "attempts": 0, "due": "0"})
    upgraded = RedisDeadLetterQueue(redis_server.url.rsplit("/", 1)[0] + "/7")
    await upgraded.open()
    try:
        assert await upgraded.redis.zcard(DUE_INDEX) == 4
        assert set(await upgraded.waiting([e.event_id for e in old])) == {
            e.event_id for e in old[:3]
        }
        await queue.redis.xadd(  # an old replica still running during the rollout
            STREAM, {"event": orjson.dumps(old[3].fields), "attempts": 0, "due": repr(time.time())}
        )
        await upgraded.due(time.time(), 500)  # notices a letter without an index entry
        assert old[3].event_id in await upgraded.waiting([old[3].event_id])
        await assert_in_step(upgraded)

        store = SqliteAuditStore(tmp_path / "audit.db")
        await store.open()
        try:
            worker = ReplayWorker(upgraded, store, [0.0], DataStorageMetrics(CollectorRegistry()))
            report = await worker.run_once()
            assert (report.replayed, report.dead) == (4, 1)
            rows = await store.chain("rr-old")
            assert [row["event_id"] for row in rows] == [e.event_id for e in old]
        finally:
            await store.close()
        # the torn entry is buried as it was, for a person to look at; it no longer waits
        assert await upgraded.depth() == 0
        [(_, dead)] = await _entries(upgraded, DEAD_STREAM)
        assert (dead[b"event"], dead[b"reason"]) == (b"{torn", b"invalid")
        await assert_in_step(upgraded)
    finally:
        await upgraded.close()


async def test_two_replicas_acting_on_the_same_letters_never_duplicate_or_lose_one(
    queue: RedisDeadLetterQueue, redis_server: RedisServer
) -> None:
    """Both take the same due letters and act on them at once, in every combination: each
    letter ends up exactly once — still queued, dead, or acknowledged — with the indexes
    in step."""
    other = RedisDeadLetterQueue(redis_server.url.rsplit("/", 1)[0] + "/7")
    await other.open()
    try:
        written = events(300)
        await queue.put(written, due=0)
        mine, theirs = await asyncio.gather(
            queue.due(time.time(), 500), other.due(time.time(), 500)
        )
        assert [ltr.key for ltr in mine] == [ltr.key for ltr in theirs]
        later = [replace(ltr, attempts=1, due=time.time() + 60) for ltr in mine]
        await asyncio.gather(
            queue.ack(mine[:100]),
            other.reschedule(later[:100]),
            queue.bury(mine[100:200], "conflict"),
            other.reschedule(later[100:200]),
            queue.reschedule(later[200:]),
            other.reschedule(later[200:]),
            other.ack(theirs[200:250]),
        )
        queued = [ltr.event_id for ltr in await queue.due(None, 1000)]
        dead = [ltr.event_id for ltr in await queue.dead()]
        assert len(queued) == len(set(queued))
        assert len(dead) == len(set(dead))
        assert not set(queued) & set(dead)
        acked = {e.event_id for e in written} - set(queued) - set(dead)
        assert len(queued) + len(dead) + len(acked) == 300
        await assert_in_step(queue)
        assert set(await queue.waiting([e.event_id for e in written])) == set(queued)
    finally:
        await other.close()


async def test_two_replay_workers_store_every_letter_once(
    queue: RedisDeadLetterQueue, redis_server: RedisServer, postgres_dsn: str
) -> None:
    other = RedisDeadLetterQueue(redis_server.url.rsplit("/", 1)[0] + "/7")
    await other.open()
    stores = [PostgresAuditStore(postgres_dsn, auto_migrate=True, pool_size=2) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        written = [e for n in range(8) for e in events(50, f"rr-two-{n}")]
        for start in range(0, len(written), 100):
            await queue.put(written[start : start + 100], due=0)
        workers = [
            ReplayWorker(
                q, s, [0.0, 0.0, 0.0], DataStorageMetrics(CollectorRegistry()), batch_size=60
            )
            for q, s in ((queue, stores[0]), (other, stores[1]))
        ]
        while await queue.depth():
            await asyncio.gather(*(worker.run_once() for worker in workers))
        assert await queue.dead() == []
        for n in range(8):
            rows = await stores[0].chain(f"rr-two-{n}")
            assert sorted(row["event_id"] for row in rows) == sorted(
                e.event_id for e in written[n * 50 : (n + 1) * 50]
            )
        await assert_in_step(queue)
        assert await queue.redis.hlen(EVENT_INDEX) == 0
    finally:
        for store in stores:
            await store.close()
        await other.close()


async def test_an_unreadable_letter_is_buried_not_returned_at_every_poll(
    queue: RedisDeadLetterQueue, tmp_path: Path
) -> None:
    """A damaged entry (its due index entry is 0, so it heads every poll) is buried by the
    first replay with its original bytes; the letters behind it replay, later polls are empty."""
    await queue.redis.xadd(STREAM, {"event": b"[1, 2]", "attempts": b"x", "due": b"soon"})
    await queue.redis.xadd(STREAM, {"attempts": b"0", "due": b"0"})  # no event at all
    good = events(2, "rr-good")
    await queue.put(good, due=time.time())
    await queue.close()
    await queue.open()  # indexes the damaged entries (due 0: the front of the queue)
    store = SqliteAuditStore(tmp_path / "audit.db")
    await store.open()
    try:
        worker = ReplayWorker(queue, store, [0.0], DataStorageMetrics(CollectorRegistry()))
        report = await worker.run_once()
        assert (report.replayed, report.dead) == (2, 2)
        assert not (await worker.run_once()).busy
        assert [row["event_id"] for row in await store.chain("rr-good")] == [
            e.event_id for e in good
        ]
    finally:
        await store.close()
    assert await queue.depth() == 0
    dead = [fields for _, fields in await _entries(queue, DEAD_STREAM)]
    assert [(d[b"event"], d[b"reason"]) for d in dead] == [
        (b"[1, 2]", b"invalid"),
        (b"", b"invalid"),
    ]
    await assert_in_step(queue)


async def test_a_redis_that_would_not_keep_letters_takes_none(
    private_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis without an append-only file loses every letter when it restarts, and each was
    answered 202 (an outside check: 560 acknowledged events lost, nothing counting them).
    Such a Redis stops start-up; one that becomes so later takes nothing, so a write the
    database refuses is answered 500 (lost, and said so), not 202."""
    from signalgate.datastorage.dlq import redis_streams
    from signalgate.datastorage.errors import DeadLetterUnavailable, QueueNotDurable
    from signalgate.datastorage.writer import AuditWriter, EventsLost

    admin = RedisDeadLetterQueue(private_redis.url)
    await admin.open()  # the recipe's Redis keeps an append-only file: taken
    try:
        await admin.redis.config_set("appendonly", "no")
        refused = RedisDeadLetterQueue(private_redis.url)
        with pytest.raises(QueueNotDurable, match="appendonly no"):
            await refused.open()
        await refused.close()

        trusting = RedisDeadLetterQueue(private_redis.url, trust_persistence=True)
        await trusting.open()  # told to trust it (a managed Redis refusing CONFIG)
        await trusting.put(events(1), due=0.0)
        assert await trusting.depth() == 1
        await trusting.close()

        # durable at start, then not: found within PERSISTENCE_RECHECK (0 here)
        await admin.redis.config_set("appendonly", "yes")
        monkeypatch.setattr(redis_streams, "PERSISTENCE_RECHECK", 0.0)
        queue = RedisDeadLetterQueue(private_redis.url)
        await queue.open()
        await queue.put(events(1), due=0.0)
        await admin.redis.config_set("appendonly", "no")
        with pytest.raises(DeadLetterUnavailable, match="memory only"):
            await queue.ping()  # readiness says so

        metrics = DataStorageMetrics(CollectorRegistry())
        writer = AuditWriter(DatabaseDown(), queue, metrics)  # type: ignore[arg-type]
        with pytest.raises(EventsLost):
            await writer.write(events(3))
        assert await queue.depth() == 2  # the three were not taken
        await queue.close()
    finally:
        # (left without its append-only file: turned on again, Redis writes a first one in
        # the background and will not stop on SIGTERM until that is done)
        await admin.close()


async def test_a_redis_out_of_memory_takes_a_batch_whole_or_not_at_all(
    private_redis: RedisServer,
) -> None:
    """`maxmemory` with `noeviction`: Redis refuses a script at its first write while over
    the limit, and never stops one mid-way once it wrote (it cannot undo the writes). So a
    batch begun under the limit is queued whole, however far past the limit it takes Redis,
    and one begun over it is refused whole: never part of a batch in the queue, answered as
    though none of it was (500, the sender keeping it), nor a 202 for letters not queued."""
    from signalgate.datastorage.errors import DeadLetterUnavailable
    from signalgate.datastorage.writer import AuditWriter, EventsLost

    queue = RedisDeadLetterQueue(private_redis.url)
    await queue.open()
    try:
        used = int((await queue.redis.info("memory"))["used_memory"])
        limit = used + 1024 * 1024
        await queue.redis.config_set("maxmemory-policy", "noeviction")
        await queue.redis.config_set("maxmemory", limit)
        queued: set[str] = set()
        refused = crossed = 0
        for _ in range(100):  # batches of about 100 KB until Redis refuses some
            if refused == 3:
                break
            batch = events(100)
            try:
                await queue.put(batch, due=0.0)
            except DeadLetterUnavailable as exc:
                assert "maxmemory" in str(exc)
                refused += 1
            else:
                queued |= {event.event_id for event in batch}
                crossed += int((await queue.redis.info("memory"))["used_memory"]) > limit
            letters = await queue.due(None, 10_000)
            assert {letter.event_id for letter in letters} == queued  # never part of a batch
            await assert_in_step(queue)
        assert refused == 3, "Redis never refused a batch"
        assert crossed, "no batch began under the limit and ended past it"

        metrics = DataStorageMetrics(CollectorRegistry())
        writer = AuditWriter(DatabaseDown(), queue, metrics)  # type: ignore[arg-type]
        with pytest.raises(EventsLost):
            await writer.write(events(3))
        assert await queue.depth() == len(queued)

        # replays only delete, and a reschedule's delete comes before its add: both go on
        letters = await queue.due(None, 10)
        await queue.reschedule([replace(letter, due=1.0) for letter in letters[:5]])
        await queue.ack(letters[5:])
        assert await queue.depth() == len(queued) - 5
        await assert_in_step(queue)
    finally:
        await queue.close()
