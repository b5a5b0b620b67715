"""What every dead-letter queue backend offers: letters in, due letters out, moved on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from signalgate.datastorage.events import AuditEvent

STREAM = "audit:dlq"
DEAD_STREAM = "audit:dlq:dead"


@dataclass(frozen=True)
class Letter:
    """One queued event: `key` names it in its backend; `attempts` counts failed replays."""

    key: str
    fields: dict[str, Any]
    attempts: int
    due: float


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
        """Up to `limit` letters due by `now` in queue order (`None`: all, due or not)."""
        ...

    async def ack(self, letters: Sequence[Letter]) -> None: ...

    async def reschedule(self, letters: Sequence[Letter]) -> None:
        """Put letters back with their new `attempts` and `due`."""
        ...

    async def bury(self, letters: Sequence[Letter], reason: str) -> None:
        """Move letters to the dead queue."""
        ...

    async def depth(self) -> int: ...
