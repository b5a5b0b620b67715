"""Versioned schema migrations and the schema-version check, for SQLite and PostgreSQL.

A store family ships `migrations/<backend>/NNNN_<what>.sql` as package data; a file's number
is the schema version it brings the database to, and the highest number is the version the
code needs. The SQLite and PostgreSQL files of one family are two dialects of one schema (same
numbers, same meaning): they stay separate files on purpose.

Applied versions are recorded one way on both backends: a row per version (version, file
name, applied_at) in the family's own table (`Schema.table`). The RR store on SQLite used to
keep its version in `PRAGMA user_version`; such a file is adopted on its first open (its
versions 1..user_version are written to the table in the same transaction as any remaining
step; the pragma is not read again once the table exists). The pragma is still kept at the
schema's version: those releases read only the pragma, and refuse a file newer than they
know — with the pragma left behind, a downgrade wrote rows in its old layout.

On open a database newer than the code is refused, naming both versions, and left unchanged
(`Schema.newer` makes the family's own error). A database that is behind is migrated here;
DataStorage on PostgreSQL without `store.autoMigrate` refuses instead (its own rule).
"""

# ruff: noqa: S608 - SQL is built from the constant table name; every value is bound

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

log = logging.getLogger(__name__)

Backend = Literal["postgres", "sqlite"]

_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # the file name, as recorded in the version table
    sql: str


@dataclass(frozen=True)
class Schema:
    """One store family's schema: where its files live and where its versions are recorded."""

    package: str  # the package holding `migrations/<backend>/`
    table: str  # the version table
    what: str  # how messages call it, e.g. "RR store schema"
    newer: Callable[[str], Exception]  # the family's error for a database from a newer release
    adopt_user_version: bool = False  # an SQLite file may still hold its version in the pragma

    def migrations(self, backend: Backend) -> list[Migration]:
        """The steps of `backend`, in version order."""
        return list(_load(self.package, backend))

    def latest(self, backend: Backend) -> int:
        steps = _load(self.package, backend)
        return steps[-1].version if steps else 0

    def refuse_newer(self, where: str, current: int, backend: Backend) -> None:
        known = self.latest(backend)
        if current > known:
            raise self.newer(
                f"{where} has {self.what} version {current}, but this signalgate knows "
                f"versions up to {known}: upgrade signalgate (or point store.dsn at another "
                "database); the database was left unchanged"
            )


@cache
def _load(package: str, backend: Backend) -> tuple[Migration, ...]:
    folder = resources.files(package) / "migrations" / backend
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{package} {backend} migrations are not numbered 1..n: {versions}")
    return tuple(found)


# --- SQLite (blocking: call from the store's own process; autocommit connection) ----------


def sqlite_version(conn: sqlite3.Connection, schema: Schema) -> int:
    """The database's recorded schema version (0 for an empty database)."""
    if _sqlite_has_table(conn, schema.table):
        value = conn.execute(f"SELECT max(version) FROM {schema.table}").fetchone()[0]
        return int(value or 0)
    if schema.adopt_user_version:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    return 0


def sqlite_migrate(conn: sqlite3.Connection, schema: Schema, where: str) -> list[int]:
    """Refuse a newer schema, else apply the missing steps in one `BEGIN IMMEDIATE`
    transaction (several processes opening one file migrate it once); the applied versions."""
    steps = schema.migrations("sqlite")
    current = sqlite_version(conn, schema)
    schema.refuse_newer(where, current, "sqlite")
    if (
        current == len(steps)
        and _sqlite_has_table(conn, schema.table)
        and not _pragma_behind(conn, schema, current)
    ):
        return []
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have migrated while we waited for the write lock.
        current = sqlite_version(conn, schema)
        schema.refuse_newer(where, current, "sqlite")
        if not _sqlite_has_table(conn, schema.table):
            conn.execute(
                f"CREATE TABLE {schema.table} (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
            )
            for step in steps[:current]:  # adopted from PRAGMA user_version
                _sqlite_record(conn, schema, step)
        for step in steps[current:]:
            for statement in sqlite_statements(step.sql):
                conn.execute(statement)
            _sqlite_record(conn, schema, step)
        if schema.adopt_user_version:
            conn.execute(f"PRAGMA user_version = {len(steps):d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    applied = [step.version for step in steps[current:]]
    for version in applied:
        log.info("applied migration", extra={"schema": schema.table, "version": version})
    return applied


def _pragma_behind(conn: sqlite3.Connection, schema: Schema, version: int) -> bool:
    """Whether a family that once kept its version in the pragma has it below `version`."""
    if not schema.adopt_user_version:
        return False
    return int(conn.execute("PRAGMA user_version").fetchone()[0]) < version


def _sqlite_has_table(conn: sqlite3.Connection, table: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
    ).fetchone()
    return found is not None


def _sqlite_record(conn: sqlite3.Connection, schema: Schema, step: Migration) -> None:
    conn.execute(
        f"INSERT INTO {schema.table} (version, name) VALUES (?, ?)", [step.version, step.name]
    )


def sqlite_statements(script: str) -> list[str]:
    """Split a migration script into statements (SQLite's own notion of a complete one, so a
    trigger's `BEGIN … END;` stays whole)."""
    out: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                out.append(buffer.strip())
            buffer = ""
    leftover = [ln for ln in buffer.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    if leftover:
        raise RuntimeError(f"migration script ends inside a statement: {leftover[0]!r}")
    return out


# --- PostgreSQL (asyncpg connection) -------------------------------------------------------


async def postgres_version(conn: Any, schema: Schema) -> int:
    """The database's recorded schema version (0 when nothing was ever applied)."""
    if await conn.fetchval("SELECT to_regclass($1)", schema.table) is None:
        return 0
    value = await conn.fetchval(f"SELECT max(version) FROM {schema.table}")
    return int(value or 0)


async def postgres_migrate(
    conn: Any,
    schema: Schema,
    where: str,
    lock: tuple[int, ...],
    waiting: Callable[[str], None] | None = None,
) -> list[int]:
    """Refuse a newer schema, else apply the missing steps, one transaction each, holding
    the advisory lock `lock` (one or two integers: replicas starting together migrate once;
    the others wait, then find nothing to do); the applied versions. When another process
    holds the lock, that is logged and told to `waiting` (why the caller is not open yet)
    before the wait, which has no end of its own: a store waiting for it said nothing, and
    its readiness named an error of an earlier attempt instead."""
    steps = schema.migrations("postgres")
    key = ", ".join(f"${i + 1}" for i in range(len(lock)))
    if not await conn.fetchval(f"SELECT pg_try_advisory_lock({key})", *lock):
        why = (
            f"{where}: waiting for the schema migration lock, which another process holds "
            "(a replica or a migrate job migrating the schema)"
        )
        log.warning("waiting for the migration lock", extra={"schema": schema.table, "why": why})
        if waiting is not None:
            waiting(why)
        await conn.execute(f"SELECT pg_advisory_lock({key})", *lock)
    applied: list[int] = []
    try:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema.table} ("
            "version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await postgres_version(conn, schema)
        schema.refuse_newer(where, current, "postgres")
        for step in steps[current:]:
            async with conn.transaction():
                await conn.execute(step.sql)
                await conn.execute(
                    f"INSERT INTO {schema.table} (version, name) VALUES ($1, $2)",
                    step.version,
                    step.name,
                )
            log.info("applied migration", extra={"schema": schema.table, "version": step.version})
            applied.append(step.version)
    finally:
        if not conn.is_closed():
            await conn.execute(f"SELECT pg_advisory_unlock({key})", *lock)
    return applied
