"""How the delivery client settles each DataStorage answer (mock transport, no network),
and where its spool file work runs: never on the event loop."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest
from prometheus_client import CollectorRegistry

from signalgate.datastorage import client as client_module
from signalgate.datastorage import spool as spool_module
from signalgate.datastorage.client import DataStorageAuditSink
from signalgate.datastorage.spool import Spool


def event(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "event_timestamp": datetime.now(UTC).isoformat(),
        "correlation_id": "rr-1",
    }
    body.update(overrides)
    return body


class FakeDataStorage:
    """Answers by script; records what was stored."""

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.down = False
        self.refuse: set[str] = set()
        self.conflict: set[str] = set()
        self.max_items = 1000

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("down")
        events = json.loads(request.content)
        if len(events) > self.max_items:
            return httpx.Response(413, json={})
        bad = {
            f"{i}.event_outcome": "bad"
            for i, e in enumerate(events)
            if e["event_id"] in self.refuse
        }
        if bad:
            return httpx.Response(400, json={"field_errors": bad})
        if any(e["event_id"] in self.conflict for e in events):
            return httpx.Response(409, json={})
        self.stored.extend(e["event_id"] for e in events)
        return httpx.Response(201, json={})


def sink_for(
    fake: FakeDataStorage, tmp_path: Path, registry: CollectorRegistry, **options: Any
) -> DataStorageAuditSink:
    settings: dict[str, Any] = {
        "batch_size": 10,
        "flush_interval": 0.01,
        "backoff_initial": 0.01,
        "backoff_max": 0.02,
        "stop_flush_timeout": 1.0,
        **options,
    }
    return DataStorageAuditSink(
        "http://ds.test",
        None,
        tmp_path / "spool",
        registry,
        transport=httpx.MockTransport(fake),
        **settings,
    )


def dropped(registry: CollectorRegistry, reason: str) -> float:
    labels = {"service": "gateway", "reason": reason}
    return registry.get_sample_value("audit_events_dropped_total", labels) or 0.0


async def settle(sink: DataStorageAuditSink, rounds: int = 200) -> None:
    for _ in range(rounds):
        status = sink.status()
        if not status["buffered"] and not status["spooled"]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not settled: {sink.status()}")


async def test_refused_conflicting_and_expired_are_dropped_once_the_rest_delivered(
    tmp_path: Path,
) -> None:
    fake, registry = FakeDataStorage(), CollectorRegistry()
    events = [event() for _ in range(10)]
    fake.refuse = {str(events[2]["event_id"])}
    fake.conflict = {str(events[5]["event_id"])}
    events[7]["event_timestamp"] = (datetime.now(UTC) - timedelta(days=8)).isoformat()
    fake.down = True
    sink = sink_for(fake, tmp_path, registry)
    await sink.start()
    for item in events:
        sink.emit(item)
    await asyncio.sleep(0.1)  # several failed attempts at the same batch
    fake.down = False
    await settle(sink)
    await sink.stop()
    expected = [e["event_id"] for i, e in enumerate(events) if i not in (2, 5, 7)]
    assert fake.stored == expected
    assert dropped(registry, "rejected") == 1
    assert dropped(registry, "conflict") == 1
    assert dropped(registry, "expired") == 1


async def test_413_halves_the_batch(tmp_path: Path) -> None:
    fake, registry = FakeDataStorage(), CollectorRegistry()
    fake.max_items = 3
    sink = sink_for(fake, tmp_path, registry)
    await sink.start()
    events = [event() for _ in range(10)]
    for item in events:
        sink.emit(item)
    await settle(sink)
    await sink.stop()
    assert fake.stored == [e["event_id"] for e in events]


async def test_emit_fills_an_id_and_stop_spools_when_down(tmp_path: Path) -> None:
    fake, registry = FakeDataStorage(), CollectorRegistry()
    fake.down = True
    sink = sink_for(fake, tmp_path, registry)
    await sink.start()
    sink.emit({"event_timestamp": datetime.now(UTC).isoformat()})
    await sink.stop()
    assert sink.status()["spooled"] == 1
    fake.down = False
    again = sink_for(fake, tmp_path, CollectorRegistry())
    await again.start()
    await settle(again)
    await again.stop()
    assert len(fake.stored) == 1
    uuid.UUID(fake.stored[0])


class RecordingSpool(Spool):
    """The real spool, noting which thread ran each of its operations."""

    made: list[RecordingSpool] = []

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__(path, max_bytes)
        self.threads: dict[str, set[int]] = defaultdict(set)
        RecordingSpool.made.append(self)

    def _note(self, operation: str) -> None:
        self.threads[operation].add(threading.get_ident())

    def open(self) -> None:
        self._note("open")
        super().open()

    def append(self, event: dict[str, Any]) -> bool:
        self._note("append")
        return super().append(event)

    def peek(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        self._note("peek")
        return super().peek(limit)

    def commit(self, offset: int, delivered: int) -> None:
        self._note("commit")
        super().commit(offset, delivered)

    def _compact(self) -> None:
        self._note("compact")
        super()._compact()

    def _sync(self) -> None:
        self._note("sync")
        super()._sync()

    def close(self) -> None:
        self._note("close")
        super().close()


@pytest.fixture
def recording_spool(monkeypatch: pytest.MonkeyPatch) -> type[RecordingSpool]:
    monkeypatch.setattr(client_module, "Spool", RecordingSpool)
    monkeypatch.setattr(spool_module, "_COMPACT_AFTER", 500)  # compact within a few batches
    monkeypatch.setattr(RecordingSpool, "made", [])
    return RecordingSpool


async def test_spool_file_work_runs_off_the_event_loop(
    tmp_path: Path, recording_spool: type[RecordingSpool]
) -> None:
    loop_thread = threading.get_ident()
    fake, registry = FakeDataStorage(), CollectorRegistry()
    fake.down = True
    sink = sink_for(fake, tmp_path, registry, buffer_size=5)
    await sink.start()
    events = [event() for _ in range(60)]
    for item in events:
        sink.emit(item)
    assert sink.status()["spooled"] == 55  # emit() spooled them before returning
    fake.down = False
    await settle(sink, rounds=3000)
    await sink.stop()

    assert fake.stored == [e["event_id"] for e in events]
    (spool,) = recording_spool.made
    worked = {name: threads for name, threads in spool.threads.items() if name != "append"}
    assert set(worked) == {"open", "peek", "commit", "compact", "sync", "close"}
    assert all(loop_thread not in threads for threads in worked.values()), worked
    assert len(set().union(*worked.values())) == 1  # one thread, so they take turns in order
    assert spool.threads["append"] == {loop_thread}  # the one cheap step left on the loop


async def test_stop_while_a_compaction_runs_loses_nothing(
    tmp_path: Path, recording_spool: type[RecordingSpool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() gives up on a delivery task whose commit is compacting in the spool thread;
    the thread goes on, events emitted meanwhile are spooled beside it, and the spool is
    closed only after the compaction: the next start delivers the rest, each once."""
    reached, release = threading.Event(), threading.Event()
    steps: list[str] = []
    copy = spool_module._copy

    def held_copy(source: BinaryIO, target: BinaryIO, length: int) -> None:
        if not reached.is_set():  # the first, unlocked copy of the first compaction
            steps.append("compaction holds")
            reached.set()
            release.wait(60)
        copy(source, target, length)

    monkeypatch.setattr(spool_module, "_copy", held_copy)
    original_close = RecordingSpool.close

    def noting_close(self: RecordingSpool) -> None:
        steps.append("close")
        original_close(self)

    monkeypatch.setattr(RecordingSpool, "close", noting_close)

    fake, registry = FakeDataStorage(), CollectorRegistry()
    fake.down = True
    sink = sink_for(fake, tmp_path, registry, buffer_size=5, stop_flush_timeout=0.05)
    await sink.start()
    events = [event() for _ in range(60)]
    for item in events:
        sink.emit(item)
    fake.down = False
    assert await asyncio.to_thread(reached.wait, 60)
    late = [event() for _ in range(10)]
    for item in late:
        sink.emit(item)  # appended beside the compaction, not blocked by it
    delivery = next(t for t in asyncio.all_tasks() if t.get_name() == "audit-delivery")
    stopping = asyncio.create_task(sink.stop())
    await asyncio.wait([delivery])  # cancelled by stop() after stop_flush_timeout
    assert delivery.cancelled()
    for _ in range(10):
        await asyncio.sleep(0)  # let stop() go on to closing the spool
    steps.append("released")
    release.set()
    await stopping
    assert steps == ["compaction holds", "released", "close"]

    again = sink_for(fake, tmp_path, CollectorRegistry())
    await again.start()
    await settle(again, rounds=3000)
    await again.stop()
    assert fake.stored == [e["event_id"] for e in events + late]
