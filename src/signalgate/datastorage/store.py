"""The audit store interface: what the write path, the query API and the replay worker need.

Every backend (`sqlite.py`, `postgres.py`) passes one shared contract suite. Errors are the
ones of `errors.py`; driver exceptions never cross this boundary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from signalgate.datastorage.chain import event_hash
from signalgate.datastorage.errors import Conflict, MissingParent
from signalgate.datastorage.events import AuditEvent


@dataclass(frozen=True)
class WriteResult:
    """`stored` new rows; `existing` ids that were already stored with the same content."""

    stored: int
    existing: int


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
        columns = (
            "correlation_id",
            "event_type",
            "event_category",
            "event_outcome",
            "severity",
            "namespace",
        )
        return [(c, v) for c in columns if (v := getattr(self, c)) is not None]


@dataclass(frozen=True)
class QueryPage:
    """Rows newest first: request fields plus `event_date`, `event_hash`, `previous_event_hash`."""

    data: Sequence[dict[str, Any]]
    total: int


class AuditStore(Protocol):
    async def open(self) -> None:
        """Connect; check (or apply) the schema; refuse with `SchemaBehind` when behind."""
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

    async def query(self, query: AuditQuery) -> QueryPage: ...

    async def chain(self, correlation_id: str) -> list[dict[str, Any]]:
        """Every row of one correlation id in write order (for verification)."""
        ...

    async def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied."""
        ...

    async def maintain(self) -> int:
        """Housekeeping for cron (partitions ahead); returns how many objects were created."""
        ...


@dataclass(frozen=True)
class PlannedRow:
    """An event ready to insert: its chain links computed."""

    event: AuditEvent
    previous_event_hash: str
    event_hash: str


def plan_write(
    events: Sequence[AuditEvent],
    existing: Mapping[str, bytes],
    stored_parents: Set[str],
    heads: Mapping[str, str],
) -> tuple[list[PlannedRow], int]:
    """The one write rule both stores apply inside their transaction.

    `existing` maps already-stored ids to their canonical bytes, `stored_parents` holds the
    parent ids found in the store, `heads` the last `event_hash` per correlation id. Returns
    the rows to insert (chained in input order) and how many events were already stored.
    """
    conflicts: dict[int, str] = {}
    missing: dict[int, str] = {}
    rows: list[PlannedRow] = []
    written: dict[str, bytes] = dict(existing)
    chain_heads = dict(heads)
    already = 0
    for index, event in enumerate(events):
        earlier = written.get(event.event_id)
        if earlier is not None:
            if earlier != event.canonical:
                conflicts[index] = event.event_id
            else:
                already += 1
            continue
        parent = event.parent_event_id
        if parent is not None and parent not in stored_parents and parent not in written:
            missing[index] = parent
        previous = chain_heads.get(event.correlation_id, "")
        digest = event_hash(previous, event.canonical)
        chain_heads[event.correlation_id] = digest
        written[event.event_id] = event.canonical
        rows.append(PlannedRow(event, previous, digest))
    if conflicts:
        raise Conflict(conflicts)
    if missing:
        raise MissingParent(missing)
    return rows, already
