"""The embedded RR store: one SQLite file.

One connection, owned by a child process (`common.sql.sqlite_process`): every store call is
one module-level function run there, so the event loop never blocks on disk or on a lock,
and SQLite's work runs beside the event loop instead of taking turns with it for the
interpreter lock.
WAL mode lets readers run beside a writer; every write is one `BEGIN IMMEDIATE`
transaction, which takes the file's write lock up front, so several processes sharing one
file decide deduplication race-free (SQLite serialises them, and each decision reads and
writes under the same lock).

Errors: `sqlite3.OperationalError` (locked past the busy timeout, disk full, unreadable or
unwritable file) → `StoreUnavailable`; a partial-unique-index violation on a status change →
`Conflict`.
"""

# ruff: noqa: S608 - SQL is built from constant identifiers; every value is a bound parameter

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from signalgate.common.directories import space_hint
from signalgate.common.sql.drivers import SQLITE_UNAVAILABLE
from signalgate.common.sql.sqlite_process import SqliteProcess
from signalgate.common.sql.sqlite_wal import connect_migrated
from signalgate.remediation import rows
from signalgate.remediation.model import (
    RemediationRequest,
    StatusPatch,
    choose_suppressor,
    format_time,
    parse_time,
)
from signalgate.remediation.schema import SCHEMA
from signalgate.remediation.store import (
    Conflict,
    Decision,
    FiringResult,
    ListQuery,
    NotFound,
    Page,
    RemediationStore,
    StoreUnavailable,
    encode_cursor,
)

T = TypeVar("T")

_T = rows.TABLE
_COLS = rows.SELECT_COLUMNS
# an inserted RR is its candidate, as written: nothing to read back
_INSERT = f"INSERT INTO {_T} ({_COLS}) VALUES ({', '.join('?' * len(rows.COLUMNS))})"
_BUMP = rows.seen_again_sets(":now")
_BUMP_ACTIVE = f"UPDATE {_T} SET {_BUMP} WHERE fingerprint = :key AND active RETURNING {_COLS}"
_BUMP_NAMED = f"UPDATE {_T} SET {_BUMP} WHERE name = :key RETURNING {_COLS}"
_BUMP_ACTIVE_NAMED = (
    f"UPDATE {_T} SET {rows.seen_again_sets(':now', count=':count')} "
    f"WHERE name = :key AND active RETURNING {_COLS}"
)
_RESOLVE = (
    f"UPDATE {_T} SET {rows.resolved_sets(':now')} WHERE fingerprint = :key AND active "
    f"RETURNING {_COLS}"
)
_GET = f"SELECT {_COLS} FROM {_T} WHERE name = ?"
_SUPPRESSORS = rows.suppressor_sql(lambda _: "?")


def _ph(_: int) -> str:
    return "?"


def _decode_time(value: Any) -> datetime:
    return parse_time(str(value))


def _rr(row: sqlite3.Row) -> RemediationRequest:
    return rows.row_to_rr(row, _decode_time)


def _write(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(conn, *args)` in one `BEGIN IMMEDIATE` transaction (the write lock taken up
    front)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


# --- the calls, run in the store's process (`SqliteProcess`): module-level, plain arguments


def _decide(
    conn: sqlite3.Connection, candidate: RemediationRequest, now: datetime
) -> RemediationRequest | None:
    """The deduplication decision for one firing signal, inside a write transaction: the RR
    the signal was counted on, or None when `candidate` was inserted (the caller has it: it
    is not sent back)."""
    stamp = format_time(now)
    fingerprint = candidate.fingerprint
    found = conn.execute(_BUMP_ACTIVE, {"now": stamp, "key": fingerprint}).fetchall()
    if found:
        return _rr(found[0])
    params = rows.suppressor_params(fingerprint, now, format_time)
    suppressing = choose_suppressor(
        (_rr(r) for r in conn.execute(_SUPPRESSORS, params).fetchall()), now
    )
    if suppressing is not None:
        bumped = conn.execute(_BUMP_NAMED, {"now": stamp, "key": suppressing.name}).fetchall()
        return _rr(bumped[0])
    conn.execute(_INSERT, rows.rr_to_row(candidate, format_time))
    return None


def _decide_all(
    conn: sqlite3.Connection, signals: Sequence[tuple[RemediationRequest, datetime]]
) -> list[RemediationRequest | None]:
    return [_decide(conn, candidate, now) for candidate, now in signals]


def _decided(candidate: RemediationRequest, counted_on: RemediationRequest | None) -> FiringResult:
    """`_decide`'s answer as the caller's result."""
    if counted_on is None:
        return FiringResult(Decision.CREATED, candidate)
    return FiringResult(Decision.DUPLICATE, counted_on)


def _one(conn: sqlite3.Connection, sql: str, params: Any) -> RemediationRequest | None:
    found = conn.execute(sql, params).fetchall()
    return _rr(found[0]) if found else None


def _select(conn: sqlite3.Connection, sql: str, params: Any) -> list[RemediationRequest]:
    return [_rr(r) for r in conn.execute(sql, params).fetchall()]


def _ping(conn: sqlite3.Connection) -> None:
    # reads the file (not just the library): a lost or unreadable file shows here
    conn.execute(f"SELECT 1 FROM {_T} LIMIT 1").fetchall()


def _update(
    conn: sqlite3.Connection, name: str, changes: dict[str, Any], phase: str | None
) -> RemediationRequest:
    if changes:
        sets = ", ".join(f"{column} = ?" for column in changes)
        sql = f"UPDATE {_T} SET {sets} WHERE name = ? RETURNING {_COLS}"
        try:
            found = conn.execute(sql, (*changes.values(), name)).fetchall()
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"RemediationRequest {name!r}: phase {phase!r} would make "
                "it active while another RR for its fingerprint is active"
            ) from exc
    else:
        found = conn.execute(_GET, (name,)).fetchall()
    if not found:
        raise NotFound(f"RemediationRequest {name!r} not found")
    return _rr(found[0])


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """The store's connection, in WAL mode and migrated."""
    where = f"SQLite store {str(path)!r}"
    if not path.parent.is_dir():
        raise StoreUnavailable(
            f"{where}: directory {str(path.parent)!r} does "
            "not exist (create it, or set store.dsn to a file in an existing directory)"
        )
    try:
        return connect_migrated(path, busy_timeout, SCHEMA, where)
    except sqlite3.DatabaseError as exc:
        raise StoreUnavailable(f"{where}: cannot open: {exc}{space_hint(path.parent)}") from exc


class SqliteRemediationStore(RemediationStore):
    """`RemediationStore` on one SQLite file (the embedded default)."""

    def __init__(self, path: Path, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._process = SqliteProcess(repr(self), "sqlite-store")

    def __repr__(self) -> str:
        return f"SqliteRemediationStore({str(self.path)!r})"

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        await self._run_open()

    async def close(self) -> None:
        await self._process.close()

    async def ping(self) -> None:
        await self._run(_ping)

    async def _run_open(self) -> None:
        try:
            await self._process.open(_connect, self.path, self.busy_timeout)
        except SQLITE_UNAVAILABLE as exc:
            raise StoreUnavailable(f"SQLite store {str(self.path)!r}: {exc}") from exc

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await self._process.run(fn, *args)
        except SQLITE_UNAVAILABLE as exc:
            raise StoreUnavailable(f"SQLite store {str(self.path)!r}: {exc}") from exc

    # --- the store API --------------------------------------------------------------------

    async def record_firing(self, candidate: RemediationRequest, now: datetime) -> FiringResult:
        return _decided(candidate, await self._run(_write, _decide, candidate, now))

    async def record_firings(
        self, signals: Sequence[tuple[RemediationRequest, datetime]]
    ) -> list[FiringResult | None]:
        """Every signal decided by the full rules, in order, in one transaction (one
        commit for the whole batch)."""
        signals = list(signals)
        counted_on = await self._run(_write, _decide_all, signals)
        return [_decided(c, rr) for (c, _), rr in zip(signals, counted_on, strict=True)]

    async def bump_active(self, name: str, count: int, now: datetime) -> RemediationRequest | None:
        params = {"now": format_time(now), "key": name, "count": count}
        return await self._run(_write, _one, _BUMP_ACTIVE_NAMED, params)

    async def record_resolved(self, fingerprint: str, now: datetime) -> RemediationRequest | None:
        params = {"now": format_time(now), "key": fingerprint}
        return await self._run(_write, _one, _RESOLVE, params)

    async def get(self, name: str) -> RemediationRequest | None:
        return await self._run(_one, _GET, (name,))

    async def list(self, query: ListQuery) -> Page:
        plan = rows.list_sql(query, _ph, format_time)  # InvalidCursor before any I/O
        found = await self._run(_select, plan.sql, plan.params)
        items, more = rows.page_of(found, plan.limit)
        last = items[-1] if more else None
        return Page(items, encode_cursor(last.created_at, last.name) if last else None)

    async def update_status(self, name: str, patch: StatusPatch) -> RemediationRequest:
        changes = rows.patch_assignments(patch, format_time)
        return await self._run(_write, _update, name, changes, patch.overall_phase)
