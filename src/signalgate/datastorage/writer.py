"""The write decision: store the batch, else queue it, else say how many were lost.

This is the one place that decides what a write answers:
- stored (or already stored with the same content) → 201;
- the database failed (`StoreUnavailable`) → the dead-letter queue takes the events → 202,
  because a caller cannot do better than our queue and must not block on our database;
- the queue failed too → `EventsLost` → 500 naming the count, so the caller knows to keep them;
- the queue is at its bound (`dlq.maxBytes`) → `QueueFull` → 503 with Retry-After: nothing was
  taken, and a sender that retries (the Gateway's journal relay) gets the batch in once the
  replay has drained the queue. Not a 202 (it would be lost), and not the 500 of a loss;
- a parent is missing but waits in the dead-letter queue (the client got 202 for it during an
  outage) → the batch is queued behind it → 202: refusing it would lose an event whose parent
  we promised to store, and the replay stores the parent first;
- the queue cannot say whether it holds a missing parent → `ParentsUnconfirmed` → 503: a 400
  would tell the client to drop an event that may be fine;
- an id of the batch already waits in the dead-letter queue (accepted with 202 during an
  outage) → the batch is queued behind it → 202: written now, a different second write would
  win over the first, acknowledged one;
- `Conflict` / `MissingParent` (a parent neither stored, nor earlier in the batch, nor
  queued) pass through (409 / 400): retrying cannot change them, so they are never queued.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from signalgate.common.logging import SampledLog
from signalgate.datastorage.dlq import DeadLetterQueue, Waiting
from signalgate.datastorage.errors import (
    Conflict,
    DeadLetterQueueFull,
    DeadLetterUnavailable,
    ForeignParent,
    MissingParent,
    ParentsUnconfirmed,
    StoreUnavailable,
)
from signalgate.datastorage.events import AuditEvent
from signalgate.datastorage.metrics import DataStorageMetrics
from signalgate.datastorage.store import AuditStore, WriteResult

log = logging.getLogger(__name__)
queued_log = SampledLog(log)


class Written(enum.Enum):
    STORED = "stored"
    QUEUED = "queued"


@dataclass(frozen=True)
class WriteOutcome:
    written: Written
    count: int
    why: str = ""  # why a batch was queued, for its sender (the 202's message)


class EventsLost(Exception):
    """Neither the database nor the dead-letter queue took the events."""

    def __init__(self, count: int) -> None:
        self.count = count
        super().__init__(
            f"the audit database and the dead-letter queue are both unavailable: "
            f"{count} event(s) were not stored; retry later"
        )


class QueueFull(Exception):
    """The batch had to go to the dead-letter queue (the database down, or earlier letters
    it must wait behind), and the queue is at its bound: nothing was taken; retry later."""

    def __init__(self, count: int, why: str, max_bytes: int) -> None:
        self.count = count
        super().__init__(
            f"{why} and the dead-letter queue is full (dlq.maxBytes: {max_bytes:,} bytes): "
            f"{count} event(s) were not stored nor queued; retry later, once the queue drains"
        )


# how long after the refusal of a full queue its sender is asked to try again (seconds):
# the queue drains only once the database is back, and a retry a second from every sender
# would be refused as many times
QUEUE_FULL_RETRY_AFTER = 30

# how long a write that failed keeps its target ("database", "dead_letter_queue") reported as
# failing in /readyz after it, unless a write to it succeeds first: a ping can answer while
# writes fail (a full disk), and no traffic may come to clear it
WRITE_FAILURE_HOLD = 5.0


class AuditWriter:
    def __init__(
        self,
        store: AuditStore,
        dlq: DeadLetterQueue,
        metrics: DataStorageMetrics,
    ) -> None:
        self._store = store
        self._dlq = dlq
        self._metrics = metrics
        # target -> (monotonic time, why) of its last failed write, until one succeeds
        self._failed: dict[str, tuple[float, str]] = {}

    def failing(self, target: str) -> str | None:
        """Why writes to `target` failed lately (within WRITE_FAILURE_HOLD), or None."""
        failed = self._failed.get(target)
        if failed is None or time.monotonic() - failed[0] > WRITE_FAILURE_HOLD:
            return None
        return failed[1]

    async def write(self, events: Sequence[AuditEvent]) -> WriteOutcome:
        started = time.perf_counter()
        try:
            return await self._write(events)
        finally:
            self._metrics.write_duration.observe(time.perf_counter() - started)

    async def _write(self, events: Sequence[AuditEvent]) -> WriteOutcome:
        try:
            return await self._decide(events)
        except ParentsUnconfirmed:
            self._metrics.writes.labels("unconfirmed").inc(len(events))
            raise
        except Conflict:
            self._metrics.writes.labels("conflict").inc(len(events))
            raise
        except (MissingParent, ForeignParent):
            self._metrics.writes.labels("rejected").inc(len(events))
            raise

    async def _decide(self, events: Sequence[AuditEvent]) -> WriteOutcome:
        if queued := await self._already_queued(events):
            # behind the letters of its ids, not into the database before them: the first
            # write of an id stands even while it waits for replay (written now, a different
            # second write would win, and the acknowledged first be refused as a conflict);
            # the replay stores the first, then the second is the same or a conflict
            return await self._queue_behind(
                events,
                [waiting.due for waiting in queued.values()],
                f"earlier writes of {len(queued)} of their ids",
            )
        try:
            result = await self._store.write(events)
        except StoreUnavailable as store_error:
            self._failed["database"] = (time.monotonic(), str(store_error))
            await self._refuse_foreign_parents_known_here(events)
            return await self._queue(events, store_error)
        except MissingParent as missing:
            return await self._behind_parents(events, missing)
        self._failed.pop("database", None)
        return self._stored(result, len(events))

    def _stored(self, result: WriteResult, count: int) -> WriteOutcome:
        if result.stored:
            self._metrics.writes.labels("stored").inc(result.stored)
        if result.existing:
            self._metrics.writes.labels("existing").inc(result.existing)
        return WriteOutcome(Written.STORED, count)

    async def _queue(
        self, events: Sequence[AuditEvent], store_error: StoreUnavailable
    ) -> WriteOutcome:
        """The database is down: the dead-letter queue takes the batch, or it is lost.

        Due at once: the replay only pings a database it found down, and stores what is due
        as soon as it answers. Due after the first step of `dlq.backoff` instead, a blip of
        a second left 202'd events out of queries and chains for that minute (an outside
        check); the schedule is for batches the database refuses while it answers."""
        count = len(events)
        try:
            await self._dlq.put(events, due=time.time())
        except DeadLetterQueueFull as full:
            raise self._full(events, "the audit database is unavailable", full) from full
        except DeadLetterUnavailable as queue_error:
            self._failed["dead_letter_queue"] = (time.monotonic(), str(queue_error))
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
        self._failed.pop("dead_letter_queue", None)
        self._metrics.writes.labels("dead_lettered").inc(count)
        queued_log.log(  # one line per batch during an outage was megabytes an hour
            logging.WARNING,
            "queued",
            "database unavailable: events queued for replay",
            {"count": count, "error": str(store_error)},
        )
        return WriteOutcome(Written.QUEUED, count, "the audit database is unavailable")

    async def _behind_parents(
        self, events: Sequence[AuditEvent], missing: MissingParent
    ) -> WriteOutcome:
        """Queue the batch if every missing parent waits in the dead-letter queue, else 400.

        A parent the queue no longer holds may have been replayed since the store looked:
        the replay stores a letter before it acks it, so a second look at the store settles
        it — stored now, or missing for good. A parent waiting there with another
        correlation id is refused now (400), as it is once stored: queued, its child could
        only be buried at replay, after its sender was told 202.
        """
        queued = await self._waiting(set(missing.indexes.values()))
        if not set(missing.indexes.values()) <= queued.keys():
            try:
                result = await self._store.write(events)
            except StoreUnavailable as store_error:  # down again meanwhile: an outage like any
                return await self._queue(events, store_error)
            except MissingParent as again:
                missing = again
            else:
                return self._stored(result, len(events))
            absent = {i: p for i, p in missing.indexes.items() if p not in queued}
            if absent:
                raise MissingParent(absent)
        _refuse_foreign(events, missing.indexes, queued)
        parents = set(missing.indexes.values())
        return await self._queue_behind(
            events, [queued[parent].due for parent in parents], f"their {len(parents)} parent(s)"
        )

    async def _refuse_foreign_parents_known_here(self, events: Sequence[AuditEvent]) -> None:
        """The database is down, so whether a parent is stored cannot be known; but a parent
        earlier in the batch, or waiting in the dead-letter queue, can be: a child naming one
        of another correlation id is refused now (400), as when the database answers.
        Queued, it could only be buried at the replay after its sender was told 202 (an
        outside check). A queue that cannot be asked leaves the batch to `_queue`."""
        parents = {i: e.parent_event_id for i, e in enumerate(events) if e.parent_event_id}
        if not parents:
            return
        known = {e.event_id: Waiting(0.0, e.correlation_id) for e in events}
        elsewhere = {p for p in parents.values() if p not in known}
        if elsewhere:
            with contextlib.suppress(DeadLetterUnavailable):
                known |= await self._dlq.waiting(elsewhere)
        _refuse_foreign(events, parents, known)

    async def _already_queued(self, events: Sequence[AuditEvent]) -> dict[str, Waiting]:
        """Which of the batch's ids wait in the dead-letter queue (accepted with 202 during an
        outage, not replayed yet). A queue that cannot be asked holds nothing we can see: the
        batch is written as usual, as while the queue is down."""
        try:
            return await self._dlq.waiting({event.event_id for event in events})
        except DeadLetterUnavailable:
            return {}

    async def _queue_behind(
        self, events: Sequence[AuditEvent], ahead: Sequence[float], what: str
    ) -> WriteOutcome:
        """Queue the batch due no earlier than the letters `ahead` of it (their due times),
        so the replay meets those first → 202; a queue that cannot take it → 503."""
        due = max(time.time(), *ahead)
        try:
            await self._dlq.put(events, due=due)
        except DeadLetterQueueFull as full:
            why = f"{len(events)} event(s) must wait behind {what} in the dead-letter queue"
            raise self._full(events, why, full) from full
        except DeadLetterUnavailable as exc:
            raise ParentsUnconfirmed(
                f"{len(events)} event(s) wait behind {what} in the dead-letter queue, which "
                f"cannot take them now ({exc}); retry later"
            ) from exc
        self._metrics.writes.labels("dead_lettered").inc(len(events))
        queued_log.log(  # writers of parent chains come here on every request of an outage
            logging.INFO,
            "queued-behind",
            "events queued behind earlier letters in the dead-letter queue",
            {"count": len(events), "behind": what},
        )
        return WriteOutcome(
            Written.QUEUED, len(events), f"they wait behind {what} in the dead-letter queue"
        )

    def _full(self, events: Sequence[AuditEvent], why: str, full: DeadLetterQueueFull) -> QueueFull:
        """The refusal of a batch the full queue did not take: counted, and said once in a
        while (every request of an outage comes here once the queue is full). Readiness
        learns it from the queue's ping, which says full until the queue has room again:
        held as a failed write, it said so for seconds after the replay had emptied it."""
        count = len(events)
        self._metrics.writes.labels("queue_full").inc(count)
        queued_log.log(
            logging.ERROR,
            "queue-full",
            "dead-letter queue full (dlq.maxBytes): events refused with 503 until it drains",
            {"count": count, "why": why, "error": str(full)},
        )
        return QueueFull(count, why, full.max_bytes)

    async def _waiting(self, parents: set[str]) -> dict[str, Waiting]:
        try:
            return await self._dlq.waiting(parents)
        except DeadLetterUnavailable as exc:
            first = min(parents)
            raise ParentsUnconfirmed(
                f"parent_event_id {first} is not stored and the dead-letter queue, where it "
                f"may wait for replay, cannot be asked ({exc}); retry later"
            ) from exc


def _refuse_foreign(
    events: Sequence[AuditEvent], parents: Mapping[int, str], known: Mapping[str, Waiting]
) -> None:
    """Raise `ForeignParent` for the events (batch index → parent id) whose parent is known
    (`known`: id → its correlation id) with a correlation id other than theirs."""
    foreign = {
        index: (parent, known[parent].correlation_id)
        for index, parent in parents.items()
        if parent in known
        and known[parent].correlation_id not in ("", events[index].correlation_id)
    }
    if foreign:
        raise ForeignParent(foreign)
