"""The embedded RR store: one SQLite file.

One connection, owned by one worker thread (`common.sql.sqlite_thread`): every store call
is one function run in that thread, so the event loop never blocks on disk or on a lock.
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
from signalgate.common.sql.migrations import sqlite_migrate
from signalgate.common.sql.sqlite_thread import SqliteThread
from signalgate.common.sql.sqlite_wal import use_wal
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


def _decider(
    candidate: RemediationRequest, now: datetime
) -> Callable[[sqlite3.Connection], FiringResult]:
    """The deduplication decision for one firing signal, run inside a write transaction."""
    stamp = format_time(now)
    fingerprint = candidate.fingerprint

    def decide(conn: sqlite3.Connection) -> FiringResult:
        found = conn.execute(_BUMP_ACTIVE, {"now": stamp, "key": fingerprint}).fetchall()
        if found:
            return FiringResult(Decision.DUPLICATE, _rr(found[0]))
        params = rows.suppressor_params(fingerprint, now, format_time)
        suppressing = choose_suppressor(
            (_rr(r) for r in conn.execute(_SUPPRESSORS, params).fetchall()), now
        )
        if suppressing is not None:
            bumped = conn.execute(_BUMP_NAMED, {"now": stamp, "key": suppressing.name}).fetchall()
            return FiringResult(Decision.DUPLICATE, _rr(bumped[0]))
        conn.execute(_INSERT, rows.rr_to_row(candidate, format_time))
        return FiringResult(Decision.CREATED, candidate)

    return decide


class SqliteRemediationStore(RemediationStore):
    """`RemediationStore` on one SQLite file (the embedded default)."""

    def __init__(self, path: Path, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._thread = SqliteThread(repr(self), "sqlite-store")

    def __repr__(self) -> str:
        return f"SqliteRemediationStore({str(self.path)!r})"

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        await self._thread.open(self._connect, self._setup)

    async def close(self) -> None:
        await self._thread.close()

    async def ping(self) -> None:
        # Reads the file (not just the library): a lost or unreadable file shows here.
        await self._run(lambda conn: conn.execute(f"SELECT 1 FROM {_T} LIMIT 1").fetchall())

    def _connect(self) -> sqlite3.Connection:
        if not self.path.parent.is_dir():
            raise StoreUnavailable(
                f"SQLite store {str(self.path)!r}: directory {str(self.path.parent)!r} does "
                "not exist (create it, or set store.dsn to a file in an existing directory)"
            )
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreUnavailable(
                f"SQLite store {str(self.path)!r}: cannot open: {exc}{space_hint(self.path.parent)}"
            ) from exc
        conn.row_factory = sqlite3.Row
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        try:
            use_wal(conn, self.busy_timeout)
            sqlite_migrate(conn, SCHEMA, f"SQLite store {str(self.path)!r}")
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailable(
                f"SQLite store {str(self.path)!r}: cannot open: {exc}{space_hint(self.path.parent)}"
            ) from exc

    # --- running in the worker thread -----------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self._thread.run(fn)
        except SQLITE_UNAVAILABLE as exc:
            raise StoreUnavailable(f"SQLite store {str(self.path)!r}: {exc}") from exc

    def _write(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one `BEGIN IMMEDIATE` transaction (the write lock taken up front)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    # --- the store API --------------------------------------------------------------------

    async def record_firing(self, candidate: RemediationRequest, now: datetime) -> FiringResult:
        return await self._run(lambda conn: self._write(conn, _decider(candidate, now)))

    async def record_firings(
        self, signals: Sequence[tuple[RemediationRequest, datetime]]
    ) -> list[FiringResult | None]:
        """Every signal decided by the full rules, in order, in one transaction (one
        commit for the whole batch)."""
        deciders = [_decider(candidate, now) for candidate, now in signals]

        def decide_all(conn: sqlite3.Connection) -> list[FiringResult | None]:
            return [decide(conn) for decide in deciders]

        return await self._run(lambda conn: self._write(conn, decide_all))

    async def bump_active(self, name: str, count: int, now: datetime) -> RemediationRequest | None:
        params = {"now": format_time(now), "key": name, "count": count}

        def bump(conn: sqlite3.Connection) -> RemediationRequest | None:
            found = conn.execute(_BUMP_ACTIVE_NAMED, params).fetchall()
            return _rr(found[0]) if found else None

        return await self._run(lambda conn: self._write(conn, bump))

    async def record_resolved(self, fingerprint: str, now: datetime) -> RemediationRequest | None:
        def resolve(conn: sqlite3.Connection) -> RemediationRequest | None:
            found = conn.execute(_RESOLVE, {"now": format_time(now), "key": fingerprint}).fetchall()
            return _rr(found[0]) if found else None

        return await self._run(lambda conn: self._write(conn, resolve))

    async def get(self, name: str) -> RemediationRequest | None:
        def get(conn: sqlite3.Connection) -> RemediationRequest | None:
            found = conn.execute(_GET, (name,)).fetchall()
            return _rr(found[0]) if found else None

        return await self._run(get)

    async def list(self, query: ListQuery) -> Page:
        plan = rows.list_sql(query, _ph, format_time)  # InvalidCursor before any I/O

        def select(conn: sqlite3.Connection) -> list[RemediationRequest]:
            return [_rr(r) for r in conn.execute(plan.sql, plan.params).fetchall()]

        items, more = rows.page_of(await self._run(select), plan.limit)
        last = items[-1] if more else None
        return Page(items, encode_cursor(last.created_at, last.name) if last else None)

    async def update_status(self, name: str, patch: StatusPatch) -> RemediationRequest:
        changes = rows.patch_assignments(patch, format_time)

        def update(conn: sqlite3.Connection) -> RemediationRequest:
            if changes:
                sets = ", ".join(f"{column} = ?" for column in changes)
                sql = f"UPDATE {_T} SET {sets} WHERE name = ? RETURNING {_COLS}"
                try:
                    found = conn.execute(sql, (*changes.values(), name)).fetchall()
                except sqlite3.IntegrityError as exc:
                    raise Conflict(
                        f"RemediationRequest {name!r}: phase {patch.overall_phase!r} would make "
                        "it active while another RR for its fingerprint is active"
                    ) from exc
            else:
                found = conn.execute(_GET, (name,)).fetchall()
            if not found:
                raise NotFound(f"RemediationRequest {name!r} not found")
            return _rr(found[0])

        return await self._run(lambda conn: self._write(conn, update))
