"""The PostgreSQL audit store (asyncpg): monthly partitions, chained writes, one transaction
per batch.

Write path, designed for throughput: one transaction per batch; the batch's correlation ids
are locked with `pg_advisory_xact_lock` in sorted order (so two writers never deadlock and a
chain never forks); one query finds already-stored ids and parents; one query reads each
chain's last hash; one binary `COPY` writes the rows, in order (an `INSERT ... SELECT FROM
unnest(...)` of array parameters cost asyncpg a type check per array element: a tenth of
DataStorage's CPU per event more).
"""

# SQL text here is built only from column-name constants; values are always bound parameters.
# ruff: noqa: S608 - SQL is built from constant identifiers and `query.py`'s fixed filter columns; every value is a bound parameter

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from signalgate.common.pgpool import FairGate
from signalgate.common.secrets import hide_secrets
from signalgate.common.sql.drivers import PG_REFUSED, PG_UNAVAILABLE, PG_UNREACHABLE, described
from signalgate.common.sql.migrations import postgres_migrate, postgres_version
from signalgate.datastorage import migrations
from signalgate.datastorage.chain import canonical
from signalgate.datastorage.columns import (
    COLUMNS,
    SELECT_LIST,
    column_values,
    row_to_event,
    rows_by_chain,
    stored_chains,
    stored_event_data,
)
from signalgate.datastorage.errors import (
    SchemaBehind,
    StoreOutage,
    StoreRefused,
    StoreUnavailable,
    StoreUnreachable,
)
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

log = logging.getLogger(__name__)

_MIGRATION_LOCK = (0x5147, 1)  # two-int advisory key: a separate space from chain locks
_PARTITION_LOCK = (0x5147, 2)  # creating monthly partitions, one process at a time
PARTITION_MONTHS_AHEAD = 3
# the months `maintain` makes: from last month (events arrive late) to PARTITION_MONTHS_AHEAD
_MONTHS_KEPT = PARTITION_MONTHS_AHEAD + 2

# Sorted inside a fenced subquery so the locks are taken in one global order.
_LOCK_SQL = (
    "SELECT pg_advisory_xact_lock(k) FROM "
    "(SELECT DISTINCT hashtextextended(c, 0) AS k FROM unnest($1::text[]) AS c "
    "ORDER BY k OFFSET 0) AS keys"
)
# The two look-ups probe an index once per key (a LATERAL subquery per array element, kept
# from being flattened into a join by its LIMIT or OFFSET 0), so their plan does not hang on
# statistics: on a table autovacuum has not analysed yet (a new database, the first days of
# a monthly partition) `= ANY(array)` was planned as a scan of every row, and each batch's
# cost grew with the table (measured: 1.5 ms per batch of 100 at 10,000 rows).
_FIND_SQL = (
    "SELECT e.* FROM unnest($1::uuid[]) AS wanted(id) CROSS JOIN LATERAL "
    f"(SELECT {SELECT_LIST} FROM audit_events WHERE event_id = wanted.id OFFSET 0) AS e"
)
_HEADS_SQL = (
    "SELECT h.* FROM unnest($1::text[]) AS wanted(id) CROSS JOIN LATERAL "
    "(SELECT correlation_id, event_count, event_hash FROM audit_chain_heads "
    "WHERE correlation_id = wanted.id ORDER BY event_count DESC LIMIT 1) AS h"
)
# the byte length of a row's event_data, for `paging.cut_by_bytes`
_SIZE = "octet_length(page.event_data::text)"
# each chain's rows in write order, one index probe per wanted id (see _HEADS_SQL), cut at
# $2 bytes of event_data
_CHAINS_SQL = cut_by_bytes(
    "SELECT e.*, wanted.n FROM unnest($1::text[]) WITH ORDINALITY AS wanted(id, n) "
    f"CROSS JOIN LATERAL (SELECT {SELECT_LIST}, seq FROM audit_events "
    "WHERE correlation_id = wanted.id) AS e",
    "n, seq",
    _SIZE,
    "$2::bigint",
)
# one page of a chain by keyset: an index range scan of (correlation_id, seq), whatever the
# chain's length or the page's place in it; cut at $4 bytes of event_data
_CHAIN_PAGE_SQL = cut_by_bytes(
    f"SELECT {SELECT_LIST}, seq FROM audit_events WHERE correlation_id = $1 AND seq > $2 "
    "ORDER BY seq LIMIT $3",
    "seq",
    _SIZE,
    "$4::bigint",
)
_HEAD_INSERT_SQL = (
    "INSERT INTO audit_chain_heads (correlation_id, event_count, event_hash) "
    "SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[])"
)
_ENSURE_SQL = "SELECT audit_ensure_partitions($1::date, $2::int)"
# the months of those `_ENSURE_SQL` makes whose partition is not there
_MISSING_SQL = (
    "SELECT to_char(m, 'YYYY_MM') FROM generate_series($1::date,"
    " $1::date + ($2::int - 1) * interval '1 month', interval '1 month') AS m"
    " WHERE to_regclass('audit_events_' || to_char(m, 'YYYY_MM')) IS NULL ORDER BY m"
)
# every stored id, whatever its day: the key that keeps one id from being stored twice
_IDS_INSERT_SQL = "INSERT INTO audit_event_ids SELECT unnest($1::uuid[])"
# a write that lost a race for an id is planned again this many times in all
WRITE_ATTEMPTS = 3


@contextlib.contextmanager
def _translated(action: str) -> Any:
    """Driver errors that mean "cannot serve now" → `StoreUnavailable` (writes go to the DLQ),
    those of a refusal for a setting (`PG_REFUSED`) as its `StoreRefused`, which `open()`
    does not wait out; any other database error is a bug and propagates (a 500, never a
    dead-letter trip)."""
    try:
        yield
    except PG_UNAVAILABLE as exc:
        message = f"PostgreSQL {action} failed: {described(exc)}"
        if isinstance(exc, PG_REFUSED):
            raise StoreRefused(message) from exc
        if isinstance(exc, PG_UNREACHABLE):
            raise StoreUnreachable(message) from exc
        raise StoreUnavailable(message) from exc


class PostgresAuditStore:
    """`AuditStore` on PostgreSQL (monthly partitions; many DataStorage replicas)."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        timeout: float = 10.0,
        auto_migrate: bool = False,
    ) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._timeout = timeout
        self._auto_migrate = auto_migrate
        self.page_bytes = PAGE_BYTES
        self._pool: asyncpg.Pool | None = None
        self._fair = FairGate(pool_size)
        self._created_at_open = 0  # partitions `open` made, told by the next `maintain`
        # why there is no pool: what every operation says until `open()` succeeds
        self._unopened = "not opened yet"

    @property
    def _where(self) -> str:
        return f"audit database {hide_secrets(self._dsn)}"

    async def open(self) -> None:
        """Connect, check the schema (or migrate it, with `auto_migrate`), make the pool and
        the coming months' partitions; only then do operations use the database.

        What is raised says whether waiting can help: `StoreRefused` (authentication, no
        such database) and `SchemaMismatch` are configurations that can never work; any other
        unavailability on the way (refused or timed-out connections, a server starting up or
        shutting down, the connection lost midway) is raised as `StoreOutage`. A failed
        attempt keeps nothing, so `open()` may be called again; until one succeeds every
        operation raises `StoreUnavailable` naming the last attempt's error (writes are
        queued, queries 503)."""
        try:
            await self._open()
        except StoreRefused as exc:
            self._unopened = str(exc)
            raise
        except StoreUnavailable as exc:
            self._unopened = str(exc)
            raise StoreOutage(str(exc)) from exc

    async def _open(self) -> None:
        with _translated("connect"):
            current = await self._schema_version()
        wanted = SCHEMA.latest("postgres")
        SCHEMA.refuse_newer(self._where, current, "postgres")
        if current < wanted:
            if not self._auto_migrate:
                raise SchemaBehind(migrations.behind_message(current, wanted))
            await self.migrate()
        with _translated("connect"):
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._timeout,
                command_timeout=self._timeout,
            )
        try:
            with _translated("maintain"):
                async with self._fair.acquire(pool, self._timeout) as conn:
                    self._created_at_open = await _partitions_if_allowed(conn)
        except BaseException:
            pool.terminate()  # the server may be gone again: no goodbye to wait for
            raise
        self._pool = pool

    def _waiting(self, why: str) -> None:
        """Not open yet because another process holds the migration lock: what every
        operation (and readiness) names until open, not the error of an earlier attempt."""
        self._unopened = why

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
            self._unopened = "closed"

    @contextlib.asynccontextmanager
    async def _connection(self, action: str) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise StoreUnavailable(
                f"PostgreSQL {action} failed: not connected (last attempt: {self._unopened})"
            )
        with _translated(action):
            async with self._fair.acquire(self._pool, self._timeout) as conn:
                yield conn

    async def ping(self) -> None:
        async with self._connection("ping") as conn:
            await conn.fetchval("SELECT 1", timeout=min(self._timeout, 2.0))

    async def write(self, events: Sequence[AuditEvent]) -> WriteResult:
        """Store `events` in one transaction. A concurrent writer of one of the same ids makes
        the unique keys refuse this one: it is then planned again, and finds that id stored
        (the same content: a no-op; other content: a conflict)."""
        for _ in range(WRITE_ATTEMPTS - 1):
            with contextlib.suppress(asyncpg.UniqueViolationError):
                return await self._write_once(events)
        return await self._write_once(events)  # the last attempt's refusal is raised

    async def _write_once(self, events: Sequence[AuditEvent]) -> WriteResult:
        ids = [event.event_id for event in events]
        parents = [p for event in events if (p := event.parent_event_id) is not None]
        wanted = list(dict.fromkeys(ids + parents))
        correlation_ids = sorted({event.correlation_id for event in events})
        async with self._connection("write") as conn, conn.transaction():
            await conn.execute(_LOCK_SQL, correlation_ids)
            found = await conn.fetch(_FIND_SQL, wanted)
            id_set = set(ids)
            existing = {
                str(row["event_id"]): canonical(row_to_event(row))
                for row in found
                if str(row["event_id"]) in id_set
            }
            stored = {str(row["event_id"]): row["correlation_id"] for row in found}
            heads = {
                row["correlation_id"]: ChainHead(int(row["event_count"]), row["event_hash"])
                for row in await conn.fetch(_HEADS_SQL, correlation_ids)
            }
            rows, already, new_heads = plan_write(events, existing, stored, heads)
            if rows:
                await conn.execute(_IDS_INSERT_SQL, [p.event.event_id for p in rows])
                await conn.copy_records_to_table(
                    "audit_events", records=_records(rows), columns=COLUMNS, timeout=self._timeout
                )
                await conn.execute(
                    _HEAD_INSERT_SQL,
                    list(new_heads),
                    [head.count for head in new_heads.values()],
                    [head.event_hash for head in new_heads.values()],
                )
        return WriteResult(stored=len(rows), existing=already)

    async def query(self, query: AuditQuery) -> QueryPage:
        where, params = _where(query)
        order = "event_timestamp DESC, seq DESC"
        listing = cut_by_bytes(
            f"SELECT {SELECT_LIST}, seq FROM audit_events{where} ORDER BY {order} "
            f"LIMIT ${len(params) + 1} OFFSET ${len(params) + 2}",
            order,
            _SIZE,
            f"${len(params) + 3}::bigint",
        )
        async with self._connection("query") as conn:
            rows = await conn.fetch(listing, *params, query.limit, query.offset, self.page_bytes)
            total = await conn.fetchval(f"SELECT count(*) FROM audit_events{where}", *params)
        return QueryPage([row_to_event(row, event_data_text=True) for row in rows], int(total))

    async def chain(self, correlation_id: str) -> list[dict[str, Any]]:
        sql = f"SELECT {SELECT_LIST} FROM audit_events WHERE correlation_id = $1 ORDER BY seq"
        async with self._connection("chain read") as conn:
            rows = await conn.fetch(sql, correlation_id)
        return [row_to_event(row) for row in rows]

    async def chain_page(self, correlation_id: str, after_seq: int, limit: int) -> ChainPage:
        async with self._connection("chain read") as conn:
            rows = await conn.fetch(
                _CHAIN_PAGE_SQL, correlation_id, after_seq, limit, self.page_bytes
            )
        last = int(rows[-1]["seq"]) if rows else after_seq
        return ChainPage(
            [stored_event_data(row_to_event(row, event_data_text=True)) for row in rows],
            last,
            cut=was_cut(rows, limit, self.page_bytes),
        )

    async def head(self, correlation_id: str) -> ChainHead | None:
        async with self._connection("chain head read") as conn:
            row = await conn.fetchrow(_HEADS_SQL, [correlation_id])
        return None if row is None else ChainHead(int(row["event_count"]), row["event_hash"])

    async def chains(self, correlation_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        async with self._connection("chain read") as conn:
            rows = await conn.fetch(_CHAINS_SQL, list(correlation_ids), self.page_bytes)
        return stored_chains(rows_by_chain(rows, event_data_text=True))

    async def heads(self, correlation_ids: Sequence[str]) -> dict[str, ChainHead]:
        async with self._connection("chain head read") as conn:
            rows = await conn.fetch(_HEADS_SQL, list(correlation_ids))
        return {
            str(row["correlation_id"]): ChainHead(int(row["event_count"]), row["event_hash"])
            for row in rows
        }

    async def correlation_ids(self) -> list[str]:
        sql = (
            "SELECT correlation_id FROM audit_chain_heads UNION "
            "SELECT correlation_id FROM audit_events ORDER BY 1"
        )
        async with self._connection("correlation ids read") as conn:
            return [str(row[0]) for row in await conn.fetch(sql)]

    async def migrate(self) -> list[int]:
        """Apply pending migrations, one transaction each, under a migration lock."""
        with _translated("migrate"):  # the connection may be lost midway too
            conn = await asyncpg.connect(self._dsn, timeout=self._timeout)
            try:
                return await postgres_migrate(
                    conn, SCHEMA, self._where, _MIGRATION_LOCK, waiting=self._waiting
                )
            finally:
                await conn.close()

    async def maintain(self) -> int:
        """Ensure monthly partitions from last month (late events) to 3 months ahead; how
        many were made, by this call and by `open` before it.

        Under a transaction-scoped advisory lock: replicas starting together (and a cron
        `maintain`) would each see a month missing and create it, and all but one fail with
        "relation already exists"."""
        async with self._connection("maintain") as conn:
            created = await _ensure_partitions(conn)
        # with those opening made (the `maintain` command opens the store first, and said
        # "created 0" after opening had made them all)
        created, self._created_at_open = created + self._created_at_open, 0
        return created

    async def _schema_version(self) -> int:
        conn = await asyncpg.connect(self._dsn, timeout=self._timeout)
        try:
            return await postgres_version(conn, SCHEMA)
        finally:
            await conn.close()


async def _ensure_partitions(conn: asyncpg.Connection) -> int:
    """`maintain` on one connection (`open` runs it before the pool is in use)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *_PARTITION_LOCK)
        created = await conn.fetchval(_ENSURE_SQL, _first_month(), _MONTHS_KEPT)
    return int(created)


def _first_month() -> date:
    today = datetime.now(UTC).date()
    return (today.replace(day=1) - timedelta(days=1)).replace(day=1)


async def _partitions_if_allowed(conn: asyncpg.Connection) -> int:
    """`_ensure_partitions` at start, for a role that may not create tables (it reads and
    writes them; their owner runs `maintain`). A month missing is then no reason to stay
    down: its events land in the default partition until the owner's `maintain` makes the
    month and moves them there. Said once at start, naming the months; the housekeeping
    runs say it again while they stay missing."""
    try:
        return await _ensure_partitions(conn)
    except asyncpg.InsufficientPrivilegeError as exc:
        missing = await _missing_months(conn)
        log.warning(
            "cannot create the coming months' partitions (not the tables' owner): events of "
            "a missing month are kept in the default partition until `signalgate-datastorage "
            "maintain` runs as the owner",
            extra={"missing": missing, "error": str(exc)},
        )
        return 0


async def _missing_months(conn: asyncpg.Connection) -> list[str]:
    """The months `_ensure_partitions` would make, as `YYYY_MM` (named as its function names
    their partitions), in one query."""
    rows = await conn.fetch(_MISSING_SQL, _first_month(), _MONTHS_KEPT)
    return [str(row[0]) for row in rows]


def _records(rows: Sequence[PlannedRow]) -> list[tuple[Any, ...]]:
    """The planned rows as COPY records, in the chain's write order."""
    return [
        column_values(p, {"event_timestamp": p.event.timestamp, "event_date": p.event.event_date})
        for p in rows
    ]


def _where(query: AuditQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []

    def add(template: str, value: Any) -> None:
        params.append(value)
        clauses.append(template.format(f"${len(params)}"))

    for column, value in query.exact_filters():
        add(f"{column} = {{}}", value)
    if query.since is not None:
        add("event_timestamp >= {}", query.since)
        add("event_date >= {}", query.since.astimezone(UTC).date())
    if query.until is not None:
        add("event_timestamp <= {}", query.until)
        add("event_date <= {}", query.until.astimezone(UTC).date())
    if query.detail_key is not None and query.detail_value is not None:
        params.append(query.detail_key)
        key = f"${len(params)}"
        add(
            f"json_typeof(event_data -> {key}) = 'string' AND event_data ->> {key} = {{}}",
            query.detail_value,
        )
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params
