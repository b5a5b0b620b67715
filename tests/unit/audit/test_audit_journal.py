"""The audit journal: group commit, recovery after a crash, truncation behind the cursor."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import random
import threading
from pathlib import Path

import pytest

from signalgate.audit import journal as journal_module
from signalgate.audit.journal import Journal, JournalUnavailable


def event(n: int) -> dict[str, object]:
    return {"event_id": f"e-{n}", "correlation_id": f"rr-{n % 3}", "n": n}


async def test_concurrent_commits_share_fsyncs_and_every_event_is_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = 0
    real = Journal._write

    def counting(self: Journal, data: bytes) -> tuple[int, int]:
        nonlocal syncs
        syncs += 1
        return real(self, data)

    monkeypatch.setattr(Journal, "_write", counting)
    journal = Journal(tmp_path, segment_bytes=1 << 20)
    await journal.open()
    # each group write is synchronous: it returns once the data is on disk
    assert journal._fd is not None
    assert fcntl.fcntl(journal._fd, fcntl.F_GETFL) & os.O_DSYNC

    async def request(n: int) -> None:
        journal.stage(event(n))
        await journal.commit()

    await asyncio.gather(*(request(n) for n in range(200)))
    await journal.close()
    assert syncs < 200  # grouped: many requests per fsync
    lines = (tmp_path / "segment-0000000000000001.jsonl").read_bytes().splitlines()
    assert len(lines) == 200


async def test_reopen_resumes_at_the_cursor_and_cuts_a_torn_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=1 << 20)
    await journal.open()
    for n in range(10):
        journal.stage(event(n))
    await journal.commit()
    first = await journal.read(4)
    await journal.confirm(first)
    await journal.close()
    segment = tmp_path / "segment-0000000000000001.jsonl"
    with open(segment, "ab") as handle:
        handle.write(b'{"event_id": "torn')  # a write cut by a crash, never acknowledged

    again = Journal(tmp_path, segment_bytes=1 << 20)
    await again.open()
    assert again.backlog_events == 6
    rest = await again.read(100)
    assert [e.event()["n"] for e in rest.entries] == list(range(4, 10))
    await again.close()


async def test_a_crash_leaves_the_lines_whole_before_the_zeros_written_ahead(
    tmp_path: Path,
) -> None:
    """The active segment is zeroed ahead of its data, so a group's write overwrites blocks
    the file has (its size is not written with each group). A crash leaves those zeros, and
    a group cut by it may have reached the disk in pieces, a run of zeros between them: a
    reopened journal keeps the acknowledged lines alone and goes on right after them."""
    live = Journal(tmp_path / "live", segment_bytes=1 << 20)
    await live.open()
    for n in range(5):
        live.stage(event(n))
    await live.commit()
    segment = "segment-0000000000000001.jsonl"
    on_disk = (tmp_path / "live" / segment).read_bytes()  # as a kill -9 now would leave it
    await live.close()
    lines = b"".join(json.dumps(event(n)).encode() + b"\n" for n in range(5))
    data = lines.replace(b" ", b"")
    assert on_disk.startswith(data) and len(on_disk) > len(data)
    assert on_disk[len(data) :].strip(b"\0") == b""  # zeros ahead, nothing else
    # what the live journal leaves on a clean close: its lines alone
    assert (tmp_path / "live" / segment).read_bytes() == data

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    cut_group = b'{"event_id":"e-5","n":5}\n{"event_id":"e-6","n":6}\n'
    (crashed / segment).write_bytes(
        data + cut_group[:10] + bytes(4096) + cut_group[30:] + bytes(8192)
    )
    again = Journal(crashed, segment_bytes=1 << 20)
    await again.open()
    assert again.backlog_events == 5
    again.stage(event(7))
    await again.commit()
    await again.close()
    assert (crashed / segment).read_bytes() == data + json.dumps(event(7)).encode().replace(
        b" ", b""
    ) + b"\n"


async def test_delivered_segments_are_deleted(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=4096)
    await journal.open()
    for n in range(300):
        journal.stage({**event(n), "pad": "x" * 100})
        if n % 10 == 9:
            await journal.commit()
    assert len(list(tmp_path.glob("segment-*"))) > 3
    seen: list[int] = []
    while journal.backlog_events:
        piece = await journal.read(50)
        seen += [int(str(e.event()["n"])) for e in piece.entries]
        await journal.confirm(piece)
    assert seen == list(range(300))
    assert journal.backlog_bytes == 0
    assert len(list(tmp_path.glob("segment-*"))) == 1  # only the one being appended to
    await journal.close()


async def test_a_failed_write_fails_its_waiters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path, segment_bytes=1 << 20)
    await journal.open()

    def broken(descriptor: int, data: bytes, offset: int) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("signalgate.audit.journal.os.pwrite", broken)
    try:
        journal.stage(event(1))
        with pytest.raises(JournalUnavailable, match="No space left"):
            await journal.commit()
        monkeypatch.undo()
        journal.stage(event(2))
        await journal.commit()
        piece = await journal.read(10)
        assert [e.event()["n"] for e in piece.entries] == [2]
    finally:
        monkeypatch.undo()
        await journal.close()  # else its writer thread keeps the test run from exiting


async def test_the_old_spool_is_taken_over_and_delivered_first(tmp_path: Path) -> None:
    spool = tmp_path / "audit-spool"  # the format of versions before the journal
    lines = [json.dumps(event(n)).encode() + b"\n" for n in range(5)]
    spool.write_bytes(b"".join(lines) + b'{"torn')
    (tmp_path / "audit-spool.offset").write_text(str(len(lines[0]) * 2))  # two delivered
    journal = Journal(tmp_path / "audit-journal", 1 << 20, legacy_spool=spool)
    await journal.open()
    journal.stage(event(99))
    await journal.commit()
    piece = await journal.read(10)
    assert [e.event()["n"] for e in piece.entries] == [2, 3, 4, 99]
    assert not spool.exists() and not (tmp_path / "audit-spool.legacy").exists()
    await journal.confirm(piece)
    await journal.close()
    again = Journal(tmp_path / "audit-journal", 1 << 20, legacy_spool=spool)
    await again.open()
    assert again.backlog_events == 0
    await again.close()


def old_spool(path: Path, numbers: range) -> None:
    """A spool as versions before the journal left it, nothing of it delivered."""
    path.write_bytes(b"".join(json.dumps(event(n)).encode() + b"\n" for n in numbers))


async def journaled(directory: Path, events: int, delivered: int) -> None:
    """A journal left holding events 0..`events`-1, the first `delivered` of them delivered."""
    journal = Journal(directory, 1 << 20)
    await journal.open()
    for n in range(events):
        journal.stage(event(n))
    await journal.commit()
    if delivered:
        await journal.confirm(await journal.read(delivered))
    await journal.close()


async def to_deliver(directory: Path, spool: Path) -> list[int]:
    """The events a journal opened beside `spool` delivers, in order."""
    journal = Journal(directory, 1 << 20, legacy_spool=spool)
    await journal.open()
    try:
        return [e.event()["n"] for e in (await journal.read(100)).entries]
    finally:
        await journal.close()


async def test_a_second_old_spool_is_added_to_what_the_first_left_undelivered(
    tmp_path: Path,
) -> None:
    """An old version run again on the same directory after an upgrade (a rollback, then the
    upgrade again) leaves a second spool: its take-over replaced segment 0, and the first
    spool's events and those journaled since were lost (an outside check: 30 of 45)."""
    spool, directory = tmp_path / "audit-spool", tmp_path / "audit-journal"
    old_spool(spool, range(0, 3))
    journal = Journal(directory, 1 << 20, legacy_spool=spool)
    await journal.open()
    journal.stage(event(10))
    await journal.commit()
    await journal.close()  # DataStorage away all along: nothing delivered
    old_spool(spool, range(20, 23))
    again = Journal(directory, 1 << 20, legacy_spool=spool)
    await again.open()
    try:
        piece = await again.read(100)
        assert [e.event()["n"] for e in piece.entries] == [0, 1, 2, 10, 20, 21, 22]
    finally:
        await again.close()


async def test_an_old_spool_after_the_journal_delivered_some_sends_nothing_twice(
    tmp_path: Path,
) -> None:
    spool, directory = tmp_path / "audit-spool", tmp_path / "audit-journal"
    await journaled(directory, 4, delivered=2)
    old_spool(spool, range(20, 22))
    assert await to_deliver(directory, spool) == [2, 3, 20, 21]


@pytest.mark.parametrize("delivered_before", [False, True])
async def test_a_take_over_repeated_after_a_crash_adds_each_event_once(
    tmp_path: Path, delivered_before: bool
) -> None:
    """A crash after the spool's lines were copied and before the spool was deleted copies
    them again: each event twice in a segment, and DataStorage refused the batch holding
    both (counted as dropped, though stored)."""
    spool, directory = tmp_path / "audit-spool", tmp_path / "audit-journal"
    # with one delivered, the spool's lines go after the last segment
    await journaled(directory, 2, delivered=1 if delivered_before else 0)
    old_spool(spool, range(20, 23))
    copy = spool.read_bytes()
    # nothing delivered: the old events first; else after the journal's own
    expected = [1, 20, 21, 22] if delivered_before else [20, 21, 22, 0, 1]
    assert await to_deliver(directory, spool) == expected
    spool.with_name("audit-spool.legacy").write_bytes(copy)  # the crash came before its
    assert await to_deliver(directory, spool) == expected  # deletion: the copy again


@pytest.mark.parametrize("recent_bytes", [0, 700, 1 << 20])
async def test_memory_and_segments_deliver_every_event_once_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recent_bytes: int
) -> None:
    """The relay reads the newest lines from memory and older ones from the segments; across
    both, with segments rolling over and memory dropping its oldest lines, every event comes
    out once, in order, and the cursor lands where the file says."""
    monkeypatch.setattr(journal_module, "RECENT_BYTES", recent_bytes)
    file_reads = 0
    real = Journal._read

    def counting(self: Journal, *args: object) -> journal_module.Slice:
        nonlocal file_reads
        file_reads += 1
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Journal, "_read", counting)
    rng = random.Random(recent_bytes)
    journal = Journal(tmp_path, segment_bytes=2048)
    await journal.open()
    try:
        staged = seen = 0
        while seen < 400:
            for _ in range(min(rng.randint(0, 12), 400 - staged)):
                journal.stage({**event(staged), "pad": "x" * rng.randint(0, 60)})
                staged += 1
            await journal.commit()
            if not journal.backlog_events:
                continue  # the relay reads only when something waits
            piece = await journal.read(rng.randint(1, 9))
            assert [e.event()["n"] for e in piece.entries] == list(
                range(seen, seen + len(piece.entries))
            )
            seen += len(piece.entries)
            if rng.random() < 0.8:
                await journal.confirm(piece)
            else:
                seen -= len(piece.entries)  # not settled: the same lines come again
        assert journal.backlog_events == 0 and journal.backlog_bytes == 0
    finally:
        await journal.close()
    if recent_bytes == 0:
        assert file_reads > 0
    if recent_bytes == 1 << 20:
        assert file_reads == 0  # a relay that keeps up never reads the disk
    again = Journal(tmp_path, segment_bytes=2048)
    await again.open()
    assert again.backlog_events == 0  # the cursor the memory reads left is the file's
    await again.close()


def hold_writes(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Journal writes that return only once the test sets the event (a stuck disk)."""
    released = threading.Event()
    real_write = os.pwrite

    def held(descriptor: int, data: bytes, offset: int) -> int:
        released.wait(10)
        return real_write(descriptor, data, offset)

    monkeypatch.setattr("signalgate.audit.journal.os.pwrite", held)
    return released


async def test_a_stuck_disk_fails_waiters_after_the_commit_timeout_and_writes_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path, segment_bytes=1 << 20, commit_timeout=0.2)
    await journal.open()
    released = hold_writes(monkeypatch)
    try:
        journal.stage(event(1))
        started = asyncio.get_running_loop().time()
        with pytest.raises(JournalUnavailable, match=r"audit\.commitTimeout"):
            await journal.commit()
        assert 0.15 < asyncio.get_running_loop().time() - started < 2.0
        # a request joining the group already overdue waits its own full bound, not zero
        started = asyncio.get_running_loop().time()
        with pytest.raises(JournalUnavailable):
            await journal.commit()
        assert 0.15 < asyncio.get_running_loop().time() - started < 2.0
        journal.stage(event(2))  # a later group waits behind the stuck one, and fails too
        with pytest.raises(JournalUnavailable):
            await journal.commit()
        released.set()
        journal.stage(event(3))
        await journal.commit()  # the disk is back: a new group is written
        piece = await journal.read(10)
        assert [e.event()["n"] for e in piece.entries] == [1, 2, 3]  # nothing lost
    finally:
        released.set()
        monkeypatch.undo()
        await journal.close()


async def test_a_cancelled_waiter_leaves_the_others_of_its_group_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path, segment_bytes=1 << 20)
    await journal.open()
    released = hold_writes(monkeypatch)
    try:
        journal.stage(event(1))
        waiters = [asyncio.create_task(journal.commit()) for _ in range(3)]
        await asyncio.sleep(0.05)
        waiters[0].cancel()  # a request that gave up (its client went away)
        await asyncio.sleep(0.05)
        released.set()
        await asyncio.gather(*waiters[1:])  # the others are answered, not cancelled
        assert waiters[0].cancelled()
    finally:
        released.set()
        monkeypatch.undo()
        await journal.close()


async def test_an_unexpected_error_fails_its_group_and_the_writer_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only disk errors are expected from a write; anything else (a bug, MemoryError) must
    fail the requests of that group, not end the writer thread and with it every later
    commit (each would wait out audit.commitTimeout, for ever)."""
    journal = Journal(tmp_path, segment_bytes=1 << 20, commit_timeout=2.0)
    await journal.open()
    real = Journal._write
    calls = 0

    def failing_once(self: Journal, data: bytes) -> tuple[int, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("a bug")
        return real(self, data)

    monkeypatch.setattr(Journal, "_write", failing_once)
    try:
        journal.stage(event(1))
        with pytest.raises(JournalUnavailable, match="ValueError: a bug"):
            await journal.commit()
        journal.stage(event(2))
        await journal.commit()  # written: the writer thread is still there
        piece = await journal.read(10)
        assert [e.event()["n"] for e in piece.entries] == [2]
    finally:
        await journal.close()


def _segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("segment-*.jsonl"))


async def _backlog_after_restart(directory: Path, segment_bytes: int) -> int:
    """The events a journal opened again on `directory` has to deliver."""
    again = Journal(directory, segment_bytes=segment_bytes)
    await again.open()
    try:
        return again.backlog_events
    finally:
        await again.close()


async def _deliver_all(journal: Journal) -> list[int]:
    seen: list[int] = []
    while journal.backlog_events:
        piece = await journal.read(50)
        seen += [int(str(e.event()["n"])) for e in piece.entries]
        await journal.confirm(piece)
    return seen


async def test_a_full_disk_moves_the_journal_on_so_delivered_lines_free_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a disk smaller than a segment the active segment filled it with delivered lines
    (only a segment behind the cursor's is deleted): every signal refused for good. A write
    the disk refuses now moves the journal to a new segment, and once the relay has
    delivered the old one it is deleted, freeing the disk."""
    journal = Journal(tmp_path, segment_bytes=1 << 20)
    await journal.open()
    for n in range(10):
        journal.stage(event(n))
    await journal.commit()
    real_write = os.pwrite

    def full(descriptor: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("signalgate.audit.journal.os.pwrite", full)
    journal.stage(event(10))
    with pytest.raises(JournalUnavailable, match="No space left"):
        await journal.commit()
    monkeypatch.setattr("signalgate.audit.journal.os.pwrite", real_write)
    first, second = "segment-0000000000000001.jsonl", "segment-0000000000000002.jsonl"
    assert _segments(tmp_path) == [first, second]
    assert await _deliver_all(journal) == list(range(10))
    assert _segments(tmp_path) == [second]  # the disk is free again
    journal.stage(event(11))
    await journal.commit()
    assert await _deliver_all(journal) == [11]
    await journal.close()
    assert await _backlog_after_restart(tmp_path, 1 << 20) == 0


async def test_a_segment_that_could_not_be_made_is_made_at_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollover whose new file could not be created (no inode left) left the journal
    without a segment for good: 'the audit journal is closed' until a restart."""
    journal = Journal(tmp_path, segment_bytes=32)
    await journal.open()
    journal.stage(event(0))
    await journal.commit()  # segment 1 is over its 32 bytes: the next write rolls over
    real_open = os.open
    refused: list[str] = []

    def no_inode(path: str, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith("segment-0000000000000002.jsonl") and not refused:
            refused.append(path)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, mode)

    monkeypatch.setattr("signalgate.audit.journal.os.open", no_inode)
    journal.stage(event(1))
    with pytest.raises(JournalUnavailable, match="No space left"):
        await journal.commit()
    journal.stage(event(2))
    await journal.commit()  # made now
    assert refused and await _deliver_all(journal) == [0, 2]
    await journal.close()


def no_room_for_a_new_cursor(monkeypatch: pytest.MonkeyPatch, created: bool = False) -> None:
    """A disk with no room for the cursor's new file (`cursor.tmp`). `created`: the file is
    made, empty, before its write fails, as on a real full disk (an inode, no data block)."""
    real_write_bytes = Path.write_bytes

    def full(self: Path, data: bytes) -> int:
        if self.name == "cursor.tmp":
            if created:
                real_write_bytes(self, b"")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)


async def test_the_cursor_is_written_in_place_when_the_disk_has_no_room_for_a_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moving the cursor wrote a new file first: on a full disk it failed, so no delivered
    segment was ever deleted and the disk stayed full after DataStorage came back."""
    journal = Journal(tmp_path, segment_bytes=256)
    await journal.open()
    for n in range(40):
        journal.stage({**event(n), "pad": "x" * 50})
        await journal.commit()
    first = await journal.read(5)
    await journal.confirm(first)  # the cursor file exists
    no_room_for_a_new_cursor(monkeypatch)
    delivered = [int(str(e.event()["n"])) for e in first.entries] + await _deliver_all(journal)
    monkeypatch.undo()
    assert delivered == list(range(40))
    assert len(_segments(tmp_path)) == 1 and not (tmp_path / "cursor.tmp").exists()
    await journal.close()
    assert await _backlog_after_restart(tmp_path, 256) == 0


async def test_a_full_disk_without_a_cursor_file_still_frees_delivered_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh journal has no cursor file to rewrite in place: the relay retried its
    confirmation for good, deleting nothing, every signal refused (restarts included)."""
    journal = Journal(tmp_path, segment_bytes=256)
    await journal.open()
    for n in range(30):
        journal.stage({**event(n), "pad": "x" * 50})
        await journal.commit()
    no_room_for_a_new_cursor(monkeypatch)
    assert await _deliver_all(journal) == list(range(30))
    monkeypatch.undo()
    assert len(_segments(tmp_path)) == 1 and not (tmp_path / "cursor").exists()
    await journal.close()
    again = Journal(tmp_path, segment_bytes=256)  # no cursor saved: replays what is left,
    await again.open()  # never more than the segment the writer was on
    replayed = await _deliver_all(again)
    assert replayed == sorted(replayed) and replayed[-1] == 29
    await again.close()


async def test_a_cursor_file_a_full_disk_made_empty_is_not_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk made `cursor.tmp` and refused its bytes, no cursor file yet to rewrite in
    place: the empty `cursor.tmp` stayed in the journal's directory."""
    journal = Journal(tmp_path, segment_bytes=256)
    await journal.open()
    for n in range(30):
        journal.stage({**event(n), "pad": "x" * 50})
        await journal.commit()
    no_room_for_a_new_cursor(monkeypatch, created=True)
    assert await _deliver_all(journal) == list(range(30))
    monkeypatch.undo()
    assert not (tmp_path / "cursor.tmp").exists() and not (tmp_path / "cursor").exists()
    await journal.close()


async def test_a_cursor_tmp_left_behind_goes_at_the_next_open(tmp_path: Path) -> None:
    """A `cursor.tmp` a crash (or an older version) left is removed when the journal opens;
    the cursor itself is read from `cursor` as before."""
    journal = Journal(tmp_path, segment_bytes=256)
    await journal.open()
    for n in range(3):
        journal.stage(event(n))
        await journal.commit()
    await journal.close()
    (tmp_path / "cursor.tmp").write_bytes(b"")
    again = Journal(tmp_path, segment_bytes=256)
    await again.open()
    assert not (tmp_path / "cursor.tmp").exists()
    assert await _deliver_all(again) == [0, 1, 2]
    await again.close()


async def test_a_segment_left_by_a_full_disk_goes_even_with_nothing_to_deliver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything delivered, then a write the full disk refuses moves the journal on: with
    no backlog the relay confirmed nothing more, so the delivered segment stayed and every
    later signal was refused (a restart too)."""
    journal = Journal(tmp_path, segment_bytes=1 << 20)
    await journal.open()
    for n in range(5):
        journal.stage(event(n))
    await journal.commit()
    assert await _deliver_all(journal) == list(range(5))
    real_write = os.pwrite

    def full(descriptor: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("signalgate.audit.journal.os.pwrite", full)
    journal.stage(event(5))
    with pytest.raises(JournalUnavailable):
        await journal.commit()
    monkeypatch.setattr("signalgate.audit.journal.os.pwrite", real_write)
    for _ in range(100):  # the delivered segment is deleted in the background
        if len(_segments(tmp_path)) == 1:
            break
        await asyncio.sleep(0.01)
    assert _segments(tmp_path) == ["segment-0000000000000002.jsonl"]
    journal.stage(event(6))
    await journal.commit()
    assert await _deliver_all(journal) == [6]
    await journal.close()


async def test_a_restart_deletes_a_delivered_segment_the_writer_had_left(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=1 << 20)
    await journal.open()
    journal.stage(event(0))
    await journal.commit()
    assert await _deliver_all(journal) == [0]
    await journal.close()
    (tmp_path / "segment-0000000000000002.jsonl").touch()  # left for a new one, then killed
    again = Journal(tmp_path, segment_bytes=1 << 20)
    await again.open()
    assert _segments(tmp_path) == ["segment-0000000000000002.jsonl"]
    assert again.backlog_events == 0
    again.stage(event(1))
    await again.commit()
    assert await _deliver_all(again) == [1]
    await again.close()


async def test_a_disk_without_room_for_the_zeros_ahead_still_takes_groups_that_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The zeros written ahead of the data need up to ZEROED_AHEAD more than the data: where
    the disk had less room than that left, every group was refused (503) while the data still
    fit; a 1.7 MB tmpfs refused signals at 1.05 MB used (an outside check). A group that fits
    is written as an append then, and the disk is full when its data fills it."""
    room = 200_000  # bytes the "disk" holds (one file here)
    real_write = os.pwrite

    def small_disk(descriptor: int, data: bytes, offset: int) -> int:
        if offset >= room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(descriptor, bytes(data)[: room - offset], offset)

    monkeypatch.setattr("signalgate.audit.journal.os.pwrite", small_disk)
    journal = Journal(tmp_path, segment_bytes=8 << 20)
    await journal.open()
    acknowledged = 0
    while True:
        journal.stage(event(acknowledged))
        try:
            await journal.commit()
        except JournalUnavailable:
            break
        acknowledged += 1
    assert journal.backlog_bytes > room - 100  # full when the data fills it
    monkeypatch.undo()
    assert await _deliver_all(journal) == list(range(acknowledged))
    await journal.close()


async def test_a_segment_whose_zeros_could_not_be_cut_is_left_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk moves the journal to a new segment, cutting the zeros of the one it
    leaves; when that cut failed too (an I/O error), the journal stayed on the segment and
    opened it again taking its zeros for data: the next groups went after them, the relay
    read the zeros and the first line after them as one unreadable line (skipped), and a
    restart cut everything after the first zero: acknowledged events lost (an outside
    check)."""
    journal = Journal(tmp_path, segment_bytes=8 << 20)
    await journal.open()
    real_write, real_truncate = os.pwrite, os.ftruncate

    def full(descriptor: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def broken(descriptor: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    try:
        for n in range(5):
            journal.stage(event(n))
            await journal.commit()
        monkeypatch.setattr("signalgate.audit.journal.os.pwrite", full)
        monkeypatch.setattr("signalgate.audit.journal.os.ftruncate", broken)
        journal.stage(event(99))
        with pytest.raises(JournalUnavailable):
            await journal.commit()
        monkeypatch.setattr("signalgate.audit.journal.os.pwrite", real_write)
        monkeypatch.setattr("signalgate.audit.journal.os.ftruncate", real_truncate)
        for n in range(5, 10):
            journal.stage(event(n))
            await journal.commit()
    finally:
        monkeypatch.undo()
        await journal.close()
    journal = Journal(tmp_path, segment_bytes=8 << 20)  # a restart before delivery
    await journal.open()
    try:
        assert await _deliver_all(journal) == list(range(10))
    finally:
        await journal.close()
