"""The spool while a compaction runs in a worker thread: appends made meanwhile (as `emit()`
does on the event loop) are kept, once each and in order; the size bound holds; a crash or
a failure at any point of a compaction never loses an undelivered event.

No timing: the compaction thread is held at a chosen point with events, not sleeps.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from signalgate.datastorage import spool as spool_module
from signalgate.datastorage.spool import Spool

HANG_GUARD = 60.0  # seconds; only ever reached when something is broken


class Hung(AssertionError):
    pass


def guard(deadline: float, what: str) -> None:
    """Fail instead of hanging when a broken spool never gives back what it was given."""
    if time.monotonic() > deadline:
        raise Hung(f"gave up after {HANG_GUARD}s waiting for {what}")


def event(n: int) -> dict[str, str]:
    """Events of one fixed line length, so byte counts are easy to predict."""
    return {"n": f"{n:06d}"}


LINE = len(b'{"n":"000000"}\n')


def line(n: int) -> bytes:
    return b'{"n":"%06d"}\n' % n


def numbers(spool: Spool) -> list[int]:
    return [int(e["n"]) for e in spool.peek(1_000_000)[0]]


def spool_of_100(path: Path, monkeypatch: pytest.MonkeyPatch) -> Spool:
    """An open spool holding events 0..99 that compacts after 10 delivered bytes."""
    monkeypatch.setattr(spool_module, "_COMPACT_AFTER", 10)
    spool = Spool(path, 100_000)
    spool.open()
    for n in range(100):
        spool.append(event(n))
    return spool


class Gate:
    """Holds the first `_copy` of a compaction (the unlocked bulk copy) until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        original = spool_module._copy

        def gated(source: BinaryIO, target: BinaryIO, length: int) -> None:
            self.calls += 1
            if self.calls == 1:
                self.reached.set()
                if not self.release.wait(HANG_GUARD):
                    raise AssertionError("the test never released the compaction")
            original(source, target, length)

        monkeypatch.setattr(spool_module, "_copy", gated)


def test_appends_during_a_threaded_compaction_are_kept_in_order_and_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "_COMPACT_AFTER", 10)
    monkeypatch.setattr(spool_module, "_COPY_CHUNK", 64)  # many reads per copy
    monkeypatch.setattr(spool_module, "_COPY_UNDER_LOCK", 2 * LINE)  # unlocked catch-up too
    path = tmp_path / "audit.spool"
    spool = Spool(path, max_bytes=70 * LINE)  # 10 left after the commit: room for 60 more
    spool.open()
    for n in range(100):
        assert spool.append(event(n)) is (n < 70)
    assert spool.count == 70
    delivered, offset = spool.peek(60)
    assert len(delivered) == 60
    gate = Gate(monkeypatch)
    errors: list[BaseException] = []

    def commit() -> None:
        try:
            spool.commit(offset, 60)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    worker = threading.Thread(target=commit, daemon=True)
    worker.start()
    assert gate.reached.wait(HANG_GUARD)
    # the compaction is under way, without the lock: appends go on and see the new offset
    accepted = [n for n in range(100, 170) if spool.append(event(n))]
    gate.release.set()
    worker.join(HANG_GUARD)
    assert not worker.is_alive()

    assert errors == []
    assert gate.calls >= 3  # bulk copy, an unlocked catch-up, the last lines under the lock
    assert accepted == list(range(100, 160))  # exactly the 60 that fit under max_bytes
    expected = list(range(60, 70)) + accepted
    assert path.read_bytes() == b"".join(line(n) for n in expected)  # compacted, nothing lost
    assert (tmp_path / "audit.spool.offset").read_text() == "0"
    assert spool.count == 70
    assert spool.pending_bytes == 70 * LINE == spool.max_bytes
    assert not spool.append(event(999))  # still full after the swap
    assert numbers(spool) == expected
    spool.close()
    again = Spool(path, max_bytes=70 * LINE)
    again.open()
    assert again.count == 70
    assert numbers(again) == expected
    again.close()


class CountingSpool(Spool):
    """Counts compactions, and those that had appends land while they ran."""

    compactions = 0
    raced = 0
    appends = 0

    def append(self, event: dict[str, Any]) -> bool:
        self.appends += 1
        return super().append(event)

    def _compact(self) -> None:
        before = self.appends
        super()._compact()
        self.compactions += 1
        self.raced += self.appends != before


def test_appends_racing_repeated_compactions_lose_and_duplicate_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "_COMPACT_AFTER", 20 * LINE)
    monkeypatch.setattr(spool_module, "_COPY_CHUNK", 7 * LINE + 3)  # chunks cut lines
    monkeypatch.setattr(spool_module, "_COPY_UNDER_LOCK", LINE)
    total = 3000
    spool = CountingSpool(tmp_path / "audit.spool", max_bytes=10 * 1024 * 1024)
    spool.open()
    consumed: list[int] = []
    errors: list[BaseException] = []
    produced = threading.Event()
    deadline = time.monotonic() + HANG_GUARD

    def consume() -> None:
        try:
            while len(consumed) < total:
                events, offset = spool.peek(7)
                if not events:
                    if produced.is_set() and spool.count == 0:
                        raise AssertionError(f"spool empty after {len(consumed)} events")
                    guard(deadline, f"event {len(consumed)} (spool count {spool.count})")
                    time.sleep(0.0005)  # let the producer get ahead
                    continue
                consumed.extend(int(e["n"]) for e in events)
                spool.commit(offset, len(events))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    for n in range(total):
        assert spool.append(event(n))
        # keep the spool short, so it is compacted all along while appends go on
        while spool.count > 60 and worker.is_alive():
            guard(deadline, f"the consumer to make room (spool count {spool.count})")
            time.sleep(0.0005)
    produced.set()
    worker.join(HANG_GUARD)
    assert not worker.is_alive()

    assert errors == []
    assert consumed == list(range(total))
    assert spool.compactions >= 10
    # how many overlapped is up to the scheduler (most do); none would prove nothing
    assert spool.raced > 0
    assert spool.count == 0 and spool.pending_bytes == 0
    assert (tmp_path / "audit.spool").stat().st_size == 0
    spool.close()


def test_resume_after_reopen_midway_and_after_an_abandoned_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "_COMPACT_AFTER", 10 * LINE)
    path = tmp_path / "audit.spool"
    spool = Spool(path, 100_000)
    spool.open()
    for n in range(50):
        spool.append(event(n))
    _, offset = spool.peek(30)
    spool.commit(offset, 30)  # compacts: 30 of 50 delivered
    assert path.stat().st_size == 20 * LINE
    for n in range(50, 60):
        spool.append(event(n))
    spool.close()

    resumed = Spool(path, 100_000)
    resumed.open()
    assert resumed.count == 30
    _, offset = resumed.peek(5)
    resumed.commit(offset, 5)  # only the offset moves (no compaction)
    resumed.append(event(60))
    # no close(): as if the process died here; appends were flushed, the offset recorded
    after_crash = Spool(path, 100_000)
    after_crash.open()
    assert numbers(after_crash) == list(range(35, 61))
    after_crash.close()
    resumed.close()


def test_an_append_at_any_step_of_a_compaction_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Single-threaded and exact: after each step of a compaction, an event is appended
    whenever the append lock is free there, as `emit()` could at that moment."""
    monkeypatch.setattr(spool_module, "_COPY_UNDER_LOCK", 0)  # one unlocked catch-up
    spool = spool_of_100(tmp_path / "audit.spool", monkeypatch)
    _, offset = spool.peek(60)
    appended: list[int] = []

    def append_if_unlocked() -> None:
        if spool._lock.acquire(blocking=False):
            spool._lock.release()
            appended.append(1000 + len(appended))
            assert spool.append(event(appended[-1]))

    copy, write_offset = spool_module._copy, Spool._write_offset

    def copy_then_append(source: BinaryIO, target: BinaryIO, length: int) -> None:
        copy(source, target, length)
        append_if_unlocked()

    def write_offset_then_append(self: Spool, offset: int, *, durable: bool = False) -> None:
        write_offset(self, offset, durable=durable)
        append_if_unlocked()

    monkeypatch.setattr(spool_module, "_copy", copy_then_append)
    monkeypatch.setattr(Spool, "_write_offset", write_offset_then_append)
    spool.commit(offset, 60)
    monkeypatch.setattr(spool_module, "_copy", copy)
    monkeypatch.setattr(Spool, "_write_offset", write_offset)

    assert len(appended) >= 3  # after the bulk copy, the catch-up and the offset
    expected = list(range(60, 100)) + appended
    assert (tmp_path / "audit.spool").read_bytes() == b"".join(line(n) for n in expected)
    assert numbers(spool) == expected
    assert spool.count == len(expected)
    assert spool.pending_bytes == len(expected) * LINE
    spool.close()


class SimulatedCrash(Exception):
    """Stands for the process dying: nothing after it runs, the spool is opened anew."""


@pytest.mark.parametrize("moment", ["before_the_swap", "after_the_swap"])
def test_a_crash_during_a_compaction_replays_but_never_skips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    path = tmp_path / "audit.spool"
    spool = spool_of_100(path, monkeypatch)
    _, offset = spool.peek(10)
    spool.commit(offset, 10)  # not yet compacted: the sidecar holds a real offset
    _, offset = spool.peek(50)
    copy, replace = spool_module._copy, os.replace

    def crash_under_the_lock(source: BinaryIO, target: BinaryIO, length: int) -> None:
        if spool._lock.locked():  # the last lines, just before the files are swapped
            raise SimulatedCrash
        copy(source, target, length)

    def crash_after_replacing(source: str | os.PathLike[str], target: str) -> None:
        replace(source, target)
        raise SimulatedCrash

    if moment == "before_the_swap":
        monkeypatch.setattr(spool_module, "_copy", crash_under_the_lock)
    else:
        monkeypatch.setattr(os, "replace", crash_after_replacing)
    with pytest.raises(SimulatedCrash):
        spool.commit(offset, 50)
    monkeypatch.setattr(spool_module, "_copy", copy)
    monkeypatch.setattr(os, "replace", replace)

    again = Spool(path, 100_000)
    again.open()
    replayed = numbers(again)
    assert replayed[-40:] == list(range(60, 100))  # every undelivered event, in order
    # before the swap the old file is read from 0: delivered events again, stored once by id
    assert replayed == list(range(0 if moment == "before_the_swap" else 60, 100))
    assert not path.with_name("audit.spool.tmp").exists()
    again.close()


def test_a_failed_compaction_keeps_the_file_and_records_the_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.spool"
    spool = spool_of_100(path, monkeypatch)
    _, offset = spool.peek(60)
    size = path.stat().st_size

    def disk_full(source: BinaryIO, target: BinaryIO, length: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module, "_copy", disk_full)
    spool.commit(offset, 60)  # logged, not raised: delivery goes on
    assert path.stat().st_size == size
    assert (tmp_path / "audit.spool.offset").read_text() == str(offset)
    assert spool.count == 40
    assert numbers(spool) == list(range(60, 100))
    spool.append(event(100))
    spool.close()
    again = Spool(path, 100_000)
    again.open()
    assert numbers(again) == list(range(60, 101))
    again.close()
