"""The Gateway's audit delivery client against a real DataStorage process."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from dstools import ADMIN_TOKEN, WRITER_TOKEN, datastorage_process, event_body
from prometheus_client import CollectorRegistry

from signalgate.datastorage.client import DataStorageAuditSink
from tests.support.services import ServiceProcess

FAST: dict[str, Any] = {
    "batch_size": 100,
    "flush_interval": 0.1,
    "timeout": 2.0,
    "backoff_initial": 0.1,
    "backoff_max": 0.5,
    "stop_flush_timeout": 2.0,
}


@pytest.fixture
def datastorage(tmp_path: Path) -> Iterator[ServiceProcess]:
    process = datastorage_process(tmp_path / "ds").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "ds-token"
    path.write_text(f"  {WRITER_TOKEN}\n")
    return path


def make_sink(
    service: ServiceProcess,
    token_file: Path,
    spool: Path,
    registry: CollectorRegistry,
    **options: Any,
) -> DataStorageAuditSink:
    settings = {**FAST, **options}
    return DataStorageAuditSink(service.api_url, token_file, spool, registry, **settings)


@pytest.fixture
async def sink_parts(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    yield {"spool": tmp_path / "spool" / "audit.spool", "registry": CollectorRegistry()}


async def stored_ids(service: ServiceProcess, correlation_id: str) -> list[str]:
    ids: list[str] = []
    async with httpx.AsyncClient(
        base_url=service.api_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as client:
        offset = 0
        while True:
            page = (
                await client.get(
                    "/api/v1/audit/events",
                    params={"correlation_id": correlation_id, "limit": 1000, "offset": offset},
                )
            ).json()
            ids.extend(event["event_id"] for event in page["data"])
            if not page["pagination"]["has_more"]:
                return ids
            offset += 1000


async def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_events_arrive_in_batches(
    datastorage: ServiceProcess, token_file: Path, sink_parts: dict[str, Any]
) -> None:
    sink = make_sink(datastorage, token_file, sink_parts["spool"], sink_parts["registry"])
    await sink.start()
    cid = f"rr-{uuid.uuid4().hex[:8]}"
    try:
        for _ in range(250):
            sink.emit({**event_body(cid), "event_id": None})
        await wait_until(lambda: _count_is(datastorage, cid, 250), 20, "250 events in DataStorage")
        assert sink.status()["buffered"] == 0
    finally:
        await sink.stop()


async def _count_is(service: ServiceProcess, cid: str, count: int) -> bool:
    return len(await stored_ids(service, cid)) == count


async def test_datastorage_outage_every_event_arrives_exactly_once(
    datastorage: ServiceProcess, token_file: Path, sink_parts: dict[str, Any]
) -> None:
    registry = sink_parts["registry"]
    sink = make_sink(datastorage, token_file, sink_parts["spool"], registry, buffer_size=100)
    await sink.start()
    cid = f"rr-{uuid.uuid4().hex[:8]}"
    try:
        sent = [event_body(cid) for _ in range(2050)]
        for event in sent[:50]:
            sink.emit(event)
        await wait_until(lambda: _count_is(datastorage, cid, 50), 20, "the first 50 events")
        datastorage.stop()
        started = time.perf_counter()
        for event in sent[50:]:
            sink.emit(event)
        emit_seconds = time.perf_counter() - started
        assert emit_seconds < 2.0  # emitting never waits on DataStorage
        await asyncio.sleep(1.0)  # a few failed deliveries while it is down
        assert sink.status()["reachable"] is False
        assert metric(registry, "audit_events_spooled") >= 1900
        assert metric(registry, "audit_events_buffered") <= 100
        datastorage.start()
        await wait_until(
            lambda: _count_is(datastorage, cid, 2050), 60, "every event after the restart"
        )
        ids = await stored_ids(datastorage, cid)
        assert sorted(ids) == sorted(event["event_id"] for event in sent)
        await wait_until(
            _async(lambda: sink.status()["spooled"] == 0 and sink.status()["buffered"] == 0),
            10,
            "the spool to empty",
        )
        assert (
            metric(registry, "audit_events_dropped_total", service="gateway", reason="spool_full")
            == 0
        )
    finally:
        await sink.stop()


def _async(check: Any) -> Any:
    async def condition() -> bool:
        return bool(check())

    return condition


async def test_stop_spools_what_it_cannot_deliver_and_the_next_start_sends_it(
    datastorage: ServiceProcess, token_file: Path, sink_parts: dict[str, Any]
) -> None:
    cid = f"rr-{uuid.uuid4().hex[:8]}"
    datastorage.stop()
    sink = make_sink(datastorage, token_file, sink_parts["spool"], sink_parts["registry"])
    await sink.start()
    sent = [event_body(cid) for _ in range(30)]
    for event in sent:
        sink.emit(event)
    started = time.perf_counter()
    await sink.stop()
    assert time.perf_counter() - started < 5
    assert sink.status()["spooled"] == 30
    datastorage.start()
    again = make_sink(datastorage, token_file, sink_parts["spool"], CollectorRegistry())
    await again.start()
    try:
        await wait_until(lambda: _count_is(datastorage, cid, 30), 20, "the spooled events")
    finally:
        await again.stop()
    assert sorted(await stored_ids(datastorage, cid)) == sorted(e["event_id"] for e in sent)


async def test_drops_only_for_a_full_spool_expiry_or_refusal(
    datastorage: ServiceProcess, token_file: Path, sink_parts: dict[str, Any]
) -> None:
    registry = sink_parts["registry"]
    cid = f"rr-{uuid.uuid4().hex[:8]}"
    datastorage.stop()
    sink = make_sink(
        datastorage, token_file, sink_parts["spool"], registry, buffer_size=2, spool_max_bytes=3000
    )
    await sink.start()
    try:
        for _ in range(20):
            sink.emit(event_body(cid))
        full = metric(
            registry, "audit_events_dropped_total", service="gateway", reason="spool_full"
        )
        assert 0 < full < 18
        datastorage.start()
        delivered = 20 - int(full)
        await wait_until(lambda: _count_is(datastorage, cid, delivered), 20, "the events that fit")
        old = (datetime.now(UTC) - timedelta(days=8)).isoformat()
        sink.emit(event_body(cid, event_timestamp=old))
        sink.emit(event_body(cid, event_outcome="maybe"))
        sink.emit(event_body(cid))
        await wait_until(
            lambda: _count_is(datastorage, cid, delivered + 1), 20, "the good one of the three"
        )
        await wait_until(
            _async(
                lambda: (
                    metric(
                        registry, "audit_events_dropped_total", service="gateway", reason="rejected"
                    )
                    == 1
                    and metric(
                        registry, "audit_events_dropped_total", service="gateway", reason="expired"
                    )
                    == 1
                )
            ),
            10,
            "the refused and the expired event to be dropped",
        )
    finally:
        await sink.stop()
