"""Both store families record schema versions one way (a version table, on SQLite and
PostgreSQL alike), adopt the files made before that, and refuse a database from a newer
signalgate on every backend."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from signalgate.common.sql.migrations import sqlite_statements
from signalgate.datastorage.errors import SchemaAhead
from signalgate.datastorage.events import validate_event
from signalgate.datastorage.migrations import SCHEMA as AUDIT_SCHEMA
from signalgate.datastorage.postgres import PostgresAuditStore as AuditPostgres
from signalgate.datastorage.sqlite import SqliteAuditStore as AuditSqlite
from signalgate.remediation.schema import SCHEMA as RR_SCHEMA
from signalgate.remediation.sqlite import SqliteRemediationStore as RRSqlite
from signalgate.remediation.store import IncompatibleSchema, ListQuery
from tests.integration.remediation.rrcases import later, make_rr
from tests.support.event_bodies import event_body


def recorded(path: Path, table: str) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        found = conn.execute(f"SELECT version, name FROM {table} ORDER BY version").fetchall()
    conn.close()
    return [(int(v), str(n)) for v, n in found]


async def test_an_rr_file_versioned_by_user_version_opens_and_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "rr.db"
    store = RRSqlite(path)
    await store.open()
    try:
        created = await store.record_firing(make_rr(), later(0))
    finally:
        await store.close()
    # Make it the file an earlier signalgate left: the version in the pragma, no table.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"DROP TABLE {RR_SCHEMA.table}")
    conn.execute(f"PRAGMA user_version = {RR_SCHEMA.latest('sqlite')}")
    conn.close()
    again = RRSqlite(path)
    await again.open()
    try:
        assert [rr.name for rr in (await again.list(ListQuery())).items] == [created.rr.name]
        assert (await again.record_firing(make_rr(), later(1))).rr.name == created.rr.name
    finally:
        await again.close()
    steps = RR_SCHEMA.migrations("sqlite")
    assert recorded(path, RR_SCHEMA.table) == [(s.version, s.name) for s in steps]


async def test_an_rr_file_at_user_version_1_is_adopted_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "rr.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in sqlite_statements(RR_SCHEMA.migrations("sqlite")[0].sql):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    store = RRSqlite(path)
    await store.open()
    await store.close()
    assert [v for v, _ in recorded(path, RR_SCHEMA.table)] == list(
        range(1, RR_SCHEMA.latest("sqlite") + 1)
    )


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


async def test_an_rr_file_keeps_its_version_in_the_pragma_too(tmp_path: Path) -> None:
    """Releases before the version table read only `PRAGMA user_version`, and refuse a file
    newer than they know: a file this version made, or migrated, says its version there too
    (left at 0 or 1, a downgrade opened a schema-2 file and wrote rows in its old layout)."""
    latest = RR_SCHEMA.latest("sqlite")
    fresh = tmp_path / "fresh.db"
    store = RRSqlite(fresh)
    await store.open()
    await store.close()
    assert user_version(fresh) == latest
    # a file an earlier version of this runner migrated: the table at the latest version,
    # the pragma behind; the next open puts the pragma right and changes nothing else
    conn = sqlite3.connect(fresh, isolation_level=None)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    before = recorded(fresh, RR_SCHEMA.table)
    store = RRSqlite(fresh)
    await store.open()
    await store.close()
    assert user_version(fresh) == latest
    assert recorded(fresh, RR_SCHEMA.table) == before


async def test_an_rr_file_with_a_newer_version_row_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "rr.db"
    store = RRSqlite(path)
    await store.open()
    await store.close()
    known = RR_SCHEMA.latest("sqlite")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"INSERT INTO {RR_SCHEMA.table} (version, name) VALUES (?, 'x.sql')", [known + 1])
    conn.close()
    with pytest.raises(IncompatibleSchema, match=rf"version {known + 1}.* up to {known}"):
        await RRSqlite(path).open()
    assert recorded(path, RR_SCHEMA.table)[-1][0] == known + 1


async def test_an_existing_audit_file_opens_and_keeps_its_events(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    # As an earlier DataStorage made it: its own migration runner, names without the number.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        f"CREATE TABLE {AUDIT_SCHEMA.table} (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
    )
    for step in AUDIT_SCHEMA.migrations("sqlite"):
        conn.executescript(
            f"BEGIN;\n{step.sql}\nINSERT INTO {AUDIT_SCHEMA.table} (version, name) "
            f"VALUES ({step.version}, '{step.name[5:-4]}');\nCOMMIT;"
        )
    conn.close()
    store = AuditSqlite(path)
    await store.open()
    try:
        event = validate_event(event_body("rr-old"), datetime.now(UTC))
        assert (await store.write([event])).stored == 1
        assert [e["event_id"] for e in await store.chain("rr-old")] == [event.event_id]
        assert await store.migrate() == []
    finally:
        await store.close()


async def test_an_audit_file_from_a_newer_signalgate_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    store = AuditSqlite(path)
    await store.open()
    await store.close()
    known = AUDIT_SCHEMA.latest("sqlite")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"INSERT INTO {AUDIT_SCHEMA.table} (version, name) VALUES (?, 'x')", [known + 3])
    conn.close()
    with pytest.raises(SchemaAhead, match=rf"version {known + 3}.* up to {known}"):
        await AuditSqlite(path).open()


@pytest.mark.parametrize("auto_migrate", [True, False])
async def test_an_audit_database_from_a_newer_signalgate_is_refused_on_postgres(
    postgres_dsn: str, auto_migrate: bool
) -> None:
    store = AuditPostgres(postgres_dsn, auto_migrate=True, pool_size=2)
    await store.open()
    await store.close()
    known = AUDIT_SCHEMA.latest("postgres")
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(
            f"INSERT INTO {AUDIT_SCHEMA.table} (version, name) VALUES ($1, 'x.sql')",
            known + 5,
        )
    finally:
        await conn.close()
    newer = AuditPostgres(postgres_dsn, auto_migrate=auto_migrate, pool_size=2)
    with pytest.raises(SchemaAhead, match=rf"version {known + 5}.* up to {known}"):
        await newer.open()
    await newer.close()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval(f"SELECT max(version) FROM {AUDIT_SCHEMA.table}") == known + 5
    finally:
        await conn.close()
