"""Where a service hands its audit events: the `AuditSink` interface and a log-only sink.

`emit` stages an event and returns at once; `commit()` is the durability barrier the HTTP
layer awaits before it answers, so an acknowledged signal's events survive a crash. Events
are DataStorage request envelopes as plain dicts, each with a client-made `event_id` so
retries are stored once. The DataStorage-bound sink lives in `signalgate.audit`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

log = logging.getLogger("signalgate.audit")

# DataStorage refuses events older than this; a sender drops them rather than retry forever.
# One home for both sides of the wire (the Gateway never imports the DataStorage server).
MAX_EVENT_AGE = timedelta(days=7)
# What DataStorage stores of an event's `event_data` (serialised, and nested containers,
# `event_data` itself the first level): a sender fits its events under these, since an event
# refused for them is lost after its signal was acknowledged.
MAX_EVENT_DATA_BYTES = 256 * 1024
MAX_EVENT_DATA_DEPTH = 10


@dataclass(frozen=True)
class Refusal:
    """Why a sink takes no events now: what callers answer (503 with `retry_after`) and count
    (`reason`, an `audit_events_dropped_total` label when `audit.onBacklogFull` is `drop`)."""

    reason: str  # "backlog_full" | "journal_failing"
    message: str
    retry_after: int  # seconds: when trying again may succeed


class AuditSink(Protocol):
    def emit(self, event: dict[str, Any]) -> None:
        """Stage one event for delivery; returns at once (durable only after `commit`)."""
        ...

    def mark(self) -> int:
        """A token to pass to `commit` from before a request emits its first event."""
        ...

    async def commit(self, since: int | None = None) -> None:
        """Return once every event emitted so far is durable; raise if it cannot be, or if
        any write failed since `since` (a `mark()`: the request's earlier events may be
        among the lost)."""
        ...

    def accepting(self) -> bool:
        """False while the sink cannot take more events (see `refusal`)."""
        ...

    def refusal(self) -> Refusal | None:
        """Why the sink takes no events now (its backlog over its bound, its disk failing), or
        None while it does."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Deliver what it can (bounded in time); keep the rest for the next start."""
        ...

    def status(self) -> dict[str, Any]:
        """Delivery state for `/readyz` (e.g. reachable, staged, journaled)."""
        ...


class LoggingAuditSink:
    """Writes each event to the log at info level: for running without DataStorage."""

    def emit(self, event: dict[str, Any]) -> None:
        log.info(
            "audit event",
            extra={
                "event_type": event.get("event_type"),
                "correlation_id": event.get("correlation_id"),
                "event_id": event.get("event_id"),
            },
        )

    def mark(self) -> int:
        return 0

    async def commit(self, since: int | None = None) -> None:
        return None

    def accepting(self) -> bool:
        return True

    def refusal(self) -> Refusal | None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"sink": "log"}
