"""How the relay settles each DataStorage answer (a scripted DataStorage over
`httpx.MockTransport`, no network): what is delivered, what is dropped, what is retried."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from signalgate.audit.journal import Journal, JournalUnavailable, Slice
from signalgate.audit.settings import AuditSettings, DeliverySettings
from signalgate.audit.sink import JournalAuditSink

EXTENSIONS = frozenset({"gateway.signal.resolved", "gateway.signal.rejected"})


def event(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "gateway.signal.received",
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
        self.status: int | None = None  # answer every batch with this, when set
        self.refuse: set[str] = set()
        self.refuse_unnamed: set[str] = set()  # refused whole, no item named
        self.conflict: set[str] = set()
        self.max_items = 1000
        self.capabilities: list[str] | None = None  # None: no such endpoint (404)
        self.batches = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("down")
        if request.url.path == "/api/v1/audit/capabilities":
            if self.capabilities is None:
                return httpx.Response(404, json={"title": "Not Found"})
            return httpx.Response(200, json={"eventTypes": self.capabilities})
        self.batches += 1
        if self.status is not None:
            return httpx.Response(self.status, json={})
        events = json.loads(request.content)
        if len(events) > self.max_items:
            return httpx.Response(413, json={})
        if any(e["event_id"] in self.refuse_unnamed for e in events):
            return httpx.Response(400, json={"detail": "unknown event_type"})
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
    fake: FakeDataStorage,
    tmp_path: Path,
    registry: CollectorRegistry,
    audit: AuditSettings | None = None,
) -> JournalAuditSink:
    delivery = DeliverySettings(
        url="http://ds.test",
        batch_size=10,
        flush_interval=0.01,
        backoff_initial=0.01,
        backoff_max=0.02,
        stop_flush_timeout=1.0,
    )
    return JournalAuditSink(
        delivery,
        audit or AuditSettings(),
        tmp_path / "journal",
        registry,
        extension_types=EXTENSIONS,
        transport=httpx.MockTransport(fake),
    )


def dropped(registry: CollectorRegistry, reason: str) -> float:
    labels = {"service": "gateway", "reason": reason}
    return registry.get_sample_value("audit_events_dropped_total", labels) or 0.0


async def settle(sink: JournalAuditSink, rounds: int = 300) -> None:
    for _ in range(rounds):
        if not sink.status()["spooled"] and not sink.status()["buffered"]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not settled: {sink.status()}")


async def emit_all(sink: JournalAuditSink, events: list[dict[str, Any]]) -> None:
    for item in events:
        sink.emit(item)
    await sink.commit()


async def test_refused_conflicting_and_expired_are_dropped_the_rest_delivered_in_order(
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
    await emit_all(sink, events)
    await asyncio.sleep(0.1)  # several failed attempts at the same batch
    fake.down = False
    await settle(sink)
    await sink.stop()
    assert fake.stored == [e["event_id"] for i, e in enumerate(events) if i not in (2, 5, 7)]
    assert dropped(registry, "rejected") == 1
    assert dropped(registry, "conflict") == 1
    assert dropped(registry, "expired") == 1


async def test_a_400_naming_no_item_drops_only_the_refused_one(tmp_path: Path) -> None:
    fake, registry = FakeDataStorage(), CollectorRegistry()
    events = [event() for _ in range(10)]
    fake.refuse_unnamed = {str(events[4]["event_id"])}
    sink = sink_for(fake, tmp_path, registry)
    await sink.start()
    await emit_all(sink, events)
    await settle(sink)
    await sink.stop()
    assert fake.stored == [e["event_id"] for i, e in enumerate(events) if i != 4]
    assert dropped(registry, "rejected") == 1


async def test_401_and_403_are_retried_never_dropped(tmp_path: Path) -> None:
    for status in (401, 403):
        fake, registry = FakeDataStorage(), CollectorRegistry()
        fake.status = status
        sink = sink_for(fake, tmp_path / str(status), registry)
        await sink.start()
        events = [event() for _ in range(3)]
        await emit_all(sink, events)
        while fake.batches < 3:
            await asyncio.sleep(0.01)
        assert sink.status()["spooled"] == 3  # still held, still retried
        fake.status = None
        await settle(sink)
        await sink.stop()
        assert fake.stored == [e["event_id"] for e in events]
        assert sum(dropped(registry, r) for r in ("rejected", "conflict", "expired")) == 0


async def test_413_halves_the_batch(tmp_path: Path) -> None:
    fake, registry = FakeDataStorage(), CollectorRegistry()
    fake.max_items = 3
    sink = sink_for(fake, tmp_path, registry)
    await sink.start()
    events = [event() for _ in range(10)]
    await emit_all(sink, events)
    await settle(sink)
    await sink.stop()
    assert fake.stored == [e["event_id"] for e in events]


async def test_extension_types_go_only_to_a_datastorage_that_lists_them(tmp_path: Path) -> None:
    kinds = ["gateway.signal.received", "gateway.signal.rejected", "gateway.signal.resolved"]
    for listed in (None, [*kinds, "gateway.crd.created"]):
        fake = FakeDataStorage()
        fake.capabilities = listed
        sink = sink_for(fake, tmp_path / str(listed is None), CollectorRegistry())
        await sink.start()
        events = [event(event_type=kind) for kind in kinds]
        await emit_all(sink, events)
        await settle(sink)
        await sink.stop()
        if listed is None:  # another vendor's DataStorage: only the standard type is sent
            assert fake.stored == [events[0]["event_id"]]
        else:
            assert fake.stored == [e["event_id"] for e in events]


async def test_stop_keeps_the_undelivered_for_the_next_start(tmp_path: Path) -> None:
    fake = FakeDataStorage()
    fake.down = True
    sink = sink_for(fake, tmp_path, CollectorRegistry())
    await sink.start()
    sink.emit({"event_timestamp": datetime.now(UTC).isoformat(), "event_type": "x"})
    await sink.commit()
    await sink.stop()
    assert sink.status()["spooled"] == 1
    fake.down = False
    again = sink_for(fake, tmp_path, CollectorRegistry())
    await again.start()
    await settle(again)
    await again.stop()
    assert len(fake.stored) == 1
    uuid.UUID(fake.stored[0])  # emit gave it an id


async def test_a_journal_file_error_is_retried_and_delivery_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The cursor's write fails once after a delivery (a disk error): the relay keeps
    running, sends that batch again (DataStorage stores an event id once) and delivers
    everything after it; it used to stop for good, the journal filling behind it."""
    fake = FakeDataStorage()
    registry = CollectorRegistry()
    sink = sink_for(fake, tmp_path, registry)
    real = Journal.confirm
    failures = 0

    async def failing_once(self: Journal, piece: Slice) -> None:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise OSError(5, "Input/output error")
        await real(self, piece)

    monkeypatch.setattr(Journal, "confirm", failing_once)
    await sink.start()
    try:
        first = [event() for _ in range(10)]
        await emit_all(sink, first)
        await settle(sink)
        assert failures == 1
        [logged] = [r for r in caplog.records if "cursor not saved" in r.getMessage()]
        assert "Input/output error" in str(getattr(logged, "error", ""))
        assert sink.status()["last_error"] == ""  # the batch sent again, its cursor saved
        later = [event() for _ in range(25)]
        await emit_all(sink, later)
        await settle(sink)
        assert set(fake.stored) == {e["event_id"] for e in first + later}
        assert len(fake.stored) == 45  # the first batch twice: its cursor was not saved
    finally:
        await sink.stop()


async def test_a_failing_journal_refuses_for_a_moment_then_tries_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal write that fails (the disk full: an outside check filled a 200 KiB tmpfs)
    makes the sink refuse for `FAILURE_HOLD`: the Gateway then answers 503 before deciding,
    where every signal let through was counted in the store and then answered 503 (thousands
    of counts without an audit event). After the hold a write is tried again; one that
    succeeds ends the refusal."""
    import errno

    from signalgate.audit import journal as journal_module

    monkeypatch.setattr(journal_module, "FAILURE_HOLD", 0.2)
    fake = FakeDataStorage()
    sink = sink_for(fake, tmp_path, CollectorRegistry())
    real = Journal._write
    full = True

    def disk(self: Journal, data: bytes) -> tuple[int, int]:
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Journal, "_write", disk)
    await sink.start()
    try:
        assert sink.refusal() is None
        sink.emit(event())
        with pytest.raises(JournalUnavailable):
            await sink.commit()
        refused = sink.refusal()
        assert refused is not None and "No space left on device" in refused.message
        assert (refused.reason, refused.retry_after) == ("journal_failing", 1)
        assert not sink.accepting()
        await asyncio.sleep(0.25)  # the hold is over: the next write is tried
        assert sink.accepting()
        full = False
        sink.emit(event())
        await sink.commit()
        assert sink.refusal() is None
    finally:
        await sink.stop()


async def test_with_drop_a_failing_journal_drops_under_its_own_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`audit.onBacklogFull: drop` answers on while the disk fails: the events of the hold
    are counted as `journal_failing`, not as a full backlog."""
    import errno

    def disk(self: Journal, data: bytes) -> tuple[int, int]:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Journal, "_write", disk)
    registry = CollectorRegistry()
    sink = sink_for(FakeDataStorage(), tmp_path, registry, AuditSettings(on_backlog_full="drop"))
    await sink.start()
    try:
        sink.emit(event())
        with pytest.raises(JournalUnavailable):
            await sink.commit()
        sink.emit(event())
        sink.emit(event())
        assert dropped(registry, "journal_failing") == 2
        assert dropped(registry, "backlog_full") == 0
    finally:
        await sink.stop()


def test_every_drop_reason_is_a_series_from_the_start(tmp_path: Path) -> None:
    """An alert on `audit_events_dropped_total` needs the series before the first drop."""
    from signalgate.audit.sink import DROP_REASONS

    registry = CollectorRegistry()
    sink_for(FakeDataStorage(), tmp_path, registry)
    for reason in DROP_REASONS:
        labels = {"service": "gateway", "reason": reason}
        assert registry.get_sample_value("audit_events_dropped_total", labels) == 0.0, reason


async def test_a_delivery_after_an_outage_clears_the_error_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """/readyz showed the outage's error for good after DataStorage was back."""
    caplog.set_level(logging.INFO, "signalgate.audit")
    fake, registry = FakeDataStorage(), CollectorRegistry()
    fake.down = True
    sink = sink_for(fake, tmp_path, registry)
    await sink.start()
    await emit_all(sink, [event()])
    await asyncio.sleep(0.1)
    assert "ConnectError" in sink.status()["last_error"]
    fake.down = False
    await settle(sink)
    await emit_all(sink, [event()])
    await settle(sink)
    await sink.stop()
    assert sink.status()["last_error"] == "" and sink.status()["reachable"] is True
    [recovered] = [r for r in caplog.records if r.getMessage() == "audit delivery recovered"]
    # what it recovered from, not an `error` a log search for errors would find
    assert "ConnectError" in recovered.__dict__["recovered_from"]
    assert "error" not in recovered.__dict__


async def test_the_journal_bytes_its_bound_and_whether_it_accepts_are_metrics(
    tmp_path: Path,
) -> None:
    """What an operator alerts on before signals are refused (the journal's fill counted in
    events only, and its bound in bytes, was not comparable)."""
    fake, registry = FakeDataStorage(), CollectorRegistry()
    fake.down = True
    delivery = DeliverySettings(
        url="http://ds.test", backoff_initial=0.01, backoff_max=0.02, spool_max_bytes=4096
    )
    sink = JournalAuditSink(
        delivery,
        AuditSettings(),
        tmp_path / "journal",
        registry,
        extension_types=EXTENSIONS,
        transport=httpx.MockTransport(fake),
    )
    await sink.start()
    try:
        assert registry.get_sample_value("audit_journal_max_bytes") == 4096
        assert registry.get_sample_value("audit_accepting") == 1
        await emit_all(sink, [event() for _ in range(3)])
        held = registry.get_sample_value("audit_journal_bytes") or 0
        assert 0 < held < 4096
        await emit_all(sink, [event(big="x" * 4096)])
        assert (registry.get_sample_value("audit_journal_bytes") or 0) >= 4096
        assert registry.get_sample_value("audit_accepting") == 0  # signals now refused
    finally:
        await sink.stop()
