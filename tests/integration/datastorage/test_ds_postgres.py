"""PostgreSQL specifics: partitions, the immutability trigger, tampering detection,
schema refusal and the CLI jobs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from signalgate.datastorage.chain import verify
from signalgate.datastorage.events import validate_event
from signalgate.datastorage.migrations import SCHEMA
from signalgate.datastorage.postgres import _FIND_SQL, _HEADS_SQL, PostgresAuditStore
from signalgate.datastorage.sqlite import SqliteAuditStore
from signalgate.datastorage.store import EXACT_FILTERS
from tests.support.event_bodies import event_body


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "signalgate.datastorage.cli", *args],
        capture_output=True,
        text=True,
        env={**full, **(env or {})},
        timeout=60,
    )


async def test_partitions_cover_last_month_to_three_ahead(postgres_dsn: str) -> None:
    store = PostgresAuditStore(postgres_dsn, auto_migrate=True)
    await store.open()
    try:
        assert await store.maintain() == 5  # open() made them, and maintain tells
        assert await store.maintain() == 0  # once
    finally:
        await store.close()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        names = {
            row["relname"]
            for row in await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'audit_events'::regclass"
            )
        }
    finally:
        await conn.close()
    today = datetime.now(UTC).date().replace(day=1)
    months = []
    year, month = today.year, today.month - 1
    for _ in range(5):
        if month == 0:
            year, month = year - 1, 12
        if month == 13:
            year, month = year + 1, 1
        months.append(f"audit_events_{year:04d}_{month:02d}")
        month += 1
    assert set(months) <= names
    assert "audit_events_default" in names


async def test_a_month_written_before_its_partition_existed_gets_it_later(
    postgres_dsn: str,
) -> None:
    """DataStorage running past the months made ahead (no `maintain` from cron) stores that
    month's events in the default partition. Creating the month's partition then failed
    ("updated partition constraint for default partition would be violated"): every later
    `maintain` and every start of DataStorage, for good. Now the rows move into it."""
    from signalgate.datastorage.store import verify_stored

    store = PostgresAuditStore(postgres_dsn, auto_migrate=True)
    await store.open()
    await store.maintain()  # what opening made is told once
    partition = f"audit_events_{datetime.now(UTC):%Y_%m}"
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f'DROP TABLE "{partition}"')  # as if the month came unprepared
        events = [validate_event(event_body("rr-late"), datetime.now(UTC)) for _ in range(3)]
        await store.write(events)
        where = "SELECT tableoid::regclass::text FROM audit_events WHERE correlation_id = $1"
        assert {r[0] for r in await conn.fetch(where, "rr-late")} == {"audit_events_default"}

        assert await store.maintain() == 1
        assert {r[0] for r in await conn.fetch(where, "rr-late")} == {partition}
        await store.write([validate_event(event_body("rr-late"), datetime.now(UTC))])
        report, _ = await verify_stored(store, "rr-late")
        assert report.valid and report.events == 4
        with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="immutable"):
            await conn.execute(  # the moved rows are as immutable as any
                f'UPDATE "{partition}" SET severity = $1 WHERE event_id = $2',
                "x",
                events[0].event_id,
            )
    finally:
        await conn.close()
        await store.close()
    again = PostgresAuditStore(postgres_dsn)
    await again.open()  # and DataStorage starts
    await again.close()


async def test_a_running_datastorage_makes_the_months_ahead_itself(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the cron job, a DataStorage that ran past the months made at its start wrote
    every later month into the default partition: it now runs `maintain` itself."""
    from signalgate.datastorage.housekeeping import Housekeeper

    store = PostgresAuditStore(postgres_dsn, auto_migrate=True)
    await store.open()
    conn = await asyncpg.connect(postgres_dsn)
    keeper = Housekeeper(store, interval=0.05)
    try:
        ahead = await conn.fetchval(
            "SELECT max(c.relname) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'audit_events'::regclass AND c.relname <> 'audit_events_default'"
        )
        await conn.execute(f'DROP TABLE "{ahead}"')
        await keeper.start()
        for _ in range(100):
            if keeper.rounds:
                break
            await asyncio.sleep(0.05)
        assert await conn.fetchval("SELECT to_regclass($1)::text", ahead) == ahead
        await store.close()  # a round that cannot reach the database is logged, not fatal
        rounds = keeper.rounds
        for _ in range(100):
            if keeper.rounds > rounds:
                break
            await asyncio.sleep(0.05)
        assert keeper.rounds > rounds
        assert "monthly partitions ahead were not checked" in caplog.text
    finally:
        await keeper.stop()
        await conn.close()
        await store.close()


def _scanned(plan: dict[str, object], found: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """(node type, relation) of every node of an EXPLAIN (FORMAT JSON) plan that reads one."""
    if "Relation Name" in plan:
        found.add((str(plan["Node Type"]), str(plan["Relation Name"])))
    for child in plan.get("Plans", []):  # type: ignore[attr-defined]
        _scanned(child, found)
    return found


async def test_write_lookups_probe_indexes_before_the_tables_are_analysed(
    postgres_dsn: str,
) -> None:
    """A batch's look-ups (events already stored, chain heads) must not read whole tables:
    on a table no ANALYZE has seen yet, `= ANY(array)` was planned as a scan of every row,
    so each write cost more as the month's partition grew."""
    store = PostgresAuditStore(postgres_dsn, auto_migrate=True)
    await store.open()
    now = datetime.now(UTC)
    partition = f"audit_events_{now:%Y_%m}"
    conn = await asyncpg.connect(postgres_dsn)
    try:
        for table in (partition, "audit_chain_heads"):  # so no ANALYZE runs meanwhile
            await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        for batch in range(30):
            bodies = [event_body(f"rr-{batch}-{n % 50}") for n in range(100)]
            await store.write([validate_event(body, now) for body in bodies])
        plans = {
            "events": await conn.fetchval(
                f"EXPLAIN (FORMAT JSON) {_FIND_SQL}", [uuid.uuid4() for _ in range(100)]
            ),
            "heads": await conn.fetchval(
                f"EXPLAIN (FORMAT JSON) {_HEADS_SQL}", [f"rr-new-{n}" for n in range(50)]
            ),
        }
    finally:
        await conn.close()
        await store.close()
    for what, text in plans.items():
        scanned = _scanned(json.loads(text)[0]["Plan"], set())
        whole = {relation for node, relation in scanned if node == "Seq Scan"}
        assert partition not in whole and "audit_chain_heads" not in whole, (what, scanned)
        assert scanned, what


async def test_every_exact_filter_leads_a_postgres_index(postgres_dsn: str) -> None:
    """As test_ds_filter_indexes.py for SQLite: each query filter has its index."""
    store = PostgresAuditStore(postgres_dsn, auto_migrate=True)
    await store.open()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        leading = {
            row["attname"]
            for row in await conn.fetch(
                "SELECT a.attname FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indrelid"
                " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]"
                " WHERE c.relname = 'audit_events'"
            )
        }
    finally:
        await conn.close()
        await store.close()
    assert set(EXACT_FILTERS) <= leading, sorted(set(EXACT_FILTERS) - leading)


async def test_trigger_refuses_updates_and_tampering_is_found(postgres_dsn: str) -> None:
    store = PostgresAuditStore(postgres_dsn, auto_migrate=True)
    await store.open()
    now = datetime.now(UTC)
    events = [validate_event(event_body("rr-t"), now) for _ in range(5)]
    try:
        await store.write(events)
        conn = await asyncpg.connect(postgres_dsn)
        try:
            with pytest.raises(asyncpg.IntegrityConstraintViolationError):
                await conn.execute(
                    "UPDATE audit_events SET event_outcome = 'failure' WHERE event_id = $1",
                    events[2].event_id,
                )
            async with conn.transaction():
                await conn.execute("SET LOCAL session_replication_role = replica")
                await conn.execute(
                    "UPDATE audit_events SET event_outcome = 'failure' WHERE event_id = $1",
                    events[2].event_id,
                )
        finally:
            await conn.close()
        report = verify("rr-t", await store.chain("rr-t"))
    finally:
        await store.close()
    assert report.valid is False
    assert report.first_broken_event_id == events[2].event_id
    assert report.events == 5
    result = await asyncio.to_thread(
        cli, "verify-chain", "rr-t", env={"SIGNALGATE_STORE__DSN": postgres_dsn}
    )
    assert result.returncode == 1
    assert f'"first_broken_event_id": "{events[2].event_id}"' in result.stdout
    # an id nothing was written for is not "valid": a mistyped id must not pass a script
    result = await asyncio.to_thread(
        cli, "verify-chain", "rr-never-written", env={"SIGNALGATE_STORE__DSN": postgres_dsn}
    )
    assert result.returncode == 1
    assert '"events": 0' in result.stdout
    assert "no audit events stored for 'rr-never-written'" in result.stderr


async def test_sqlite_tampering_is_found(tmp_path: Path) -> None:
    import sqlite3

    store = SqliteAuditStore(tmp_path / "audit.db")
    await store.open()
    events = [validate_event(event_body("rr-s"), datetime.now(UTC)) for _ in range(3)]
    await store.write(events)
    await store.close()
    conn = sqlite3.connect(tmp_path / "audit.db")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "UPDATE audit_events SET event_data = '{}' WHERE event_id = ?", [events[1].event_id]
        )
    conn.execute("DROP TRIGGER audit_events_immutable")
    conn.execute(
        "UPDATE audit_events SET event_data = '{}' WHERE event_id = ?", [events[1].event_id]
    )
    conn.commit()
    conn.close()
    store = SqliteAuditStore(tmp_path / "audit.db")
    await store.open()
    try:
        report = verify("rr-s", await store.chain("rr-s"))
    finally:
        await store.close()
    assert report.first_broken_event_id == events[1].event_id


def test_serve_refuses_a_schema_that_is_behind_then_migrate_fixes_it(
    postgres_dsn: str, tmp_path: Path
) -> None:
    env = {"SIGNALGATE_STORE__DSN": postgres_dsn, "SIGNALGATE_DATADIR": str(tmp_path)}
    refused = cli("serve", "--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0", env=env)
    assert refused.returncode == 1
    lines = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "schema is at version 0" in lines[0]
    assert "signalgate-datastorage migrate" in lines[0]
    migrated = cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    every = [step.version for step in SCHEMA.migrations("postgres")]
    assert f"applied migrations: {every}" in migrated.stdout
    assert cli("migrate", env=env).stdout.strip() == "schema is up to date"
    maintained = cli("maintain", env=env)
    assert maintained.returncode == 0
    # the partitions opening the store made count (it said 0, having made all five)
    assert "created 5 partition(s)" in maintained.stdout
    assert "created 0 partition(s)" in cli("maintain", env=env).stdout


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    result = cli("serve", env={"SIGNALGATE_DLQ__BACKOFF": "soon"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "dlq.backoff" in result.stderr


async def test_replicas_starting_together_create_each_partition_once(postgres_dsn: str) -> None:
    """Several DataStorage processes starting at once on a migrated database (an outside
    check found one of two failing with "relation already exists"): every one opens."""
    first = PostgresAuditStore(postgres_dsn, auto_migrate=True)
    await first.open()  # migrated, partitions made
    conn = await asyncpg.connect(postgres_dsn)
    try:
        partitions = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'audit_events'::regclass AND c.relname <> 'audit_events_default'"
        )
        for row in partitions:  # as on the first day of a month nobody has written yet
            await conn.execute(f'DROP TABLE "{row["relname"]}"')
    finally:
        await conn.close()
    await first.close()
    stores = [PostgresAuditStore(postgres_dsn) for _ in range(6)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def test_an_event_date_changed_behind_its_back_breaks_the_chain(postgres_dsn: str) -> None:
    """`event_date` is derived, not hashed, but queries filter on it: moved to another day it
    hid the event from date-bounded queries while verify-chain said valid."""
    from signalgate.datastorage.store import verify_stored

    store = PostgresAuditStore(postgres_dsn, auto_migrate=True)
    await store.open()
    events = [validate_event(event_body("rr-dated"), datetime.now(UTC)) for _ in range(3)]
    try:
        await store.write(events)
        conn = await asyncpg.connect(postgres_dsn)
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL session_replication_role = replica")
                await conn.execute(  # into the default partition, as a moved row would be
                    "UPDATE audit_events SET event_date = DATE '2001-01-01' WHERE event_id = $1",
                    events[1].event_id,
                )
        finally:
            await conn.close()
        report, _ = await verify_stored(store, "rr-dated")
    finally:
        await store.close()
    assert report.valid is False
    assert report.first_broken_event_id == events[1].event_id


async def test_one_id_written_twice_at_once_is_stored_once(postgres_dsn: str) -> None:
    """Two writers of one event id with different content, at the same moment, from different
    chains (no chain lock between them): one is stored, the other is a conflict. Found from
    outside: on different days both were stored (two rows, one id), on the same day a 500."""
    from datetime import timedelta

    from signalgate.datastorage.errors import Conflict

    stores = [PostgresAuditStore(postgres_dsn, auto_migrate=True) for _ in range(2)]
    for store in stores:
        await store.open()
    now = datetime.now(UTC)
    try:
        for trial in range(15):
            event_id = str(uuid.uuid4())
            shift = timedelta(days=trial % 2)  # the same day, or two days: two partitions
            one = validate_event(event_body(f"rr-a-{trial}", event_id=event_id), now)
            other = validate_event(
                event_body(f"rr-b-{trial}", event_id=event_id, when=now - shift), now
            )
            outcomes = await asyncio.gather(
                stores[0].write([one]), stores[1].write([other]), return_exceptions=True
            )
            assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "WriteResult"], (
                trial,
                outcomes,
            )
            assert any(isinstance(o, Conflict) for o in outcomes)
        conn = await asyncpg.connect(postgres_dsn)
        try:
            twice = await conn.fetchval(
                "SELECT count(*) FROM (SELECT event_id FROM audit_events "
                "GROUP BY event_id HAVING count(*) > 1) AS d"
            )
        finally:
            await conn.close()
        assert twice == 0
    finally:
        for store in stores:
            await store.close()


def test_check_config_prints_what_follows_from_other_settings(tmp_path: Path) -> None:
    done = cli("check-config", env={"SIGNALGATE_DATADIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)
    assert resolved["store"]["dsn"] == f"sqlite:///{tmp_path / 'audit.db'}"
    assert resolved["dlq"]["path"] == str(tmp_path / "audit-dlq.jsonl")
    with_redis = cli(
        "check-config",
        env={"SIGNALGATE_DATADIR": str(tmp_path), "SIGNALGATE_DLQ__REDISURL": "redis://r:6379/0"},
    )
    assert json.loads(with_redis.stdout)["dlq"]["path"] is None  # the queue is Redis's


def test_check_config_masks_the_passwords_it_shows(tmp_path: Path) -> None:
    """Its output goes to terminals and tickets: where a server is, not what opens it."""
    done = cli(
        "check-config",
        env={
            "SIGNALGATE_DATADIR": str(tmp_path),
            "SIGNALGATE_STORE__DSN": "postgresql://ds@db/audit?password=QueryPass",
            "SIGNALGATE_DLQ__REDISURL": "redis://:RedisPass@redis:6379/0",
        },
    )
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)
    assert resolved["store"]["dsn"] == "postgresql://ds@db/audit?password=***"
    assert resolved["dlq"]["redisUrl"] == "redis://:***@redis:6379/0"
    assert "Pass" not in done.stdout
