"""The file dead-letter queue is bounded: in memory, whatever its events' size, and on disk,
by `dlq.maxBytes`.

It kept every letter's event parsed in memory: a queue file of 20,000 Gateway-sized events
(54 MB) took 255 MB of the process on open, so a PostgreSQL outage of minutes under a
Gateway's load made a queue its pod was OOM-killed for — at every restart, as the queue was
read again. It keeps an index entry per letter now, and reads an event from its line only
when the letter is handed out or the file rewritten. And the file itself stops at its
bound: a batch that would take it past is refused whole, so an outage cannot fill the disk.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from signalgate.datastorage.dlq import FileDeadLetterQueue, ReplayWorker
from signalgate.datastorage.errors import DeadLetterQueueFull
from signalgate.datastorage.events import AuditEvent, validate_event
from signalgate.datastorage.metrics import DataStorageMetrics
from tests.support.event_bodies import event_body
from tests.unit.datastorage.test_ds_replay import FlakyStore, events

LETTERS = 2_000
BATCH = 100


def wide_event(number: int) -> AuditEvent:
    """An event of about 16 KB whose `event_data` is an alert's body (many small strings and
    objects, as a Gateway's are), not one long string."""
    alerts: list[dict[str, Any]] = [
        {
            "labels": {"alertname": "HighCPU", "pod": f"api-{number}-{i}", "severity": "critical"},
            "annotations": {"summary": f"CPU over 90% on api-{number}-{i}", "runbook": "x" * 40},
            "startsAt": "2025-01-01T00:00:00Z",
            "fingerprint": f"{number:08x}{i:08x}",
        }
        for i in range(60)
    ]
    body = event_body(f"rr-{number // 10}", event_data={"original_payload": {"alerts": alerts}})
    return validate_event(body, datetime.now(UTC))


def batches() -> Iterator[list[AuditEvent]]:
    for start in range(0, LETTERS, BATCH):
        yield [wide_event(number) for number in range(start, start + BATCH)]


@pytest.fixture(scope="module")
def big_queue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A queue file of `LETTERS` wide events (about 30 MB), and their ids in queue order."""
    import asyncio

    path = tmp_path_factory.mktemp("dlq") / "audit-dlq.jsonl"
    ids: list[str] = []

    async def fill() -> None:
        queue = FileDeadLetterQueue(path)
        await queue.open()
        for batch in batches():
            await queue.put(batch, due=time.time())
            ids.extend(event.event_id for event in batch)

    asyncio.run(fill())
    return path, ids


async def test_opening_a_big_queue_takes_a_small_part_of_its_size_in_memory(
    big_queue: tuple[Path, list[str]],
) -> None:
    path, ids = big_queue
    size = path.stat().st_size
    assert size > 25_000_000
    gc.collect()
    tracemalloc.start()
    try:
        queue = FileDeadLetterQueue(path)
        await queue.open()
        assert await queue.depth() == LETTERS
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # was 4.7 times the file (470 %): every event parsed; an index entry is a few hundred
    # bytes, whatever its event's size. The peak too: the file is read a line at a time
    assert held < size * 0.05, f"{held:,} bytes held for a file of {size:,}"
    assert peak < size * 0.10, f"{peak:,} bytes at the peak for a file of {size:,}"
    # and the letters handed out still carry their events, read from the file
    letters = await queue.due(None, 3)
    assert [letter.event_id for letter in letters] == ids[:3]
    assert len(letters[0].fields["event_data"]["original_payload"]["alerts"]) == 60


async def test_a_restart_with_a_big_queue_replays_every_letter_once(
    big_queue: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """A new process on the queue an outage left (the file copied: the module's fixture
    stays as it was) stores every event once, in queue order, and empties the file, its
    rewrites copying lines from it as the letters go."""
    path = tmp_path / "audit-dlq.jsonl"
    path.write_bytes(big_queue[0].read_bytes())
    queue = FileDeadLetterQueue(path)
    await queue.open()
    store = FlakyStore()
    store.down = False
    metrics = DataStorageMetrics(CollectorRegistry())
    worker = ReplayWorker(queue, store, [0.0], metrics, batch_size=150)  # type: ignore[arg-type]
    # one letter in ten tried once already (put back with an attempt used): their lines
    # are written anew by the rewrites, the others copied as they are
    first = await queue.due(None, LETTERS)
    await queue.reschedule([replace(letter, attempts=1) for letter in first[::10]])
    report = await worker.drain()
    assert (report.replayed, report.rescheduled, report.dead) == (LETTERS, 0, 0)
    assert list(store.rows) == big_queue[1]
    assert await queue.depth() == 0 and path.stat().st_size == 0


async def fresh(path: Path) -> list[tuple[str, int]]:
    """The letters a new process reads from the file: key and attempts, in queue order."""
    return [(ltr.key, ltr.attempts) for ltr in await FileDeadLetterQueue(path).due(None, 100)]


async def test_a_batch_that_would_take_the_file_past_its_bound_is_refused_whole(
    tmp_path: Path,
) -> None:
    """Refused with nothing written (its sender is answered 503 and retries), the queue's
    ping says it is full until it has drained below where it refused; changes (replays)
    are never refused for the bound: they drain it."""
    path = tmp_path / "audit-dlq.jsonl"
    probe = FileDeadLetterQueue(tmp_path / "probe.jsonl")
    await probe.put(events(1), due=time.time())
    line = probe.path.stat().st_size  # one letter's line
    queue = FileDeadLetterQueue(path, max_bytes=int(line * 10.5))
    await queue.open()
    await queue.put(events(4), due=time.time())
    await queue.put(events(6), due=time.time())  # ten letters: at the bound
    before = path.read_bytes()
    with pytest.raises(DeadLetterQueueFull, match=r"dlq\.maxBytes") as refused:
        await queue.put(events(1), due=time.time())
    assert refused.value.max_bytes == queue.max_bytes
    assert path.read_bytes() == before and await queue.depth() == 10
    with pytest.raises(DeadLetterQueueFull):
        await queue.ping()
    # a restart of the process does not refuse to start on a full queue (it would crash
    # loop): its ping answers until a batch is refused again
    again = FileDeadLetterQueue(path, max_bytes=queue.max_bytes)
    await again.open()
    await again.ping()
    letters = await queue.due(None, 4)
    await queue.reschedule([replace(ltr, attempts=1) for ltr in letters])  # records: taken
    await queue.ack(letters)
    assert await queue.depth() == 6 and path.stat().st_size > queue.max_bytes
    # the replayed letters' lines are still in the file: rewritten without them, the
    # file has room for three more
    await queue.put(events(3), due=time.time())
    assert await queue.depth() == 9 and path.stat().st_size <= queue.max_bytes
    assert await fresh(path) == [(ltr.key, ltr.attempts) for ltr in await queue.due(None, 100)]
    while letters := await queue.due(None, 3):
        await queue.ack(letters)
    assert path.stat().st_size == 0
    await queue.ping()  # drained: room again
    await queue.put(events(10), due=time.time())
    assert await queue.depth() == 10
