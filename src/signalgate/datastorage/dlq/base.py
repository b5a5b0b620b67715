"""What every dead-letter queue backend offers: letters in, due letters out, moved on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from signalgate.datastorage.events import AuditEvent

STREAM = "audit:dlq"
DEAD_STREAM = "audit:dlq:dead"
# the dead letters the commands hold at once (`dead_pages`): the dead store can be an
# outage's worth of events
DEAD_PAGE = 500


@dataclass(frozen=True)
class Letter:
    """One queued event: `key` names it in its backend; `attempts` counts failed replays.

    A dead letter also says why it was buried (`reason`) and when (`buried`, seconds since
    the epoch; None for one buried before burials were timed).
    """

    key: str
    fields: dict[str, Any]
    attempts: int
    due: float
    reason: str = ""
    buried: float | None = None

    @property
    def event_id(self) -> str:
        """The queued event's id ('' for a letter too damaged to carry one)."""
        return str(self.fields.get("event_id", ""))

    @property
    def waiting(self) -> Waiting:
        return Waiting(self.due, str(self.fields.get("correlation_id", "")))


class Waiting(NamedTuple):
    """What the write path needs of a queued event: when its letter is due (a child is queued
    no earlier), and its correlation id (a child of another correlation id is refused, as it
    is once its parent is stored)."""

    due: float
    correlation_id: str


def readable(
    letters: Sequence[Letter],
) -> tuple[list[tuple[Letter, AuditEvent]], list[Letter]]:
    """`letters` with their events, and those whose fields no longer read as an event (they
    are buried, or stay dead): what both the replay and `requeue-dead` need."""
    events: list[tuple[Letter, AuditEvent]] = []
    invalid: list[Letter] = []
    for letter in letters:
        try:
            events.append((letter, AuditEvent.from_fields(letter.fields)))
        except ValueError:  # pydantic's ValidationError is a ValueError
            invalid.append(letter)
    return events, invalid


class DeadLetterQueue(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return if the queue can take events, else raise `DeadLetterUnavailable`."""
        ...

    async def put(self, events: Sequence[AuditEvent], due: float) -> None:
        """Queue every event or none (raises `DeadLetterUnavailable`)."""
        ...

    async def due(self, now: float | None, limit: int) -> list[Letter]:
        """Up to `limit` letters due by `now`, earliest due first, equal dues in queue order.

        `None` drains: the first `limit` letters in queue order, due or not. A child queued
        after its parent is due no earlier than it (the writer sees to that), so this order
        replays the parent first.
        """
        ...

    async def waiting(self, event_ids: Collection[str]) -> dict[str, Waiting]:
        """Which of `event_ids` wait in this queue (not dead), each with its letter's due and
        correlation id.

        The write path asks this to queue a child behind its queued parent instead of
        refusing it, and the replay to let a child wait for its parent without using up
        its attempts.
        """
        ...

    async def ack(self, letters: Sequence[Letter]) -> None: ...

    async def reschedule(self, letters: Sequence[Letter]) -> None:
        """Put letters back with their new `attempts` and `due`."""
        ...

    async def bury(self, letters: Sequence[Letter], reason: str) -> None:
        """Move letters to the dead queue."""
        ...

    async def depth(self) -> int: ...

    async def dead(self) -> list[Letter]:
        """The letters buried so far, in the order they were, all at once (the commands read
        `dead_pages`)."""
        ...

    def dead_pages(self, size: int) -> AsyncIterator[list[Letter]]:
        """The letters buried so far, in the order they were, `size` at a time: the memory of
        a page, whatever the dead store holds."""
        ...

    async def forget_dead(self, letters: Sequence[Letter]) -> None:
        """Remove `letters` from the dead store (`requeue-dead`, once they are queued)."""
        ...
