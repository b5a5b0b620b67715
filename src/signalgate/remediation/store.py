"""The RemediationRequest store interface, and the errors every backend translates into.

The deduplication decision (section 6 of the Gateway contract) is made *inside* the store,
atomically, because only the store can make it race-free across Gateway replicas: a unique
constraint on "one active RR per fingerprint" plus an atomic upsert, never an in-process lock.

Errors, by what the caller does with them:
- `StoreUnavailable` — transient (server down, database locked, disk full): answer 503 and
  let the sender retry.
- `NotFound`, `Conflict` — permanent for this request: 404 / 409.
- `StoreRefused` — the store refused the RR as written; `TooLarge`, for its size: the
  signal's own problem (refused like an oversized signal).
- `IncompatibleSchema` — raised by `open()` only: the database was made by a newer
  signalgate; start-up stops with its message.
- anything else is a bug and becomes a 500.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from signalgate.kube.names import is_dns1123_subdomain
from signalgate.remediation.model import RemediationRequest, StatusPatch


class StoreError(Exception):
    """Base of every error a store raises on purpose."""


class StoreUnavailable(StoreError):
    """The backing database cannot be reached or cannot take writes right now."""


class StoreRefused(StoreError):
    """The backing store refused the write as made (the API server's validation of the RR):
    retrying the same signal meets the same refusal until its operator changes something."""


class TooLarge(StoreRefused):
    """The store cannot hold the RR the signal makes, for its size (in Kubernetes mode, the
    API server or etcd refused the object as too large): the signal's own problem, refused
    the same on every retry, not a failure of its webhook. The message says why, without
    the store's name, for the sender's answer."""


class IncompatibleSchema(StoreError):
    """The database's schema is newer than this code knows; upgrading signalgate fixes it."""


class NotFound(StoreError):
    """No RR by that name."""


class Conflict(StoreError):
    """The change would leave two active RRs for one fingerprint."""


class Decision(enum.Enum):
    CREATED = "created"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class FiringResult:
    decision: Decision
    rr: RemediationRequest


@dataclass(frozen=True)
class ListQuery:
    fingerprint: str | None = None
    phase: str | None = None
    namespace: str | None = None  # the target resource's namespace
    active: bool | None = None
    limit: int = 100
    cursor: str | None = None


@dataclass(frozen=True)
class Page:
    items: Sequence[RemediationRequest]
    next_cursor: str | None


class RemediationStore(Protocol):
    """What the Gateway needs from a store. Every backend passes one shared test suite."""

    # whether a write already sent may still be stored after its caller was cancelled: true
    # of the Kubernetes API (no transaction to roll back), so the pipeline does not cancel
    # such a store's decision at the request's deadline but keeps its outcome for the retry
    # (gateway/pipeline.py); a SQL store's cancelled decision is rolled back
    writes_outlive_cancellation: bool = False

    async def open(self) -> None:
        """Connect and make sure the schema exists (migrating an embedded database)."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return if the store can serve requests, else raise `StoreUnavailable`."""
        ...

    async def record_firing(self, candidate: RemediationRequest, now: datetime) -> FiringResult:
        """Apply the deduplication rules for a firing signal, atomically.

        In order: an active RR with the candidate's fingerprint → duplicate of it; a terminal
        one with outcome `ManualReviewRequired` → duplicate of it (the newest); a terminal one
        with `nextAllowedExecution` after `now` → duplicate of the one with the latest such
        time; otherwise store `candidate` as is → created. A duplicate gets
        `occurrenceCount + 1`, `lastSeenAt = now` and its `signalResolvedAt` cleared.
        """
        ...

    async def record_firing_of(
        self, fingerprint: str, build: Callable[[], RemediationRequest], now: datetime
    ) -> FiringResult:
        """`record_firing` for the signal whose candidate `build` makes (its fingerprint is
        `fingerprint`): built only when the store needs it, so a duplicate of an RR the
        store knows active costs no candidate. What the Gateway's pipeline calls.

        This default builds first: a store that decides every signal with its candidate in
        hand (the SQL stores, behind the coalescer that skips the build) inherits it by
        naming `RemediationStore` as its base."""
        return await self.record_firing(build(), now)

    async def record_resolved(self, fingerprint: str, now: datetime) -> RemediationRequest | None:
        """Set `signalResolvedAt = now` on the active RR for `fingerprint`, if there is one."""
        ...

    async def get(self, name: str) -> RemediationRequest | None: ...

    async def list(self, query: ListQuery) -> Page:
        """Newest first (creation time, then name), keyset-paginated by an opaque cursor."""
        ...

    async def update_status(self, name: str, patch: StatusPatch) -> RemediationRequest:
        """Apply a consumer's status patch; `NotFound`, or `Conflict` when it would make a
        second RR active for one fingerprint."""
        ...


# the most RRs one page of a list holds, and how many when the caller does not say
MAX_PAGE = 500
DEFAULT_PAGE = 100


def clamp_limit(limit: int) -> int:
    """The caller validates 1..500; a store still answers sanely for any other value."""
    return max(1, min(int(limit), MAX_PAGE))


class InvalidCursor(ValueError):
    """A list cursor that this service did not make."""


def encode_cursor(created_at: datetime, name: str) -> str:
    """Opaque keyset cursor: the sort key of the last item of a page."""
    raw = f"{created_at.isoformat()}|{name}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, name = raw.split("|", 1)
        created_at = datetime.fromisoformat(stamp)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor is not one this API returned") from exc
    if created_at.tzinfo is None or not is_dns1123_subdomain(name):
        # an RR's name is an object name: a NUL in a forged one reached PostgreSQL, which
        # refused the statement (a 500 and a traceback per request, an outside check)
        raise InvalidCursor("cursor is not one this API returned")
    return created_at, name


Q = TypeVar("Q")


async def drain_failing_fast(
    take: Callable[[], list[Q] | None],
    decide: Callable[[list[Q]], Awaitable[StoreUnavailable | None]],
    fail: Callable[[list[Q], StoreUnavailable], None],
) -> None:
    """Decide a queue's batches one after another (`take` the next, None when it is empty);
    the one home of the outage fast-fail for the stores' queues (the coalescer's per
    fingerprint, the Kubernetes store's status writes per RR).

    When `decide` found the store unavailable (it returns why: a hung store's timeout), the
    callers of that batch still waiting, and then of the batch queued meanwhile, are `fail`ed
    with the same error now — not a call and a timeout of their own after having waited out
    that one (twice the timeout in all). The batch after those is tried again: the store
    may be back."""
    carried: StoreUnavailable | None = None
    while (batch := take()) is not None:
        outage, carried = carried, None
        if outage is None:
            outage = carried = await decide(batch)
        if outage is not None:
            fail(batch, outage)
