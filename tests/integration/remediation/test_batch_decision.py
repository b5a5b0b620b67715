"""The SQL stores' batch decision (`record_firings`, what group commit sends): many signals of
distinct fingerprints in one transaction end exactly as deciding each one alone would.

Each store may leave a signal undecided (None) for the full rules (`record_firing`); the test
then decides it so, as the coalescer does, and checks the outcome of every signal and what
is stored afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signalgate.remediation.coalesce import BumpingStore
from signalgate.remediation.model import MANUAL_REVIEW_OUTCOME, StatusPatch
from signalgate.remediation.postgres import PostgresRemediationStore
from signalgate.remediation.sqlite import SqliteRemediationStore
from signalgate.remediation.store import Decision
from tests.integration.remediation.rrcases import later, make_rr


@pytest.fixture(params=["sqlite", "postgres"])
async def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BumpingStore]:
    store: BumpingStore
    if request.param == "sqlite":
        store = SqliteRemediationStore(tmp_path / "rr.db")
    else:
        store = PostgresRemediationStore(request.getfixturevalue("postgres_dsn"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_a_mixed_batch_ends_as_each_signal_alone(sql_store: BumpingStore) -> None:
    store = sql_store

    async def stored(resource: str, **status: object) -> str:
        rr = (await store.record_firing(make_rr(resource), later(0))).rr
        if status:
            await store.update_status(rr.name, StatusPatch(**status))  # type: ignore[arg-type]
        return rr.name

    active = await stored("active")
    reviewed = await stored("reviewed", overall_phase="Failed", outcome=MANUAL_REVIEW_OUTCOME)
    cooling = await stored("cooling", overall_phase="Completed", next_allowed_execution=later(600))
    cooled = await stored("cooled", overall_phase="Completed", next_allowed_execution=later(5))
    ended = await stored("ended", overall_phase="Completed")
    fresh = [f"fresh-{i}" for i in range(40)]

    # one signal per fingerprint, each at its own time (the batch's times differ)
    resources = ["active", "reviewed", "cooling", "cooled", "ended", *fresh]
    signals = [(make_rr(r, at=later(10 + i)), later(10 + i)) for i, r in enumerate(resources)]
    results = await store.record_firings(signals)
    assert len(results) == len(signals)
    outcome = {}
    for (candidate, now), result in zip(signals, results, strict=True):
        decided = result or await store.record_firing(candidate, now)
        outcome[candidate.spec["targetResource"]["name"]] = (decided, candidate, now)

    for resource, name in (("active", active), ("reviewed", reviewed), ("cooling", cooling)):
        decided, _, now = outcome[resource]
        assert (decided.decision, decided.rr.name) == (Decision.DUPLICATE, name), resource
        assert decided.rr.deduplication.occurrence_count == 2
        assert decided.rr.deduplication.last_seen_at == now  # its own signal's time
        assert await store.get(name) == decided.rr
    for resource in ("cooled", "ended", *fresh):
        decided, candidate, _ = outcome[resource]
        assert (decided.decision, decided.rr) == (Decision.CREATED, candidate), resource
        assert await store.get(candidate.name) == candidate
    for name in (cooled, ended):  # the ended RRs were left as they were
        old = await store.get(name)
        assert old is not None and old.deduplication.occurrence_count == 1


async def test_a_batch_of_only_duplicates_bumps_each_active_rr(sql_store: BumpingStore) -> None:
    store = sql_store
    names = [(await store.record_firing(make_rr(f"pod-{i}"), later(0))).rr.name for i in range(5)]
    signals = [(make_rr(f"pod-{i}", at=later(i + 1)), later(i + 1)) for i in range(5)]
    results = await store.record_firings(signals)
    for i, result in enumerate(results):
        assert result is not None
        assert (result.decision, result.rr.name) == (Decision.DUPLICATE, names[i])
        assert result.rr.deduplication.occurrence_count == 2
        assert result.rr.deduplication.last_seen_at == later(i + 1)
