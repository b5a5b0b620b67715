"""How the delivery client settles each DataStorage answer (mock transport, no network)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from signalgate.datastorage.client import DataStorageAuditSink


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
    fake: FakeDataStorage, tmp_path: Path, registry: CollectorRegistry
) -> DataStorageAuditSink:
    return DataStorageAuditSink(
        "http://ds.test",
        None,
        tmp_path / "spool",
        registry,
        batch_size=10,
        flush_interval=0.01,
        backoff_initial=0.01,
        backoff_max=0.02,
        stop_flush_timeout=1.0,
        transport=httpx.MockTransport(fake),
    )


def dropped(registry: CollectorRegistry, reason: str) -> float:
    labels = {"service": "gateway", "reason": reason}
    return registry.get_sample_value("audit_events_dropped_total", labels) or 0.0


async def settle(sink: DataStorageAuditSink) -> None:
    for _ in range(200):
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
