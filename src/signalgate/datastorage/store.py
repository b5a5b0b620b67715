"""The audit store interface: what the write path, the query API and the replay worker need.

Every backend (`sqlite.py`, `postgres.py`) passes one shared contract suite. Errors are the
ones of `errors.py`; driver exceptions never cross this boundary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from signalgate.datastorage.chain import (
    ChainBreak,
    ChainReport,
    ChainVerifier,
    event_hash,
    verify,
)
from signalgate.datastorage.errors import Conflict, ForeignParent, MissingParent
from signalgate.datastorage.events import AuditEvent


@dataclass(frozen=True)
class WriteResult:
    """`stored` new rows; `existing` ids that were already stored with the same content."""

    stored: int
    existing: int


# The equality filters of a query, each a column and a field of `AuditQuery` of that name:
# one home for the list. `query.py` reads each as a query parameter (the served OpenAPI
# lists them: tests/unit/project/test_openapi_parameters.py), every store matches them
# through `exact_filters`, and each leads an index in every backend's migrations
# (test_ds_filter_indexes.py, sqlite; test_ds_postgres.py, PostgreSQL).
EXACT_FILTERS: tuple[str, ...] = (
    "correlation_id",
    "event_type",
    "event_category",
    "event_outcome",
    "severity",
    "namespace",
)


@dataclass(frozen=True)
class AuditQuery:
    """Filters of `GET /api/v1/audit/events`, all optional and combined with AND."""

    correlation_id: str | None = None
    event_type: str | None = None
    event_category: str | None = None
    event_outcome: str | None = None
    severity: str | None = None
    namespace: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    detail_key: str | None = None
    detail_value: str | None = None
    limit: int = 100
    offset: int = 0

    def exact_filters(self) -> list[tuple[str, str]]:
        """(column, value) of every equality filter that is set; each store adds its own
        dialect for the time range and the `event_data` match."""
        return [(c, v) for c in EXACT_FILTERS if (v := getattr(self, c)) is not None]


@dataclass(frozen=True)
class QueryPage:
    """Rows newest first: request fields plus `event_date`, `event_hash`, `previous_event_hash`;
    `event_data` as its stored JSON text (see `columns.stored_event_data`)."""

    data: Sequence[dict[str, Any]]
    total: int


class AuditStore(Protocol):
    # the `event_data` bytes one read returns at most beyond its first row (`paging`);
    # `paging.PAGE_BYTES` unless a test sets less
    page_bytes: int

    async def open(self) -> None:
        """Connect; check (or apply) the schema; refuse with `SchemaBehind` when behind and not
        migrated automatically, with `SchemaAhead` when newer than this code."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return if the store can serve requests, else raise `StoreUnavailable`."""
        ...

    async def write(self, events: Sequence[AuditEvent]) -> WriteResult:
        """Store a batch atomically, chained per correlation id in input order.

        Ids already stored with the same content are skipped (idempotent retries); with other
        content → `Conflict`; a parent that is neither stored nor earlier in the batch →
        `MissingParent`. Either error writes nothing.
        """
        ...

    async def query(self, query: AuditQuery) -> QueryPage:
        """At most `query.limit` matching rows, fewer when their `event_data` passes
        `page_bytes` (`total` counts every match, so the reader asks for the rest)."""
        ...

    async def chain(self, correlation_id: str) -> list[dict[str, Any]]:
        """Every row of one correlation id in write order (for verification)."""
        ...

    async def chain_page(self, correlation_id: str, after_seq: int, limit: int) -> ChainPage:
        """At most `limit` rows of one correlation id written after the row numbered
        `after_seq` (0: from the first), in write order: a chain read in bounded memory.
        Fewer, with `cut`, when their `event_data` passes `page_bytes`."""
        ...

    async def head(self, correlation_id: str) -> ChainHead | None:
        """The chain's recorded head (None when nothing was ever written to it)."""
        ...

    async def chains(self, correlation_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """`chain` of several correlation ids in one read (those with rows). A read that
        passes `page_bytes` ends there: the chain it was in is cut short and those after
        it are missing, so a caller holds each chain to its head and reads any that does
        not match alone (`verify_many`)."""
        ...

    async def heads(self, correlation_ids: Sequence[str]) -> dict[str, ChainHead]:
        """`head` of several correlation ids in one read (those with a head)."""
        ...

    async def correlation_ids(self) -> list[str]:
        """Every correlation id with events or a recorded head (for verify-all)."""
        ...

    async def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied."""
        ...

    async def maintain(self) -> int:
        """Housekeeping for cron (partitions ahead); returns how many objects were created."""
        ...


@dataclass(frozen=True)
class ChainPage:
    """Rows of one chain in write order, and the write-order number (`seq`) of the last one
    (the `after_seq` of the next page; the one asked for when the page is empty). Each row's
    `event_data` is its stored text as an `orjson.Fragment` (`columns.stored_event_data`):
    hashed as stored, not parsed."""

    rows: list[dict[str, Any]]
    last_seq: int
    # the page ended at `paging.PAGE_BYTES` of `event_data` before `limit` rows: the chain
    # may go on even though the page is short
    cut: bool = False


@dataclass(frozen=True)
class PlannedRow:
    """An event ready to insert: its chain links computed."""

    event: AuditEvent
    previous_event_hash: str
    event_hash: str


@dataclass(frozen=True)
class ChainHead:
    """A chain's recorded end: how many events it has and the newest one's hash. Written in
    the same transaction as the events (table `audit_chain_heads`, rows only ever added), so
    deleting a chain's newest events, or the whole chain, leaves a head the events no longer
    reach."""

    count: int
    event_hash: str


# a chain not written yet (not a default made for every event)
_NO_HEAD = ChainHead(0, "")


def plan_write(
    events: Sequence[AuditEvent],
    existing: Mapping[str, bytes],
    stored_parents: Mapping[str, str],
    heads: Mapping[str, ChainHead],
) -> tuple[list[PlannedRow], int, dict[str, ChainHead]]:
    """The one write rule both stores apply inside their transaction.

    `existing` maps already-stored ids to their canonical bytes, `stored_parents` maps the
    parent ids found in the store to their correlation ids, `heads` holds each chain's
    recorded head. Returns the rows to insert (chained in input order), how many events were
    already stored, and the new head of every chain written to.
    """
    conflicts: dict[int, str] = {}
    missing: dict[int, str] = {}
    foreign: dict[int, tuple[str, str]] = {}
    rows: list[PlannedRow] = []
    written: dict[str, bytes] = dict(existing)
    chains: dict[str, str] = dict(stored_parents)  # event id -> correlation id
    chain_heads = dict(heads)
    new_heads: dict[str, ChainHead] = {}
    already = 0
    for index, event in enumerate(events):
        # each property once (each makes its text again)
        event_id, chain = event.event_id, event.correlation_id
        earlier = written.get(event_id)
        if earlier is not None:
            if earlier != event.canonical:
                conflicts[index] = event_id
            else:
                already += 1
            continue
        parent = event.parent_event_id
        if parent is not None:
            where = chains.get(parent)
            if where is None:
                missing[index] = parent
            elif where != chain:
                foreign[index] = (parent, where)
        head = chain_heads.get(chain, _NO_HEAD)
        digest = event_hash(head.event_hash, event.canonical)
        chain_heads[chain] = new_heads[chain] = ChainHead(head.count + 1, digest)
        written[event_id] = event.canonical
        chains[event_id] = chain
        rows.append(PlannedRow(event, head.event_hash, digest))
    if conflicts:
        raise Conflict(conflicts)
    if foreign:
        raise ForeignParent(foreign)
    if missing:
        raise MissingParent(missing)
    return rows, already, new_heads


# rows of one chain held at once by `verify_stored` and `verify_many`: a flapping alert's
# chain of 100,000 deduplicated events, each with the alert's body, took gigabytes read whole
VERIFY_PAGE = 1000


async def verify_stored(
    store: AuditStore, correlation_id: str
) -> tuple[ChainReport, ChainBreak | None]:
    """The one verification both the API and the CLI run: the chain's rows recomputed and
    held to its recorded head, read `VERIFY_PAGE` rows at a time. Returns the report and
    the first broken row (for Kubernaut's answer).

    The head is read first, then the rows it covers: the first `count` rows by `seq`.
    Writes of one chain are serialised (PostgreSQL's advisory lock, SQLite's one writer),
    each commits its rows with its head, and `seq` only grows, so rows written after that
    head come after them in `seq`: they are newer events, not part of the chain verified.
    A row past the head's count is told from such a newer event by reading the head again:
    unchanged, nothing was written meanwhile, so the row was added outside DataStorage, and
    every row is verified and counted as stored. A chain with rows but no head is broken."""
    head = await store.head(correlation_id)
    verifier = ChainVerifier(correlation_id)
    if head is None:  # heads are written with every event since migration 0002
        await _feed_pages(store, verifier, 0, None)
        if verifier.count:
            detail = "events are stored but no chain head was recorded: written outside DataStorage"
            return ChainReport(correlation_id, verifier.count, False, detail=detail), None
        return verifier.report(), None
    after, past = await _feed_pages(store, verifier, 0, head.count)
    if past is not None and await store.head(correlation_id) == head:
        verifier.feed([past])
        await _feed_pages(store, verifier, after, None)
    return verifier.report((head.count, head.event_hash)), verifier.broken


async def _feed_pages(
    store: AuditStore, verifier: ChainVerifier, after_seq: int, count: int | None
) -> tuple[int, dict[str, Any] | None]:
    """Feed `verifier` the chain's rows after `after_seq`, a page at a time: every row, or
    (`count`) the first `count` rows, with one row more asked for on the last page to see
    whether any is stored past them. Returns the last row's `seq` and that row past them
    (None when there is none, or without `count`)."""
    while True:
        remaining = None if count is None else count - verifier.count
        limit = VERIFY_PAGE if remaining is None else min(VERIFY_PAGE, remaining + 1)
        page = await store.chain_page(verifier.correlation_id, after_seq, limit)
        after_seq = page.last_seq
        if remaining is not None and len(page.rows) > remaining:
            verifier.feed(page.rows[:remaining])
            return after_seq, page.rows[remaining]
        verifier.feed(page.rows)
        if len(page.rows) < limit and not page.cut:
            return after_seq, None


VERIFY_BATCH = 500  # chains whose heads are read at once by `verify_many`


async def verify_many(
    store: AuditStore, correlation_ids: Sequence[str]
) -> AsyncIterator[ChainReport]:
    """`verify_stored` of every chain, in order, with a few reads per batch of chains instead
    of three per chain (`verify-all` over 400,000 chains was 1.2 million queries).

    The heads of `VERIFY_BATCH` chains are read at once; consecutive chains are then read
    together as long as their heads count at most `VERIFY_PAGE` rows in all, so no read holds
    more rows than one page of `verify_stored`. A chain longer than that, or without a head,
    is verified alone by `verify_stored`, page by page; so is one whose head moved while its
    batch was read, or that does not verify, and that report stands."""
    for start in range(0, len(correlation_ids), VERIFY_BATCH):
        batch = correlation_ids[start : start + VERIFY_BATCH]
        before = await store.heads(batch)
        for read in _reads(batch, before):
            if isinstance(read, str):
                yield (await verify_stored(store, read))[0]
                continue
            async for report in _verify_group(store, read, before):
                yield report


def _reads(batch: Sequence[str], before: Mapping[str, ChainHead]) -> Iterator[str | list[str]]:
    """`batch` in order as reads: runs of consecutive chains whose heads count at most
    `VERIFY_PAGE` rows in all (a list), and each chain without a head or longer than that
    on its own (its id), to be paged."""
    group: list[str] = []
    rows = 0
    for correlation_id in batch:
        head = before.get(correlation_id)
        if head is not None and head.count <= VERIFY_PAGE:
            if group and rows + head.count > VERIFY_PAGE:
                yield group
                group, rows = [], 0
            group.append(correlation_id)
            rows += head.count
            continue
        if group:
            yield group
            group, rows = [], 0
        yield correlation_id
    if group:
        yield group


async def _verify_group(
    store: AuditStore, group: Sequence[str], before: Mapping[str, ChainHead]
) -> AsyncIterator[ChainReport]:
    """The chains of `group` (each with a head in `before`) read at once and verified, in
    order; one whose head moved meanwhile, or that does not verify, alone again."""
    chains = await store.chains(group)
    after = await store.heads(group)
    for correlation_id in group:
        head = after.get(correlation_id)
        report = None
        if head is not None and head == before.get(correlation_id):
            chain = chains.get(correlation_id, [])
            report = verify(correlation_id, chain, (head.count, head.event_hash))
        if report is None or not report.valid:
            report, _ = await verify_stored(store, correlation_id)
        yield report
