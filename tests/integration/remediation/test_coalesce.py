"""The duplicate coalescer in front of the SQL stores: concurrent signals for one
fingerprint share store round trips, and every one is still counted exactly once."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from rrcases import later, make_rr

from signalgate.remediation.coalesce import CoalescingStore
from signalgate.remediation.model import RemediationRequest, StatusPatch
from signalgate.remediation.sqlite import SqliteRemediationStore
from signalgate.remediation.store import Decision, FiringResult, ListQuery


class CountingSqliteStore(SqliteRemediationStore):
    """The real SQLite store, counting the statements the coalescer sends it."""

    decisions = 0
    bumps = 0

    async def record_firing(self, candidate: RemediationRequest, now: datetime) -> FiringResult:
        self.decisions += 1
        return await super().record_firing(candidate, now)

    async def bump_active(self, name: str, count: int, now: datetime) -> RemediationRequest | None:
        self.bumps += 1
        return await super().bump_active(name, count, now)


async def test_a_storm_shares_round_trips_and_counts_each_signal(tmp_path: Path) -> None:
    inner = CountingSqliteStore(tmp_path / "rr.db")
    store = CoalescingStore(inner)
    await store.open()
    try:
        results = await asyncio.gather(
            *(store.record_firing(make_rr(at=later(i / 100)), later(i / 100)) for i in range(300))
        )
        assert [r.decision for r in results].count(Decision.CREATED) == 1
        (stored,) = (await store.list(ListQuery())).items
        assert stored.deduplication.occurrence_count == 300
        # far fewer transactions than signals: one decision, then one bump per queued batch
        assert inner.decisions + inner.bumps < 30, (inner.decisions, inner.bumps)
    finally:
        await store.close()


async def test_a_batch_waiting_on_an_rr_that_ended_is_decided_again(tmp_path: Path) -> None:
    store = CoalescingStore(SqliteRemediationStore(tmp_path / "rr.db"))
    await store.open()
    try:
        first = (await store.record_firing(make_rr(), later(0))).rr
        await store.update_status(first.name, StatusPatch(overall_phase="Completed"))
        results = await asyncio.gather(
            *(store.record_firing(make_rr(at=later(1)), later(1)) for _ in range(20))
        )
        created = [r for r in results if r.decision is Decision.CREATED]
        assert len(created) == 1 and created[0].rr.name != first.name
        assert {r.rr.name for r in results} == {created[0].rr.name}
        assert max(r.rr.deduplication.occurrence_count for r in results) == 20
    finally:
        await store.close()
