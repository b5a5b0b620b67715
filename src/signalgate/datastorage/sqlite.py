"""The embedded SQLite audit store: same columns, same chain, no partitions.

sqlite3 is blocking, so every call runs in a child process that owns the connection
(`common.sql.sqlite_process`, as the Gateway's RR store does): the event loop never waits on
disk, SQLite's work runs beside it rather than in turns with it for the interpreter lock, and
SQLite's one-writer rule is met by construction. Writes use `BEGIN IMMEDIATE`, so another process
on the same file (a `replay-dlq` run) queues instead of forking a chain.
"""

# SQL text here is built only from column-name constants; values are always bound parameters.
# ruff: noqa: S608 - SQL is built from constant identifiers and `query.py`'s fixed filter columns; every value is a bound parameter

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from signalgate.common.directories import space_hint
from signalgate.common.sql.drivers import SQLITE_UNAVAILABLE
from signalgate.common.sql.migrations import sqlite_migrate
from signalgate.common.sql.sqlite_process import SqliteProcess
from signalgate.common.sql.sqlite_wal import connect_migrated, connect_wal
from signalgate.common.tasks import within
from signalgate.datastorage.chain import canonical, format_timestamp
from signalgate.datastorage.columns import (
    COLUMNS,
    SELECT_LIST,
    NotAnObject,
    column_values,
    row_to_event,
    rows_by_chain,
    stored_chains,
    stored_event_data,
)
from signalgate.datastorage.errors import StoreUnavailable
from signalgate.datastorage.events import AuditEvent
from signalgate.datastorage.migrations import SCHEMA
from signalgate.datastorage.paging import PAGE_BYTES, cut_by_bytes, was_cut
from signalgate.datastorage.store import (
    AuditQuery,
    ChainHead,
    ChainPage,
    PlannedRow,
    QueryPage,
    WriteResult,
    plan_write,
)

T = TypeVar("T")

_INSERT_SQL = (
    f"INSERT INTO audit_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
)


def path_from_dsn(dsn: str) -> Path:
    """`sqlite:///relative/x.db` and `sqlite:////absolute/x.db` → a path."""
    if not dsn.startswith("sqlite://"):
        raise ValueError(f"not a sqlite DSN: {dsn!r}")
    rest = dsn[len("sqlite://") :]
    return Path(rest[1:] if rest.startswith("/") else rest)


class SqliteAuditStore:
    """`AuditStore` on one SQLite file (the embedded default)."""

    def __init__(self, path: Path, *, timeout: float = 10.0) -> None:
        self._path = path
        self._timeout = timeout
        self.page_bytes = PAGE_BYTES
        self._process = SqliteProcess(_name(path), "audit-sqlite")
        # past the busy timeout (a lock another process holds), with room for a large batch
        self.call_deadline = 2 * timeout + 1

    async def _run(
        self, action: str, fn: Callable[..., T], *args: Any, unbounded: bool = False
    ) -> T:
        """`fn` in the store's process, as unavailable when it does not answer within
        `call_deadline`: a hung disk (or a stopped process) must not hold a write, or
        `/readyz`, for ever; the write is queued instead. The call itself cannot be taken
        back: if it answers later, its write is in the database, and the queued copy is
        taken as already stored when it is replayed. A migration (`unbounded`) takes what it
        takes."""
        deadline = None if unbounded else self.call_deadline
        try:
            return await within(self._process.run(fn, *args), deadline)
        except TimeoutError as exc:
            raise StoreUnavailable(
                f"SQLite {action} failed: no answer in {self.call_deadline:g}s"
            ) from exc
        except SQLITE_UNAVAILABLE as exc:
            raise StoreUnavailable(f"SQLite {action} failed: {exc}") from exc

    async def open(self) -> None:
        await self._open_with(_connect)

    async def _open_with(self, connect: Callable[..., sqlite3.Connection]) -> None:
        try:
            await self._process.open(connect, self._path, self._timeout)
        except sqlite3.Error as exc:
            raise StoreUnavailable(
                f"SQLite open of '{self._path}' failed: {exc}{space_hint(self._path.parent)}"
            ) from exc

    async def close(self) -> None:
        await self._process.close()

    async def ping(self) -> None:
        await self._run("ping", _ping)

    async def write(self, events: Sequence[AuditEvent]) -> WriteResult:
        return await self._run("write", _write, list(events))

    async def query(self, query: AuditQuery) -> QueryPage:
        return await self._run("query", _query, query, self.page_bytes)

    async def chain(self, correlation_id: str) -> list[dict[str, Any]]:
        return await self._run("chain read", _chain, correlation_id)

    async def chain_page(self, correlation_id: str, after_seq: int, limit: int) -> ChainPage:
        page = await self._run(
            "chain read", _chain_page, correlation_id, after_seq, limit, self.page_bytes
        )
        return ChainPage([stored_event_data(row) for row in page.rows], page.last_seq, page.cut)

    async def head(self, correlation_id: str) -> ChainHead | None:
        heads = await self._run("chain head read", _heads, [correlation_id])
        return heads.get(correlation_id)

    async def chains(self, correlation_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        chains = await self._run("chain read", _chains, list(correlation_ids), self.page_bytes)
        return stored_chains(chains)

    async def heads(self, correlation_ids: Sequence[str]) -> dict[str, ChainHead]:
        return await self._run("chain head read", _heads, list(correlation_ids))

    async def correlation_ids(self) -> list[str]:
        return await self._run("correlation ids read", _correlation_ids)

    async def migrate(self) -> list[int]:
        """Apply pending migrations; the versions applied. On a store not opened (the
        `migrate` command) the file is opened for this alone, without `open`'s own
        migration, so the versions it applies are the ones reported."""
        if self._process.is_open:
            return await self._run("migrate", _migrate, _name(self._path), unbounded=True)
        await self._open_with(_connect_unmigrated)
        try:
            return await self._run("migrate", _migrate, _name(self._path), unbounded=True)
        finally:
            await self._process.close()

    async def maintain(self) -> int:
        return 0  # no partitions to prepare


# --- the calls, run in the store's process (`SqliteProcess`): module-level, plain arguments


def _name(path: Path) -> str:
    return f"audit database '{path}'"


def _connect(path: Path, timeout: float) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    return connect_migrated(path, timeout, SCHEMA, _name(path))


def _connect_unmigrated(path: Path, timeout: float) -> sqlite3.Connection:
    """`_connect` without the migration: for `migrate` itself, which reports what it applies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return connect_wal(path, timeout)


def _ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


def _migrate(conn: sqlite3.Connection, where: str) -> list[int]:
    return sqlite_migrate(conn, SCHEMA, where)


def _chain(conn: sqlite3.Connection, correlation_id: str) -> list[dict[str, Any]]:
    sql = f"SELECT {SELECT_LIST} FROM audit_events WHERE correlation_id = ? ORDER BY seq"
    return [row_to_event(row) for row in conn.execute(sql, [correlation_id]).fetchall()]


# the byte length of a row's event_data, for `paging.cut_by_bytes`
_SIZE = "length(CAST(page.event_data AS BLOB))"
# one page of a chain by keyset (index `audit_events_correlation_idx`)
_CHAIN_PAGE_SQL = cut_by_bytes(
    f"SELECT {SELECT_LIST}, seq FROM audit_events WHERE correlation_id = ? AND seq > ? "
    "ORDER BY seq LIMIT ?",
    "seq",
    _SIZE,
    "?",
)
# the chains of the ids in a JSON array, in its order, each in write order
_CHAINS_SQL = cut_by_bytes(
    "SELECT e.*, wanted.key AS n FROM json_each(?) AS wanted "
    "CROSS JOIN audit_events AS e ON e.correlation_id = wanted.value",
    "n, seq",
    _SIZE,
    "?",
)


def _chain_page(
    conn: sqlite3.Connection, correlation_id: str, after_seq: int, limit: int, budget: int
) -> ChainPage:
    rows = conn.execute(_CHAIN_PAGE_SQL, [correlation_id, after_seq, limit, budget]).fetchall()
    last = int(rows[-1]["seq"]) if rows else after_seq
    return ChainPage(
        [row_to_event(row, event_data_text=True) for row in rows],
        last,
        cut=was_cut(rows, limit, budget),
    )


def _chains(
    conn: sqlite3.Connection, wanted: list[str], budget: int
) -> dict[str, list[dict[str, Any]]]:
    rows = conn.execute(_CHAINS_SQL, [json.dumps(wanted), budget]).fetchall()
    return rows_by_chain(rows, event_data_text=True)  # (wrapped by the parent: see chains)


def _correlation_ids(conn: sqlite3.Connection) -> list[str]:
    sql = (
        "SELECT correlation_id FROM audit_chain_heads UNION "
        "SELECT correlation_id FROM audit_events ORDER BY 1"
    )
    return [str(row[0]) for row in conn.execute(sql).fetchall()]


def _write(conn: sqlite3.Connection, events: Sequence[AuditEvent]) -> WriteResult:
    ids = [event.event_id for event in events]
    wanted = ids + [p for event in events if (p := event.parent_event_id) is not None]
    correlation_ids = sorted({event.correlation_id for event in events})
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _fetch_in(conn, f"SELECT {SELECT_LIST} FROM audit_events", "event_id", wanted)
        id_set = set(ids)
        existing = {
            row["event_id"]: canonical(row_to_event(row))
            for row in found
            if row["event_id"] in id_set
        }
        stored = {row["event_id"]: row["correlation_id"] for row in found}
        heads = _heads(conn, correlation_ids)
        rows, already, new_heads = plan_write(events, existing, stored, heads)
        conn.executemany(_INSERT_SQL, [_values(planned) for planned in rows])
        conn.executemany(
            "INSERT INTO audit_chain_heads (correlation_id, event_count, event_hash) "
            "VALUES (?, ?, ?)",
            [(cid, head.count, head.event_hash) for cid, head in new_heads.items()],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise
    return WriteResult(stored=len(rows), existing=already)


def _heads(conn: sqlite3.Connection, correlation_ids: Sequence[str]) -> dict[str, ChainHead]:
    """The recorded head of each chain (its row with the highest count)."""
    heads: dict[str, ChainHead] = {}
    for correlation_id in correlation_ids:
        last = conn.execute(
            "SELECT event_count, event_hash FROM audit_chain_heads WHERE correlation_id = ? "
            "ORDER BY event_count DESC LIMIT 1",
            [correlation_id],
        ).fetchone()
        if last is not None:
            heads[correlation_id] = ChainHead(int(last[0]), str(last[1]))
    return heads


def _fetch_in(
    conn: sqlite3.Connection, select: str, column: str, values: Sequence[str]
) -> list[sqlite3.Row]:
    """`WHERE column IN (...)` in chunks under SQLite's parameter limit."""
    found: list[sqlite3.Row] = []
    for start in range(0, len(values), 500):
        chunk = list(values[start : start + 500])
        marks = ", ".join("?" for _ in chunk)
        sql = f"{select} WHERE {column} IN ({marks})"
        found.extend(conn.execute(sql, chunk).fetchall())
    return found


def _values(planned: PlannedRow) -> tuple[Any, ...]:
    return column_values(planned, {"event_date": planned.event.event_date.isoformat()})


# whether a row's stored event_data is a JSON object (see `columns.NotAnObject`); CASE keeps
# json_type from reading a text that is no JSON
_AN_OBJECT = "CASE WHEN json_valid(event_data) THEN json_type(event_data) = 'object' ELSE 0 END"


def _query(conn: sqlite3.Connection, query: AuditQuery, budget: int) -> QueryPage:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in query.exact_filters():
        clauses.append(f"{column} = ?")
        params.append(value)
    if query.since is not None:
        clauses.append("event_timestamp >= ?")
        params.append(format_timestamp(query.since))
    if query.until is not None:
        clauses.append("event_timestamp <= ?")
        params.append(format_timestamp(query.until))
    if query.detail_key is not None and query.detail_value is not None:
        path = f'$."{query.detail_key}"'  # the key is [A-Za-z0-9_]+, checked by the API
        clauses.append("json_type(event_data, ?) = 'text' AND json_extract(event_data, ?) = ?")
        params.extend([path, path, query.detail_value])
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    order = "event_timestamp DESC, seq DESC"
    listing = cut_by_bytes(
        f"SELECT {SELECT_LIST}, seq, {_AN_OBJECT} AS an_object FROM audit_events{where} "
        f"ORDER BY {order} LIMIT ? OFFSET ?",
        order,
        _SIZE,
        "?",
    )
    rows = conn.execute(listing, [*params, query.limit, query.offset, budget]).fetchall()
    total = conn.execute(f"SELECT count(*) FROM audit_events{where}", params).fetchone()[0]
    events = []
    for row in rows:
        event = row_to_event(row, event_data_text=True)
        if not row["an_object"]:  # embedded as it is, it would make the page no JSON
            event["event_data"] = NotAnObject(str(event.get("event_data", "")))
        events.append(event)
    return QueryPage(events, int(total))
