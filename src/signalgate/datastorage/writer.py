"""The write decision: store the batch, else queue it, else say how many were lost.

This is the one place that decides what a write answers:
- stored (or already stored with the same content) → 201;
- the database failed (`StoreUnavailable`) → the dead-letter queue takes the events → 202,
  because a caller cannot do better than our queue and must not block on our database;
- the queue failed too → `EventsLost` → 500 naming the count, so the caller knows to keep them;
- `Conflict` / `MissingParent` pass through (409 / 400): retrying cannot change them, so
  they are never queued.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from signalgate.datastorage.dlq import DeadLetterQueue
from signalgate.datastorage.errors import (
    Conflict,
    DeadLetterUnavailable,
    MissingParent,
    StoreUnavailable,
)
from signalgate.datastorage.events import AuditEvent
from signalgate.datastorage.metrics import DataStorageMetrics
from signalgate.datastorage.store import AuditStore

log = logging.getLogger(__name__)


class Written(enum.Enum):
    STORED = "stored"
    QUEUED = "queued"


@dataclass(frozen=True)
class WriteOutcome:
    written: Written
    count: int


class EventsLost(Exception):
    """Neither the database nor the dead-letter queue took the events."""

    def __init__(self, count: int) -> None:
        self.count = count
        super().__init__(
            f"the audit database and the dead-letter queue are both unavailable: "
            f"{count} event(s) were not stored; retry later"
        )


class AuditWriter:
    def __init__(
        self,
        store: AuditStore,
        dlq: DeadLetterQueue,
        metrics: DataStorageMetrics,
        first_replay_delay: float,
    ) -> None:
        self._store = store
        self._dlq = dlq
        self._metrics = metrics
        self._first_delay = first_replay_delay

    async def write(self, events: Sequence[AuditEvent]) -> WriteOutcome:
        started = time.perf_counter()
        try:
            return await self._write(events)
        finally:
            self._metrics.write_duration.observe(time.perf_counter() - started)

    async def _write(self, events: Sequence[AuditEvent]) -> WriteOutcome:
        count = len(events)
        try:
            result = await self._store.write(events)
        except StoreUnavailable as store_error:
            try:
                await self._dlq.put(events, due=time.time() + self._first_delay)
            except DeadLetterUnavailable as queue_error:
                self._metrics.writes.labels("lost").inc(count)
                log.error(
                    "audit events lost: database and dead-letter queue unavailable",
                    extra={
                        "count": count,
                        "store_error": str(store_error),
                        "queue_error": str(queue_error),
                    },
                )
                raise EventsLost(count) from queue_error
            self._metrics.writes.labels("dead_lettered").inc(count)
            log.warning(
                "database unavailable: events queued for replay",
                extra={"count": count, "error": str(store_error)},
            )
            return WriteOutcome(Written.QUEUED, count)
        except Conflict:
            self._metrics.writes.labels("conflict").inc(count)
            raise
        except MissingParent:
            self._metrics.writes.labels("rejected").inc(count)
            raise
        if result.stored:
            self._metrics.writes.labels("stored").inc(result.stored)
        if result.existing:
            self._metrics.writes.labels("existing").inc(result.existing)
        return WriteOutcome(Written.STORED, count)
