"""The file dead-letter queue and the replay worker's schedule, with an in-memory store."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from signalgate.datastorage.dlq import FileDeadLetterQueue, ReplayWorker
from signalgate.datastorage.dlq import file as dlq_file
from signalgate.datastorage.errors import (
    Conflict,
    DeadLetterUnavailable,
    StoreUnavailable,
    StoreUnreachable,
)
from signalgate.datastorage.events import AuditEvent, validate_event
from signalgate.datastorage.metrics import DataStorageMetrics
from signalgate.datastorage.store import AuditQuery, QueryPage, WriteResult
from tests.support.event_bodies import event_body


class FlakyStore:
    """Stores by id; fails while `down` (pings too); refuses ids listed in `conflicting`;
    with `writes_fail`, writes fail while pings answer (a statement that times out)."""

    def __init__(self) -> None:
        self.down = True
        self.writes_fail = False
        self.broken: Exception | None = None  # what every write raises (a lost privilege)
        self.rows: dict[str, bytes] = {}
        self.conflicting: set[str] = set()

    async def write(self, events: Sequence[AuditEvent]) -> WriteResult:
        if self.broken is not None:
            raise self.broken
        if self.down or self.writes_fail:
            raise StoreUnavailable("down")
        bad = {i: e.event_id for i, e in enumerate(events) if e.event_id in self.conflicting}
        if bad:
            raise Conflict(bad)
        new = [e for e in events if e.event_id not in self.rows]
        for event in new:
            self.rows[event.event_id] = event.canonical
        return WriteResult(len(new), len(events) - len(new))

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None:
        if self.down:
            raise StoreUnavailable("down")

    async def query(self, query: AuditQuery) -> QueryPage:
        return QueryPage([], 0)

    async def chain(self, correlation_id: str) -> list[dict[str, Any]]:
        return []

    async def migrate(self) -> list[int]:
        return []

    async def maintain(self) -> int:
        return 0


async def replaying(
    tmp_path: Path, store: FlakyStore, backoff: list[float]
) -> tuple[FileDeadLetterQueue, ReplayWorker]:
    """An open file queue and a replay worker from it into `store` on schedule `backoff`."""
    queue = FileDeadLetterQueue(tmp_path / "dlq.jsonl")
    await queue.open()
    metrics = DataStorageMetrics(CollectorRegistry())
    return queue, ReplayWorker(queue, store, backoff, metrics)  # type: ignore[arg-type]


def events(count: int) -> list[AuditEvent]:
    return [validate_event(event_body("rr-1"), datetime.now(UTC)) for _ in range(count)]


async def test_file_queue_replays_with_backoff_and_keeps_ids(tmp_path: Path) -> None:
    queue = FileDeadLetterQueue(tmp_path / "dlq.jsonl")
    await queue.open()
    store = FlakyStore()
    metrics = DataStorageMetrics(CollectorRegistry())
    worker = ReplayWorker(queue, store, [0.0, 0.0, 0.0], metrics)  # type: ignore[arg-type]
    written = events(3)
    await queue.put(written, due=time.time())
    assert await queue.depth() == 3
    report = await worker.run_once()
    assert (report.replayed, report.rescheduled, report.deferred) == (0, 0, True)
    store.down = False
    report = await worker.run_once()
    assert report.replayed == 3
    assert set(store.rows) == {e.event_id for e in written}
    assert await queue.depth() == 0
    assert metrics.dlq_replayed._value.get() == 3


async def test_a_database_refusing_writes_keeps_letters_and_conflicts_die_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that answers but refuses writes (a read-only standby after a failover)
    is not the letters' fault: they wait on the schedule's last step, never buried (an
    outside check: 1,193 acknowledged events buried after 40 s read-only). An event whose
    id is stored with other content is buried at once."""
    queue = FileDeadLetterQueue(tmp_path / "dlq.jsonl")
    await queue.open()
    store = FlakyStore()
    metrics = DataStorageMetrics(CollectorRegistry())
    worker = ReplayWorker(queue, store, [0.0, 0.0], metrics)  # type: ignore[arg-type]
    kept = events(2)
    await queue.put(kept, due=time.time())
    store.down, store.writes_fail = False, True  # the database answers; writes fail
    for _ in range(5):  # more passes than the schedule has steps
        report = await worker.run_once()
        assert report.dead == 0 and not report.deferred
    assert [ltr.attempts for ltr in await queue.due(None, 10)] == [5, 5]
    assert await queue.dead() == []
    # said and shown (readiness), where the queue's depth alone did not move for hours
    assert "replay refused: the database answers but did not store" in caplog.text
    assert worker.refusing() is not None
    store.writes_fail = False
    doomed, fine = events(2)
    store.conflicting = {doomed.event_id}
    await queue.put([doomed, fine], due=time.time())
    report = await worker.run_once()
    assert (report.replayed, report.dead) == (3, 1)
    assert worker.refusing() is None
    assert set(store.rows) == {e.event_id for e in [*kept, fine]}
    assert metrics.dlq_dead._value.get() == 1


class StartingUpStore(FlakyStore):
    """A PostgreSQL restarting: the write is refused ("the database system is starting
    up"), and by the time of the ping that follows it answers."""

    async def write(self, events: Sequence[AuditEvent]) -> WriteResult:
        if self.down:
            self.down = False  # ready a moment later
            raise StoreUnavailable("the database system is starting up")
        return await super().write(events)


async def test_a_database_ready_right_after_a_failed_write_is_written_at_once(
    tmp_path: Path,
) -> None:
    """The write failed while the database was starting up, and the ping after it found it
    ready: taken as a refusal, the letters were put off by the schedule's first step (a
    minute by default) after a blip of seconds (a test run under load). The write is tried
    again at once."""
    store = StartingUpStore()
    queue, worker = await replaying(tmp_path, store, [60.0, 60.0])
    written = events(3)
    await queue.put(written, due=time.time())
    report = await worker.run_once()
    assert (report.replayed, report.rescheduled) == (3, 0)
    assert set(store.rows) == {e.event_id for e in written}
    assert worker.refusing() is None


async def test_an_outage_of_any_length_uses_no_attempt_and_replays_once_it_ends(
    tmp_path: Path,
) -> None:
    """With a test's short schedule a 26 s outage buried acknowledged events, and with the
    default one they waited hours after the database was back (an outside check)."""
    store = FlakyStore()
    queue, worker = await replaying(tmp_path, store, [0.0, 0.0])
    written = events(3)
    await queue.put(written, due=time.time())
    before = (
        queue.path.stat().st_mtime_ns,
        [(ltr.attempts, ltr.due) for ltr in await queue.due(None, 10)],
    )
    for _ in range(10):  # ten polls of an outage longer than the whole schedule
        report = await worker.run_once()
        assert report.deferred and not (report.rescheduled or report.dead)
    after = (
        queue.path.stat().st_mtime_ns,
        [(ltr.attempts, ltr.due) for ltr in await queue.due(None, 10)],
    )
    assert after == before  # the queue as it was: nothing rewritten, no attempt used
    assert (await worker.drain()).deferred  # `replay-dlq` says the database is down (exit 1)
    store.down = False
    assert (await worker.run_once()).replayed == 3  # at once, not after a backoff
    assert set(store.rows) == {e.event_id for e in written}


async def test_a_pass_that_keeps_failing_logs_one_traceback_then_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure the worker does not expect (the role lost INSERT) repeats on every pass:
    a traceback each time was 0.7 GB of log a day (an outside check)."""
    queue = FileDeadLetterQueue(tmp_path / "dlq.jsonl")
    await queue.open()
    store = FlakyStore()
    store.down, store.broken = False, RuntimeError("permission denied for table audit_events")
    metrics = DataStorageMetrics(CollectorRegistry())
    worker = ReplayWorker(queue, store, [0.0], metrics, poll_interval=0.001)  # type: ignore[arg-type]
    await queue.put(events(1), due=time.time())
    await worker.start()
    while len([r for r in caplog.records if "replay failed" in r.getMessage()]) < 4:
        await asyncio.sleep(0.01)
    await worker.stop()
    failed = [r for r in caplog.records if "replay failed" in r.getMessage()]
    assert failed[0].exc_info is not None
    assert all(r.exc_info is None for r in failed[1:])
    assert "permission denied" in failed[1].__dict__["error"]
    assert await queue.depth() == 1  # nothing lost meanwhile


async def test_not_due_letters_wait_unless_draining(tmp_path: Path) -> None:
    queue = FileDeadLetterQueue(tmp_path / "dlq.jsonl")
    await queue.open()
    store = FlakyStore()
    store.down = False
    worker = ReplayWorker(queue, store, [60.0], DataStorageMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    await queue.put(events(2), due=time.time() + 60)
    assert (await worker.run_once()).replayed == 0
    assert (await worker.drain()).replayed == 2


async def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    queue = FileDeadLetterQueue(path)
    await queue.open()
    await queue.put(events(1), due=0)
    with open(path, "ab") as handle:
        handle.write(b'{"key": "half')
    assert await queue.depth() == 1


async def test_a_letter_the_disk_takes_in_part_is_refused_and_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk takes part of an append (a short write): the put is refused (the
    sender gets a 5xx and retries) and no half letter stays behind to be skipped, and lost,
    by the replay. Was: answered as queued, half a line on disk."""
    path = tmp_path / "audit-dlq.jsonl"
    queue = FileDeadLetterQueue(path)
    await queue.open()
    first = events(2)
    await queue.put(first, time.time())
    before = path.read_bytes()
    real_write = os.write

    def disk_filling(fd: int, data: Any) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))  # the disk took half ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then nothing more

    monkeypatch.setattr("signalgate.datastorage.dlq.file.os.write", disk_filling)
    with pytest.raises(DeadLetterUnavailable, match="No space left"):
        await queue.put(events(3), time.time())
    monkeypatch.undo()
    assert path.read_bytes() == before
    second = events(1)
    await queue.put(second, time.time())
    ids = [letter.event_id for letter in await queue.due(None, 100)]
    assert ids == [e.event_id for e in first + second]


@pytest.mark.parametrize(
    "tail",
    [b'{"key": "torn", "ev', b'{"key": "by hand", "event": {"event_id": "x"}, "attempts": 0}'],
    ids=["crash", "hand"],
)
async def test_a_last_line_without_its_newline_is_ended_and_kept_not_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tail: bytes
) -> None:
    """A last line without its newline — a crash mid-append (never answered), or a line an
    operator added by hand without one — was cut off by the next append, the operator's
    line gone for good. It is ended with a newline instead, and the next letter starts its
    own line; the next rewrite moves it to the dead file with the other unreadable lines."""
    monkeypatch.setattr(dlq_file, "COMPACT_AFTER", 0)  # the next change rewrites the file
    path = tmp_path / "audit-dlq.jsonl"
    queue = FileDeadLetterQueue(path)
    await queue.open()
    first = events(1)
    await queue.put(first, time.time())
    with open(path, "ab") as handle:
        handle.write(tail)
    second = events(1)
    await queue.put(second, time.time())
    letters = await queue.due(None, 100)
    assert [letter.event_id for letter in letters] == [e.event_id for e in first + second]
    assert path.read_bytes().count(b"\n") == 3

    await queue.ack(letters)
    assert await FileDeadLetterQueue(path).depth() == 0
    assert queue.dead_path.read_bytes() == tail + b"\n"


async def test_a_last_line_without_its_newline_is_kept_by_a_rewrite_and_a_burial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No append in between: the rewrite moves the line to the dead file, ended there; and
    a burial appended after a dead file's own last line without its newline keeps it."""
    monkeypatch.setattr(dlq_file, "COMPACT_AFTER", 0)
    path = tmp_path / "audit-dlq.jsonl"
    queue = FileDeadLetterQueue(path)
    await queue.put(events(2), time.time())
    with open(path, "ab") as handle:
        handle.write(b'{"key": "torn"')
    first, second = await queue.due(None, 10)
    await queue.ack([first])
    assert queue.dead_path.read_bytes() == b'{"key": "torn"\n'
    with open(queue.dead_path, "ab") as handle:
        handle.write(b"by hand")
    await queue.bury([second], "invalid")
    dead = await queue.dead()
    assert [letter.reason for letter in dead] == ["unreadable line"] * 2 + ["invalid"]
    assert queue.dead_path.read_bytes().startswith(b'{"key": "torn"\nby hand\n')


def no_room_beside(monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk with no room for a rewrite's file beside the queue (`.tmp`)."""
    real_open = open

    def full(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("signalgate.datastorage.dlq.file.open", full, raising=False)


async def test_a_queue_too_big_to_rewrite_on_a_full_disk_still_drains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each ack rewrote the whole rest of the file beside it: once the queue took over half
    its disk it could never drain, and what it had acknowledged (202) waited for good. The
    changes now go in as small records; a restart reads the same queue."""
    path = tmp_path / "audit-dlq.jsonl"
    queue = FileDeadLetterQueue(path)
    await queue.open()
    queued = events(5)
    await queue.put(queued, time.time())
    no_room_beside(monkeypatch)
    letters = await queue.due(None, 100)
    await queue.ack(letters[:2])
    later = replace(letters[2], attempts=1, due=time.time() + 3600)
    await queue.reschedule([later])
    assert not (tmp_path / "audit-dlq.jsonl.tmp").exists()
    left = await queue.due(None, 100)
    assert [ltr.event_id for ltr in left] == [e.event_id for e in queued[2:]]
    assert (left[0].attempts, left[0].due) == (1, later.due)
    assert [ltr.event_id for ltr in await FileDeadLetterQueue(path).due(None, 100)] == [
        ltr.event_id for ltr in left
    ]
    await queue.ack(left)  # emptied: in place, no room needed
    assert await queue.depth() == 0 and path.read_bytes() == b""


async def test_a_queue_that_filled_its_own_disk_still_drains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not even the change records fit (the queue filled its disk itself): the replay
    stored the same batch every pass and the queue never shrank. The changes wait in memory
    until the queue is empty, which a truncation writes without room."""
    path = tmp_path / "audit-dlq.jsonl"
    queue = FileDeadLetterQueue(path)
    await queue.open()
    queued = events(6)
    await queue.put(queued, time.time())

    def full_write(descriptor: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    no_room_beside(monkeypatch)
    monkeypatch.setattr("signalgate.datastorage.dlq.file.os.write", full_write)
    before = path.read_bytes()
    letters = await queue.due(None, 100)
    await queue.ack(letters[:4])  # nothing fits: kept in memory
    assert path.read_bytes() == before
    assert [ltr.event_id for ltr in await queue.due(None, 100)] == [e.event_id for e in queued[4:]]
    await queue.ack(letters[4:])  # the last ones: the file is emptied in place
    assert path.read_bytes() == b"" and await queue.depth() == 0
    monkeypatch.undo()
    assert await FileDeadLetterQueue(path).depth() == 0


async def test_a_letter_buried_on_the_disk_its_queue_filled_frees_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue filled its disk; once the database was back every letter was replayed but
    one that is buried instead (a child whose parent never came: an outside crash attack).
    The replayed ones waited in memory for the room to say so, and the burial, appended to
    the dead file first, had none: it failed at every pass, the file never emptied, and the
    disk stayed full (the next outage's writes all refused). The file rewritten as the one
    letter left frees the room the burial needs."""
    path = tmp_path / "audit-dlq.jsonl"
    queue = FileDeadLetterQueue(path)
    await queue.open()
    await queue.put(events(6), time.time())
    disk = path.stat().st_size  # full: what the queue holds
    real_write = os.write

    def on_a_full_disk(descriptor: int, data: Any) -> int:
        used = sum(f.stat().st_size for f in (path, queue.dead_path) if f.exists())
        if used + len(data) > disk:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(descriptor, data)

    monkeypatch.setattr("signalgate.datastorage.dlq.file.os.write", on_a_full_disk)
    *replayed, orphan = await queue.due(None, 100)
    await queue.ack(replayed)  # no room for the records: kept in memory
    await queue.bury([orphan], "attempts exhausted")
    assert await queue.depth() == 0
    assert [letter.event_id for letter in await queue.dead()] == [orphan.event_id]
    monkeypatch.undo()
    assert await FileDeadLetterQueue(path).depth() == 0


class SlowStartStore(FlakyStore):
    """A PostgreSQL still starting up for a few writes after it answered a ping (a restart
    on a busy machine): each of those writes is refused "starting up"."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False  # pings answer
        self.refusing_writes = 3

    async def write(self, events: Sequence[AuditEvent]) -> WriteResult:
        if self.refusing_writes:
            self.refusing_writes -= 1
            raise StoreUnreachable("CannotConnectNowError: the database system is starting up")
        return await super().write(events)


async def test_a_database_still_starting_up_defers_the_pass_and_uses_no_attempt(
    tmp_path: Path,
) -> None:
    """A write that met "starting up" twice (once more at once, after a ping that answered)
    was taken for a refusal: its letters were put off by the schedule's step (300 s in a
    test run on a busy machine, whose queue then did not drain in 45 s). No connection is
    not a refusal: the pass is deferred, the letters as they were, and the next poll
    stores them once the database takes connections."""
    store = SlowStartStore()
    queue, worker = await replaying(tmp_path, store, [60.0, 300.0])
    written = events(3)
    await queue.put(written, due=time.time())
    before = [(ltr.attempts, ltr.due) for ltr in await queue.due(None, 10)]
    report = await worker.run_once()
    assert report.deferred and not (report.rescheduled or report.dead)
    assert [(ltr.attempts, ltr.due) for ltr in await queue.due(None, 10)] == before
    assert worker.refusing() is None
    # the next poll: its first write still refused, the one tried again at once stored
    assert (await worker.run_once()).replayed == 3
    assert set(store.rows) == {e.event_id for e in written}
