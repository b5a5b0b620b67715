"""The relay fills its batches by size and time: a busy Gateway sends full batches, not one
per journal write, and a lone event still goes out within one flush interval."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from signalgate.audit.journal import Journal
from signalgate.audit.settings import AuditSettings, DeliverySettings
from signalgate.audit.sink import JournalAuditSink
from tests.unit.audit.test_audit_relay_answers import FakeDataStorage, event, settle


def sink_for(fake: FakeDataStorage, tmp_path: Path, flush_interval: float) -> JournalAuditSink:
    delivery = DeliverySettings(url="http://ds.test", batch_size=100, flush_interval=flush_interval)
    return JournalAuditSink(
        delivery,
        AuditSettings(),
        tmp_path / "journal",
        CollectorRegistry(),
        transport=httpx.MockTransport(fake),
    )


async def test_many_small_journal_writes_go_out_as_one_batch(tmp_path: Path) -> None:
    fake = FakeDataStorage()
    sink = sink_for(fake, tmp_path, flush_interval=0.5)
    await sink.start()
    try:
        for _ in range(8):  # eight requests' worth, each its own journal write
            for _ in range(5):
                sink.emit(event())
            await sink.commit()
            await asyncio.sleep(0.01)
        await settle(sink)
        assert len(fake.stored) == 40
        assert fake.batches == 1, fake.batches
    finally:
        await sink.stop()


async def test_a_full_batch_goes_at_once_and_a_lone_event_within_the_interval(
    tmp_path: Path,
) -> None:
    fake = FakeDataStorage()
    sink = sink_for(fake, tmp_path, flush_interval=0.3)
    await sink.start()
    try:
        for _ in range(250):
            sink.emit(event())
        await sink.commit()
        await settle(sink)
        assert len(fake.stored) == 250 and fake.batches == 3
        sink.emit(event())
        await sink.commit()
        started = time.monotonic()
        await settle(sink)
        assert time.monotonic() - started < 2.0
        assert len(fake.stored) == 251
    finally:
        await sink.stop()


async def test_a_relay_gathering_a_batch_is_woken_when_it_is_full_not_by_each_write(
    tmp_path: Path,
) -> None:
    """Under load the journal writes hundreds of groups a second; a relay waiting to fill a
    batch of 100 is woken by the write that fills it, not by every one before."""
    journal = Journal(tmp_path / "journal", segment_bytes=1 << 20)
    await journal.open()
    try:
        gathering = asyncio.create_task(journal.wait_appended(5.0, backlog=3))
        for n in range(2):  # two writes, two events: not a batch yet
            journal.stage({"event_id": f"e-{n}"})
            await journal.commit()
        await asyncio.sleep(0.05)
        assert not gathering.done()
        journal.stage({"event_id": "e-2"})
        await journal.commit()
        async with asyncio.timeout(1.0):
            await gathering
        # an idle relay (waiting for any event) is woken by the first write
        idle = asyncio.create_task(journal.wait_appended(5.0))
        await asyncio.sleep(0.01)
        journal.stage({"event_id": "e-3"})
        await journal.commit()
        async with asyncio.timeout(1.0):
            await idle
    finally:
        await journal.close()
