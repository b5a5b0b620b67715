"""Cost of one dead-letter poll when a long outage left many letters waiting for later.

    python bench/dlq.py [--sizes 10000,100000] [--due 5] [--limit 500] [--queue redis,file]

For each size N, fills `audit:dlq` on a private redis-server (system binary, e2ecov recipe)
with N letters due in an hour plus a few due now, then times one poll `due(now, limit)` two
ways, side by side: the full scan of the previous version (XRANGE from the start, filtering by
due — reproduced below as the baseline) and `RedisDeadLetterQueue.due` (the due-time index).
Also prints what the index costs elsewhere: queueing a batch of 500, and indexing on `open()`
a stream of N letters an earlier version wrote without one.

The file queue (the default without Redis), with the same N: one poll with nothing due (the
replay worker's poll between retries, and its depth gauge), as the previous version made it
(the whole file read and parsed: reproduced as the baseline) and from the queue's mirror, and
the first poll after another process changed the file (which reads it again).

Then the writes that empty the file queue, with all N letters due: a drain in batches of
`limit` (a replay pass each), and single acks (a batch with a conflict or a missing parent
is replayed one letter at a time), each as the previous version made them (every change
rewrote the whole file: reproduced as the baseline) and as now (changes appended as small
records, the file rewritten only once its stale lines outnumber its letters): the bytes
written (/proc's wchar) and the time.

Then a replay of what an outage leaves (`--replay`, events; `--queue` naming `replay`): a
file queue of parent and child events in pairs, the children due before their parents (as
when the parents' letters were rescheduled), replayed by the replay worker into a real
SQLite audit store until the queue is empty: the previous version (a pass the store refused
in part was replayed one letter at a time, a store write and a queue change each:
reproduced as the baseline) and now (the refused letters taken out, the rest written
together), side by side, in events/s, every event's chain checked afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2ecov.recipes import RedisServer
from signalgate.datastorage.chain import verify
from signalgate.datastorage.dlq import (
    STREAM,
    FileDeadLetterQueue,
    RedisDeadLetterQueue,
    ReplayWorker,
)
from signalgate.datastorage.dlq.base import Letter
from signalgate.datastorage.dlq.file import _changed
from signalgate.datastorage.dlq.index import Change, Entry
from signalgate.datastorage.dlq.redis_streams import DUE_INDEX, EVENT_INDEX
from signalgate.datastorage.dlq.replay import ReplayReport
from signalgate.datastorage.errors import (
    Conflict,
    ForeignParent,
    MissingParent,
    StoreUnavailable,
)
from signalgate.datastorage.events import AuditEvent, validate_event
from signalgate.datastorage.metrics import DataStorageMetrics
from signalgate.datastorage.sqlite import SqliteAuditStore
from tests.support.event_bodies import event_body

PUT_BATCH = 500


def template() -> AuditEvent:
    """A Gateway-like event; copies differ only by `event_id` (all the queue looks at)."""
    body = event_body(
        "rr-bench",
        namespace="prod",
        event_data={
            "signal_name": "KubePodCrashLooping",
            "namespace": "prod",
            "resource_kind": "Pod",
            "resource_name": "api-7d9f8-x2x4k",
            "occurrence_count": 1,
            "signal_labels": {"alertname": "KubePodCrashLooping", "severity": "critical"},
        },
    )
    return validate_event(body, datetime.now(UTC))


def copies(event: AuditEvent, count: int) -> list[AuditEvent]:
    return [
        replace(event, fields={**event.fields, "event_id": str(uuid.uuid4())}) for _ in range(count)
    ]


async def scan_due(redis: aioredis.Redis, now: float, limit: int) -> int:
    """The previous version's poll (the baseline): page through the whole stream."""
    found = 0
    start = "-"
    while found < limit:
        page: Any = await redis.xrange(STREAM, min=start, max="+", count=1000)
        if not page:
            break
        for _key, data in page:
            orjson.loads(data[b"event"])
            if float(data[b"due"]) <= now:
                found += 1
                if found >= limit:
                    break
        start = "(" + page[-1][0].decode()
    return found


async def poll(queue: RedisDeadLetterQueue, now: float, limit: int) -> int:
    return len(await queue.due(now, limit))


async def median_ms(call: Callable[[], Awaitable[int]], runs: int) -> tuple[float, int]:
    """Median wall time of `runs` calls, and what the last call returned."""
    times = []
    result = 0
    for _ in range(runs):
        started = time.perf_counter()
        result = await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, result


async def fill(queue: RedisDeadLetterQueue, event: AuditEvent, waiting: int, due_now: int) -> None:
    later = time.time() + 3600
    for offset in range(0, waiting, PUT_BATCH):
        await queue.put(copies(event, min(PUT_BATCH, waiting - offset)), due=later)
    await queue.put(copies(event, due_now), due=0.0)


async def old_format(redis: aioredis.Redis, event: AuditEvent, count: int) -> None:
    """Letters as the previous version queued them: stream entries, no index."""
    for offset in range(0, count, PUT_BATCH):
        pipe = redis.pipeline(transaction=False)
        for copy in copies(event, min(PUT_BATCH, count - offset)):
            fields = {"event": orjson.dumps(copy.fields), "attempts": 0, "due": "0"}
            pipe.xadd(STREAM, fields)  # type: ignore[arg-type]
        await pipe.execute()


async def run(sizes: list[int], due_now: int, limit: int) -> None:
    server = RedisServer().start()
    event = template()
    try:
        queue = RedisDeadLetterQueue(server.url)
        await queue.open()
        redis = queue.redis
        version = (await redis.info("server"))["redis_version"]
        print(
            f"one dead-letter poll due(now, limit={limit}) on redis-server {version}, "
            f"{due_now} letters due among N not due for an hour (median):"
        )
        print(f"  {'N':>9}   {'full scan (before)':>18}   {'due index (now)':>15}   found")
        for size in sizes:
            await redis.delete(STREAM, DUE_INDEX, EVENT_INDEX)
            await fill(queue, event, size, due_now)
            now = time.time()
            before, found_before = await median_ms(partial(scan_due, redis, now, limit), 5)
            after, found_after = await median_ms(partial(poll, queue, now, limit), 50)
            print(
                f"  {size:>9,}   {before:>15.2f} ms   {after:>12.3f} ms   "
                f"{found_before} / {found_after}"
            )

        await redis.delete(STREAM, DUE_INDEX, EVENT_INDEX)

        async def put() -> int:
            await queue.put(copies(event, PUT_BATCH), due=time.time())
            return PUT_BATCH

        put_ms, _ = await median_ms(put, 20)
        print(
            f"queueing a batch of {PUT_BATCH} (stream + both indexes, one script): {put_ms:.1f} ms"
        )

        size = max(sizes)
        await redis.delete(STREAM, DUE_INDEX, EVENT_INDEX)
        await old_format(redis, event, size)
        upgraded = RedisDeadLetterQueue(server.url)
        started = time.perf_counter()
        await upgraded.open()
        seconds = time.perf_counter() - started
        indexed = await redis.zcard(DUE_INDEX)
        print(
            f"open() indexing {size:,} letters of the previous version (once, at upgrade): "
            f"{seconds:.2f} s ({indexed:,} indexed)"
        )
        await upgraded.close()
        await queue.close()
    finally:
        server.cleanup()


async def run_file(sizes: list[int], limit: int) -> None:
    event = template()
    print(
        f"one poll of the file queue due(now, limit={limit}) and its depth, N letters not due "
        "for an hour (median):"
    )
    print(
        f"  {'N':>9}   {'file size':>9}   {'whole file read (before)':>24}   "
        f"{'mirror (now)':>12}   {'after another process wrote':>27}"
    )
    with tempfile.TemporaryDirectory() as directory:
        for size in sizes:
            path = Path(directory) / f"dlq-{size}.jsonl"
            queue = FileDeadLetterQueue(path)
            await queue.open()
            later = time.time() + 3600
            for offset in range(0, size, PUT_BATCH):
                await queue.put(copies(event, min(PUT_BATCH, size - offset)), due=later)

            async def whole_read(queue: FileDeadLetterQueue = queue) -> int:
                queue._mirror = None  # what every poll did before
                found = len(await queue.due(time.time(), limit))
                queue._mirror = None
                return found + await queue.depth()

            async def mirrored(queue: FileDeadLetterQueue = queue) -> int:
                return len(await queue.due(time.time(), limit)) + await queue.depth()

            before, _ = await median_ms(whole_read, 5)
            now, _ = await median_ms(mirrored, 50)
            other, took = FileDeadLetterQueue(path), []
            for _ in range(5):  # another process queues one letter; the next poll, timed
                await other.put(copies(event, 1), due=later)
                started = time.perf_counter()
                await queue.due(time.time(), limit)
                took.append(time.perf_counter() - started)
            changed = statistics.median(took) * 1000
            print(
                f"  {size:>9,}   {path.stat().st_size / 2**20:>6.1f} MB   {before:>21.2f} ms   "
                f"{now:>9.3f} ms   {changed:>24.2f} ms"
            )


class RewriteEachChange(FileDeadLetterQueue):
    """The previous version's changes: the whole file rewritten at each (the baseline)."""

    def _recorded(
        self, letters: dict[str, Entry], pending: dict[str, Change | None]
    ) -> OSError | None:
        kept = self._replace(_changed(letters.values(), pending))
        letters.clear()
        letters.update((entry.key, entry) for entry in kept)
        self._lines = len(kept)
        return None


def written_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


async def drained(
    kind: type[FileDeadLetterQueue], path: Path, size: int, limit: int, singles: int
) -> tuple[float, float, float, float]:
    """MB written and seconds taken to drain `size` letters in batches of `limit`, then to
    ack `singles` letters one by one from a full queue of `size`."""
    event = template()
    figures = []
    for batch, count in ((limit, size), (1, singles)):
        path.unlink(missing_ok=True)
        queue = kind(path)
        await queue.open()
        for offset in range(0, size, PUT_BATCH):
            await queue.put(copies(event, min(PUT_BATCH, size - offset)), due=time.time() - 1)
        before, started = written_bytes(), time.perf_counter()
        if batch == 1:  # one pass's letters replayed one at a time, as the replay does
            for letter in await queue.due(time.time(), count):
                await queue.ack([letter])
        while batch > 1 and (letters := await queue.due(time.time(), batch)):
            await queue.ack(letters)
        figures += [(written_bytes() - before) / 1e6, time.perf_counter() - started]
    return figures[0], figures[1], figures[2], figures[3]


async def run_drain(sizes: list[int], limit: int, singles: int) -> None:
    print(
        f"emptying the file queue: N letters due acked in batches of {limit}, and {singles} "
        "acked one by one from a queue of N (MB written, seconds):"
    )
    print(
        f"  {'N':>9}   {'batches, before':>17}   {'batches, now':>17}   "
        f"{'singles, before':>17}   {'singles, now':>17}"
    )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "dlq.jsonl"
        for size in sizes:
            old = await drained(RewriteEachChange, path, size, limit, singles)
            new = await drained(FileDeadLetterQueue, path, size, limit, singles)
            print(
                f"  {size:>9,}   {old[0]:>7.1f} MB {old[1]:>6.2f} s   "
                f"{new[0]:>7.1f} MB {new[1]:>6.2f} s   "
                f"{old[2]:>7.1f} MB {old[3]:>6.2f} s   {new[2]:>7.1f} MB {new[3]:>6.2f} s"
            )


class OneAtATime(ReplayWorker):
    """The previous version's replay of a pass the store refused in part (the baseline):
    every letter written and changed in the queue on its own."""

    async def _write(
        self, events: Sequence[tuple[Letter, AuditEvent]], now: float, report: ReplayReport
    ) -> None:
        try:
            await self._store.write([event for _, event in events])
        except (Conflict, ForeignParent, MissingParent):
            pass
        else:
            await self._dlq.ack([letter for letter, _ in events])
            self._replayed(len(events), report)
            return
        pending = list(events)
        orphans: list[tuple[Letter, str]] = []
        while pending:
            replayed, orphans, left = report.replayed, [], []
            for letter, event in pending:
                try:
                    await self._store.write([event])
                except (Conflict, ForeignParent):
                    await self._bury([letter], "refused", report)
                except MissingParent as exc:
                    orphans.append((letter, next(iter(exc.indexes.values()))))
                    left.append((letter, event))
                except StoreUnavailable:
                    raise
                else:
                    await self._dlq.ack([letter])
                    self._replayed(1, report)
            if report.replayed == replayed:
                break
            pending = left
        for orphan in orphans:
            await self._follow_parents([orphan], now, report)


async def replayed(kind: type[ReplayWorker], directory: Path, pairs: int) -> tuple[float, int]:
    """Events/s replaying `pairs` parent/child pairs, children due first, and the passes."""
    queue = FileDeadLetterQueue(directory / f"{kind.__name__}.jsonl")
    store = SqliteAuditStore(directory / f"{kind.__name__}.db")
    await queue.open()
    await store.open()
    try:
        parents = [
            validate_event({**template().fields, "correlation_id": f"rr-{n}"}, datetime.now(UTC))
            for n in range(pairs)
        ]
        children = [
            validate_event(
                {
                    **parent.fields,
                    "event_id": str(uuid.uuid4()),
                    "parent_event_id": parent.event_id,
                },
                datetime.now(UTC),
            )
            for parent in parents
        ]
        # each pass's letters: a batch of children, then their parents' (rescheduled later)
        half, now = PUT_BATCH // 2, time.time() - pairs
        for offset in range(0, pairs, half):
            await queue.put(children[offset : offset + half], due=now + offset)
            await queue.put(parents[offset : offset + half], due=now + offset + 0.5)
        worker = kind(queue, store, (60.0,), DataStorageMetrics(CollectorRegistry()))
        passes, started = 0, time.perf_counter()
        while await queue.depth():
            await worker.run_once(ignore_schedule=True)
            passes += 1
        took = time.perf_counter() - started
        chains = await store.chains([parent.correlation_id for parent in parents])
        for parent, child in zip(parents, children, strict=True):
            rows = chains[parent.correlation_id]
            assert verify(parent.correlation_id, rows).valid
            assert [row["event_id"] for row in rows] == [parent.event_id, child.event_id]
        return 2 * pairs / took, passes
    finally:
        await store.close()
        await queue.close()


async def run_replay(events: int) -> None:
    pairs = events // 2
    print(
        f"replaying {2 * pairs:,} events left by an outage (file queue, SQLite store; each "
        "child due before its parent), events/s and passes:"
    )
    with tempfile.TemporaryDirectory() as directory:
        old, old_passes = await replayed(OneAtATime, Path(directory), pairs)
        new, new_passes = await replayed(ReplayWorker, Path(directory), pairs)
    print(f"  one letter at a time (before)   {old:>9,.0f} events/s   {old_passes:>4} passes")
    print(f"  refused letters taken out (now) {new:>9,.0f} events/s   {new_passes:>4} passes")
    print(f"  now / before                    {new / old:>9.1f} x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated N")
    parser.add_argument("--due", type=int, default=5, help="letters due now")
    parser.add_argument("--limit", type=int, default=500, help="letters per poll")
    parser.add_argument(
        "--queue", default="redis,file,replay", help="which parts: redis, file, replay"
    )
    parser.add_argument(
        "--replay", type=int, default=4000, help="events in the replay of an outage's queue"
    )
    parser.add_argument(
        "--singles", type=int, default=50, help="letters acked one by one (file queue)"
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    queues = args.queue.split(",")
    if "redis" in queues:
        asyncio.run(run(sizes, args.due, args.limit))
    if "file" in queues:
        asyncio.run(run_file(sizes, args.limit))
        asyncio.run(run_drain(sizes, args.limit, args.singles))
    if "replay" in queues:
        asyncio.run(run_replay(args.replay))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
