"""The shared RR store: PostgreSQL through an asyncpg pool, for many Gateway replicas.

Race freedom comes from the database alone: the partial unique index
`remediation_requests_one_active` allows one active RR per fingerprint, and a firing signal
is decided by single atomic statements:

1. `UPDATE … WHERE fingerprint = $1 AND active RETURNING …` — the hot duplicate case in one
   round trip; when no row is active, the same statement also returns the terminal RRs
   that might suppress a new one;
2. one of those suppresses (rules 2 and 3, chosen by `model.choose_suppressor`): bump it by
   name, re-checking that it still suppresses;
3. otherwise `INSERT … ON CONFLICT (fingerprint) WHERE active DO UPDATE …`, so concurrent
   creators of one fingerprint collapse into one RR; `xmax = 0` tells which one inserted.

Errors: anything that means "the server cannot be reached or cannot serve now" (refused or
cut connections, admin shutdown, too many connections, disk full, pool or command timeout)
→ `StoreUnavailable`. Broken connections are dropped by the pool and replaced on the next
acquire, so the store recovers by itself when PostgreSQL comes back.
"""

# ruff: noqa: S608 - SQL is built from constant identifiers; every value is a bound parameter

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from signalgate.common.pgpool import FairGate
from signalgate.common.secrets import hide_secrets
from signalgate.common.sql.drivers import PG_UNAVAILABLE, described
from signalgate.common.sql.migrations import postgres_migrate
from signalgate.common.tasks import cancel_and_wait, within
from signalgate.remediation import rows
from signalgate.remediation.model import (
    MANUAL_REVIEW_OUTCOME,
    RemediationRequest,
    StatusPatch,
    choose_suppressor,
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

log = logging.getLogger("signalgate.remediation")

MIGRATION_LOCK = 0x5347_5252_0001  # pg_advisory_lock key: "SGRR" + 1
VERSION_TABLE = SCHEMA.table

_T = rows.TABLE
_COLS = rows.SELECT_COLUMNS
_N = len(rows.COLUMNS)
_BUMP = rows.seen_again_sets("$1")
_BUMP_ACTIVE = f"UPDATE {_T} SET {_BUMP} WHERE fingerprint = $2 AND active RETURNING {_COLS}"
_BUMP_SUPPRESSOR = (
    f"UPDATE {_T} SET {_BUMP} WHERE name = $2 "
    f"AND {rows.SUPPRESSING.format(outcome='$3', now='$1')} RETURNING {_COLS}"
)
# First look, one round trip: bump the active RR; only when there is none, the same
# statement also answers the terminal RRs that might suppress a new one (rules 2 and 3).
_SUPPRESSOR_WHERE = rows.SUPPRESSOR_WHERE.format(fingerprint="$2", outcome="$3", now="$1")
_FIRST_LOOK = (
    f"WITH bumped AS ({_BUMP_ACTIVE}) "
    f"SELECT {_COLS}, true AS bumped FROM bumped UNION ALL "
    f"SELECT {_COLS}, false FROM {_T} WHERE NOT EXISTS (SELECT 1 FROM bumped) "
    f"AND {_SUPPRESSOR_WHERE}"
)
_UPSERT = (
    f"INSERT INTO {_T} ({_COLS}) VALUES ({', '.join(f'${i}' for i in range(1, _N + 1))}) "
    f"ON CONFLICT (fingerprint) WHERE active DO UPDATE SET "
    f"{rows.seen_again_sets(f'${_N + 1}', _T)} RETURNING {_COLS}, (xmax = 0) AS inserted"
)
_BUMP_ACTIVE_NAMED = (
    f"UPDATE {_T} SET {rows.seen_again_sets('$1', count='$3')} "
    f"WHERE name = $2 AND active RETURNING {_COLS}"
)
_RESOLVE = (
    f"UPDATE {_T} SET {rows.resolved_sets('$1')} WHERE fingerprint = $2 AND active "
    f"RETURNING {_COLS}"
)
_GET = f"SELECT {_COLS} FROM {_T} WHERE name = $1"

# Group commit: the first look and the insert for many signals of different fingerprints in
# one statement (one round trip, one commit). Each candidate is bumped onto its active RR,
# or inserted when no RR of its fingerprint is active or may suppress it (a conflicting
# concurrent insert is skipped, not waited for). What is neither comes back absent and is
# decided alone by `record_firing`'s full rules.
_PG_TYPES = {
    **dict.fromkeys(rows.TIME_COLUMNS, "timestamptz"),
    "active": "boolean",
    "signal_resolved": "boolean",
    "occurrence_count": "bigint",
}
_UNNEST = ", ".join(
    f"${i}::{_PG_TYPES.get(column, 'text')}[]" for i, column in enumerate(rows.COLUMNS, start=1)
)
_QUALIFIED = ", ".join(f"r.{column}" for column in rows.COLUMNS)
_CANDIDATE_COLS = ", ".join(f"c.{column}" for column in rows.COLUMNS)
# an inserted RR is its candidate, as sent: only its fingerprint comes back (the rest of the
# row would cost PostgreSQL, the wire and the decoding for values the Gateway already has)
_FINGERPRINT_ONLY = ", ".join(
    "fingerprint" if column == "fingerprint" else "NULL" for column in rows.COLUMNS
)
_FINGERPRINTS = f"${rows.COLUMNS.index('fingerprint') + 1}::text[]"
_NOW, _OUTCOME, _EARLIEST = f"${_N + 1}", f"${_N + 2}", f"${_N + 3}"
_DECIDE_MANY = (
    f"WITH c AS (SELECT * FROM unnest({_UNNEST}, {_NOW}::timestamptz[]) "
    f"AS c({_COLS}, now)), "
    f"bumped AS (UPDATE {_T} AS r SET {rows.seen_again_sets('c.now', 'r')} FROM c "
    f"WHERE r.fingerprint = ANY({_FINGERPRINTS}) AND r.active "
    f"AND r.fingerprint = c.fingerprint RETURNING {_QUALIFIED}), "
    f"blocked AS (SELECT fingerprint FROM {_T} WHERE fingerprint = ANY({_FINGERPRINTS}) AND "
    f"{rows.SUPPRESSING.format(outcome=_OUTCOME, now=_EARLIEST)}), "
    f"inserted AS (INSERT INTO {_T} ({_COLS}) SELECT {_CANDIDATE_COLS} FROM c "
    f"WHERE c.fingerprint NOT IN (SELECT fingerprint FROM bumped) "
    f"AND c.fingerprint NOT IN (SELECT fingerprint FROM blocked) "
    f"ON CONFLICT (fingerprint) WHERE active DO NOTHING RETURNING fingerprint) "
    f"SELECT {_COLS}, true AS bumped FROM bumped UNION ALL "
    f"SELECT {_FINGERPRINT_ONLY}, false FROM inserted"
)


# Plans made for each statement's values: the group-commit statement's cached generic plan
# (array lengths unknown) costs PostgreSQL 3-7 ms per batch on a table of 20,000 RRs where a
# plan for the actual arrays costs 0.7 ms; the one-row statements pay ~0.1 ms of planning.
SESSION_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


async def _keep_session(conn: Any) -> None:
    """Pool reset hook: nothing to undo. The store never changes session state (no SET,
    LISTEN, cursors or held advisory locks; an open transaction is still rolled back by the
    pool), so the default reset query would only cost one extra round trip per call."""


def _same(value: Any) -> Any:
    return value


def _rr(row: Any) -> RemediationRequest:
    return rows.row_to_rr(row, _same)


def _decided(row: Any, candidate: RemediationRequest) -> FiringResult | None:
    """A batch row as the answer to its signal: the RR bumped, or the candidate inserted as
    it was sent (only its fingerprint comes back); None when the batch left it undecided."""
    if row is None:
        return None
    if row["bumped"]:
        return FiringResult(Decision.DUPLICATE, _rr(row))
    return FiringResult(Decision.CREATED, candidate)


def _ph(index: int) -> str:
    return f"${index}"


FIRST_ANALYZE_AFTER = 1_000  # RRs this store inserted; then after twice as many, and so on


class _GrowthAnalyzer:
    """Runs `ANALYZE` on the RR table as this store fills it: after 1,000 inserts, 2,000,
    4,000 and so on (a dozen times over its first million RRs).

    Why: autovacuum analyses a new table soon after its first burst of writes — often while
    it holds a single, much-updated RR — and then not again for up to a minute. With those
    statistics the planner takes the table for one row, and the group-commit statement's
    lookup of active RRs by fingerprint ties with walking every active RR; when it picks the
    walk, each batch of new signals reads every open RR (measured: 500 µs of PostgreSQL CPU
    per new RR against 115 µs, on 10,000 RRs). Fresh statistics make the fingerprint lookup
    the plan. Later, autovacuum's own threshold (10 % of the table) keeps them fresh."""

    def __init__(self, analyze: Callable[[], Awaitable[None]]) -> None:
        self._analyze = analyze
        self._inserted = 0
        self._next = FIRST_ANALYZE_AFTER
        self._task: asyncio.Task[None] | None = None

    def inserted(self, count: int) -> None:
        self._inserted += count
        if self._inserted < self._next or (self._task is not None and not self._task.done()):
            return
        self._next = 2 * self._inserted
        self._task = asyncio.create_task(self._run(), name="rr-table-analyze")

    async def _run(self) -> None:
        try:
            await self._analyze()
        except (StoreUnavailable, asyncpg.PostgresError, OSError, TimeoutError) as exc:
            log.warning("ANALYZE of the RR table failed", extra={"error": str(exc)})

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            await cancel_and_wait(task)


class PostgresRemediationStore(RemediationStore):
    """`RemediationStore` on PostgreSQL (many Gateway replicas share one database)."""

    def __init__(
        self,
        dsn: str,
        min_size: int = 2,
        max_size: int = 10,
        command_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        acquire_timeout: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self._fair = FairGate(max_size)
        self.command_timeout = command_timeout
        self.connect_timeout = connect_timeout
        self.acquire_timeout = acquire_timeout
        self._pool: Any = None  # asyncpg.Pool
        self._growth = _GrowthAnalyzer(self._analyze)

    def __repr__(self) -> str:
        return f"PostgresRemediationStore({hide_secrets(self.dsn)!r})"

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and migrate; raises `StoreUnavailable` at once if the server is down (the
        Gateway does not start without its store; once open, outages are survived)."""
        if self._pool is not None:
            raise RuntimeError(f"{self!r} is already open")
        try:
            async with asyncio.timeout(self.connect_timeout + self.command_timeout):
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=self.min_size,
                    max_size=self.max_size,
                    command_timeout=self.command_timeout,
                    timeout=self.connect_timeout,
                    reset=_keep_session,
                    server_settings=SESSION_SETTINGS,
                )
        except PG_UNAVAILABLE as exc:
            raise StoreUnavailable(
                f"PostgreSQL store {hide_secrets(self.dsn)}: cannot connect: {described(exc)}"
            ) from exc
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def _migrate(self) -> None:
        async with self._connection() as conn:
            await postgres_migrate(
                conn, SCHEMA, f"PostgreSQL store {hide_secrets(self.dsn)}", (MIGRATION_LOCK,)
            )

    async def close(self) -> None:
        await self._growth.close()
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await within(pool.close(), self.command_timeout)
        except PG_UNAVAILABLE:
            pool.terminate()

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection, with every 'cannot serve now' error made `StoreUnavailable`."""
        pool = self._pool
        if pool is None:
            raise RuntimeError(f"{self!r} is not open")
        try:
            async with self._fair.acquire(pool, self.acquire_timeout) as conn:
                yield conn
        except PG_UNAVAILABLE as exc:
            raise StoreUnavailable(
                f"PostgreSQL store {hide_secrets(self.dsn)}: {described(exc)}"
            ) from exc

    # --- the store API --------------------------------------------------------------------

    async def record_firing(self, candidate: RemediationRequest, now: datetime) -> FiringResult:
        fingerprint = candidate.fingerprint
        async with self._connection() as conn:
            found = await conn.fetch(_FIRST_LOOK, now, fingerprint, MANUAL_REVIEW_OUTCOME)
            if found and found[0]["bumped"]:
                return FiringResult(Decision.DUPLICATE, _rr(found[0]))
            suppressing = choose_suppressor([_rr(r) for r in found], now)
            if suppressing is not None:
                row = await conn.fetchrow(
                    _BUMP_SUPPRESSOR, now, suppressing.name, MANUAL_REVIEW_OUTCOME
                )
                if row is not None:
                    return FiringResult(Decision.DUPLICATE, _rr(row))
                # It stopped suppressing since we looked (a consumer changed it): go on.
            row = await conn.fetchrow(_UPSERT, *rows.rr_to_row(candidate, _same), now)
        decision = Decision.CREATED if row["inserted"] else Decision.DUPLICATE
        if decision is Decision.CREATED:
            self._growth.inserted(1)
        return FiringResult(decision, _rr(row))

    async def record_firings(
        self, signals: Sequence[tuple[RemediationRequest, datetime]]
    ) -> list[FiringResult | None]:
        """One statement for many signals of distinct fingerprints; None where a signal
        needs `record_firing`'s full rules (a suppressing RR, a concurrent insert)."""
        columns = list(zip(*(rows.rr_to_row(rr, _same) for rr, _ in signals), strict=True))
        nows = [now for _, now in signals]
        async with self._connection() as conn:
            found = await conn.fetch(_DECIDE_MANY, *columns, nows, MANUAL_REVIEW_OUTCOME, min(nows))
        decided = {row["fingerprint"]: row for row in found}
        self._growth.inserted(sum(1 for row in found if not row["bumped"]))
        return [_decided(decided.get(rr.fingerprint), rr) for rr, _ in signals]

    async def _analyze(self) -> None:
        async with self._connection() as conn:
            await conn.execute(f"ANALYZE {_T}")

    async def bump_active(self, name: str, count: int, now: datetime) -> RemediationRequest | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(_BUMP_ACTIVE_NAMED, now, name, count)
        return None if row is None else _rr(row)

    async def record_resolved(self, fingerprint: str, now: datetime) -> RemediationRequest | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(_RESOLVE, now, fingerprint)
        return None if row is None else _rr(row)

    async def get(self, name: str) -> RemediationRequest | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(_GET, name)
        return None if row is None else _rr(row)

    async def list(self, query: ListQuery) -> Page:
        plan = rows.list_sql(query, _ph, _same)  # InvalidCursor before any I/O
        async with self._connection() as conn:
            found = [_rr(r) for r in await conn.fetch(plan.sql, *plan.params)]
        items, more = rows.page_of(found, plan.limit)
        last = items[-1] if more else None
        return Page(items, encode_cursor(last.created_at, last.name) if last else None)

    async def update_status(self, name: str, patch: StatusPatch) -> RemediationRequest:
        changes = rows.patch_assignments(patch, _same)
        async with self._connection() as conn:
            if not changes:
                row = await conn.fetchrow(_GET, name)
            else:
                sets = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
                sql = f"UPDATE {_T} SET {sets} WHERE name = $1 RETURNING {_COLS}"
                try:
                    row = await conn.fetchrow(sql, name, *changes.values())
                except asyncpg.UniqueViolationError as exc:
                    raise Conflict(
                        f"RemediationRequest {name!r}: phase {patch.overall_phase!r} would make "
                        "it active while another RR for its fingerprint is active"
                    ) from exc
        if row is None:
            raise NotFound(f"RemediationRequest {name!r} not found")
        return _rr(row)
