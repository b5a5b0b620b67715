"""PostgreSQL-only behaviour: start-up, migrations, outages and recovery."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from e2ecov.recipes import PostgresServer, free_port
from signalgate.common.secrets import hide_secrets
from signalgate.remediation.model import MANUAL_REVIEW_OUTCOME
from signalgate.remediation.postgres import (
    _DECIDE_MANY,
    FIRST_ANALYZE_AFTER,
    SESSION_SETTINGS,
    VERSION_TABLE,
    PostgresRemediationStore,
    _same,
)
from signalgate.remediation.rows import TABLE, rr_to_row
from signalgate.remediation.schema import migrations
from signalgate.remediation.store import (
    Decision,
    IncompatibleSchema,
    ListQuery,
    StoreUnavailable,
)
from tests.integration.remediation.rrcases import later, make_rr

FAST: dict[str, Any] = {"connect_timeout": 2.0, "acquire_timeout": 2.0, "command_timeout": 5.0}


async def test_open_fails_promptly_when_the_server_is_down() -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    store = PostgresRemediationStore(dsn, **FAST)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        await store.open()
    assert time.monotonic() - started < 5
    await store.close()  # harmless after a failed open


async def test_open_migrates_once_and_records_the_version(postgres_dsn: str) -> None:
    stores = [PostgresRemediationStore(postgres_dsn, min_size=1, max_size=2) for _ in range(5)]
    try:
        # Five replicas starting together: one migrates, the others wait and find it done.
        await asyncio.gather(*(s.open() for s in stores))
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    conn = await asyncpg.connect(postgres_dsn)
    try:
        rows = await conn.fetch(f"SELECT version, name FROM {VERSION_TABLE} ORDER BY version")
    finally:
        await conn.close()
    assert [(r["version"], r["name"]) for r in rows] == [
        (m.version, m.name) for m in migrations("postgres")
    ]


async def test_a_newer_schema_is_refused_naming_both_versions(postgres_dsn: str) -> None:
    store = PostgresRemediationStore(postgres_dsn)
    await store.open()
    await store.close()
    known = migrations("postgres")[-1].version
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(
            f"INSERT INTO {VERSION_TABLE} (version, name) VALUES ($1, 'from_the_future.sql')",
            known + 41,
        )
    finally:
        await conn.close()
    newer = PostgresRemediationStore(postgres_dsn)
    with pytest.raises(IncompatibleSchema, match=rf"version {known + 41}.* up to {known}"):
        await newer.open()


def test_redact_hides_the_password() -> None:
    assert hide_secrets("postgresql://gw:s3cret@db:5432/rr") == "postgresql://gw:***@db:5432/rr"
    assert hide_secrets("postgresql://gw@db/rr") == "postgresql://gw@db/rr"


@pytest.fixture
async def own_server() -> AsyncIterator[PostgresServer]:
    """A server of this test's own, so stopping it disturbs no other test."""
    server = PostgresServer()
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.cleanup)


async def _unavailable_promptly(call: Callable[[], Awaitable[Any]]) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await call()
    assert time.monotonic() - started < 4, "an outage must fail fast, not hang"


@pytest.mark.slow
async def test_outage_fails_fast_and_the_store_recovers(own_server: PostgresServer) -> None:
    dsn = await asyncio.to_thread(own_server.create_database, "rr")
    store = PostgresRemediationStore(dsn, min_size=2, max_size=4, **FAST)
    await store.open()
    try:
        first = await store.record_firing(make_rr(), later(0))
        assert first.decision is Decision.CREATED

        await asyncio.to_thread(own_server.stop)
        await _unavailable_promptly(store.ping)
        await _unavailable_promptly(lambda: store.record_firing(make_rr(at=later(1)), later(1)))
        await _unavailable_promptly(lambda: store.get(first.rr.name))
        await _unavailable_promptly(lambda: store.list(ListQuery()))
        await _unavailable_promptly(lambda: store.record_resolved(first.rr.fingerprint, later(1)))

        await asyncio.to_thread(own_server.start)
        await store.ping()
        again = await store.record_firing(make_rr(at=later(2)), later(2))
        assert (again.decision, again.rr.name) == (Decision.DUPLICATE, first.rr.name)
        assert again.rr.deduplication.occurrence_count == 2
        # Every pooled connection works again, not just the first one handed out.
        results = await asyncio.gather(*(store.get(first.rr.name) for _ in range(20)))
        assert all(r is not None for r in results)
    finally:
        await store.close()


@pytest.mark.slow
async def test_restart_while_idle_leaves_no_stale_connections(own_server: PostgresServer) -> None:
    dsn = await asyncio.to_thread(own_server.create_database, "rr")
    store = PostgresRemediationStore(dsn, min_size=4, max_size=4, **FAST)
    await store.open()
    try:
        rr = (await store.record_firing(make_rr(), later(0))).rr
        # Warm every pooled connection, then restart the server with no call in between.
        await asyncio.gather(*(store.get(rr.name) for _ in range(8)))
        await asyncio.to_thread(own_server.stop)
        await asyncio.to_thread(own_server.start)
        results = await asyncio.gather(
            *(store.record_firing(make_rr(at=later(1)), later(1)) for _ in range(8))
        )
        assert max(r.rr.deduplication.occurrence_count for r in results) == 9
        # Closing while the server is down is prompt too (shutdown must not hang on it).
        await asyncio.to_thread(own_server.stop)
        started = time.monotonic()
        await store.close()
        assert time.monotonic() - started < 4
    finally:
        await store.close()


@pytest.mark.slow
async def test_a_fast_restart_under_load_is_only_ever_unavailable(
    own_server: PostgresServer,
) -> None:
    """PostgreSQL's shutdown notice reaching connections idle in the pool left them in a
    state their next query failed with asyncpg's InternalClientError ("cannot switch to
    state 12"): a 500 and a traceback instead of a 503 (an outside check, every restart)."""
    dsn = await asyncio.to_thread(own_server.create_database, "rr")
    store = PostgresRemediationStore(dsn, **FAST)
    await store.open()
    outcomes: dict[str, int] = {}
    running = True

    async def sender(i: int) -> None:
        n = 0
        while running:
            n += 1
            try:
                await store.record_firing(make_rr(f"r{i}-{n % 20}", at=later(n)), later(n))
                outcome = "stored"
            except StoreUnavailable:
                outcome = "unavailable"
                await asyncio.sleep(0.05)
            except Exception as exc:  # what the test is about
                outcome = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.05)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

    senders = [asyncio.create_task(sender(i)) for i in range(8)]
    try:
        for _ in range(3):
            await asyncio.sleep(1.0)
            await asyncio.to_thread(own_server.stop)  # SIGINT: PostgreSQL's fast shutdown
            await asyncio.to_thread(own_server.start)
        await asyncio.sleep(1.0)
    finally:
        running = False
        await asyncio.gather(*senders)
        await store.close()
    assert set(outcomes) <= {"stored", "unavailable"}, outcomes
    assert outcomes.get("stored", 0) > 0


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows a plan read from the RR table: returned plus filtered out, over all loops."""
    own = 0
    if plan.get("Relation Name") == TABLE:
        read = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        own = read * plan.get("Actual Loops", 1)
    return own + sum(_rows_read(child) for child in plan.get("Plans", []))


async def _analyze_count(conn: asyncpg.Connection) -> int:
    query = "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = $1"
    return int(await conn.fetchval(query, TABLE) or 0)


async def test_a_growing_table_keeps_batch_decisions_to_their_own_rrs(postgres_dsn: str) -> None:
    """Statistics taken while the table held one RR (what autovacuum leaves after a first
    burst of duplicates) once let each batch of new signals read every active RR: the
    store analyses the table itself as it fills, so a batch reads only its own RRs."""
    store = PostgresRemediationStore(postgres_dsn)
    await store.open()
    conn = await asyncpg.connect(postgres_dsn, server_settings=SESSION_SETTINGS)
    try:
        await conn.execute(f"ALTER TABLE {TABLE} SET (autovacuum_enabled = false)")
        await store.record_firing(make_rr("hot"), later(0))
        await conn.execute(f"ANALYZE {TABLE}")  # the one-RR statistics
        analyzed = await _analyze_count(conn)
        for batch in range(2 * FIRST_ANALYZE_AFTER // 50):
            await store.record_firings([(make_rr(f"pod-{batch}-{i}"), later(0)) for i in range(50)])
        deadline = time.monotonic() + 10
        while await _analyze_count(conn) == analyzed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        candidates = [(make_rr(f"new-{i}"), later(1)) for i in range(3)]
        columns = list(zip(*(rr_to_row(rr, _same) for rr, _ in candidates), strict=True))
        nows = [now for _, now in candidates]
        transaction = conn.transaction()
        await transaction.start()  # EXPLAIN ANALYZE runs the statement: rolled back
        explained = await conn.fetchval(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {_DECIDE_MANY}",
            *columns,
            nows,
            MANUAL_REVIEW_OUTCOME,
            min(nows),
        )
        await transaction.rollback()
    finally:
        await conn.close()
        await store.close()
    plan = json.loads(explained)[0]["Plan"]
    # 2,001 active RRs, none of the three candidates': a few index probes, not a walk
    assert _rows_read(plan) <= 10, json.dumps(plan, indent=1)
