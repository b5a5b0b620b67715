"""Errors of the audit store and dead-letter queue, shaped by what the caller does with them.

- `StoreUnavailable` — transient (server down, connection lost, database locked): the write
  path sends the events to the dead-letter queue and answers 202; queries answer 503.
- `DeadLetterUnavailable` — the dead-letter queue cannot take events either: 500, events lost.
- `DeadLetterQueueFull` — a `DeadLetterUnavailable`: the queue is at its bound
  (`dlq.maxBytes`) and refuses the batch whole; 503 with Retry-After, nothing acknowledged,
  so the sender retries and nothing is lost.
- `Conflict` — an `event_id` already stored with different content: 409, the first write stands.
- `MissingParent` — a `parent_event_id` that does not exist: 400 naming the items. A parent
  still waiting in the dead-letter queue is not missing: the writer queues its children
  behind it (202).
- `ParentsUnconfirmed` — a `StoreUnavailable`: a parent is not in the database and the
  dead-letter queue, where it may wait, cannot be asked; 503, so the client retries rather
  than drop an event a 400 would call invalid.
- `StoreOutage` — a `StoreUnavailable` raised by `open()` only: the database server cannot
  be reached or is starting up or shutting down; `serve` starts anyway and keeps connecting
  (`opening.py`), commands stop.
- `StoreRefused` — a `StoreUnavailable`: the server answered and refused us for a setting
  (authentication, the database named). Running, a write is queued as in any outage; from
  `open()`, start-up stops with its message.
- `SchemaMismatch` — raised by `open()` only, start-up refuses with its message:
  `SchemaBehind`, the schema is older than this code and not migrated automatically (run
  `signalgate-datastorage migrate`); `SchemaAhead`, the database was made by a newer
  signalgate (upgrade it).
- anything else is a bug and becomes a 500.

Adapters (`sqlite.py`, `postgres.py`, `dlq/`) translate driver errors into these with
`raise ... from exc`; nothing above them knows which driver is in use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class StoreError(Exception):
    """Base of every error the audit store raises on purpose."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or cannot take writes right now."""


class StoreUnreachable(StoreUnavailable):
    """No connection to the database could be made or kept (refused, reset, the server
    starting up or shutting down): the database is down, whatever a ping a moment later
    finds. Not a refusal of what was written: the dead-letter replay waits for the next
    poll rather than putting its letters off by the schedule."""


class StoreOutage(StoreUnavailable):
    """`open()` found the database down, not misconfigured (refused or timed-out connections,
    a server starting up or shutting down): an outage to wait out, not a reason to stop."""


class StoreRefused(StoreUnavailable):
    """The database server answered and refused us: authentication failed or the database
    does not exist. A configuration that can never work when `open()` meets it."""


class ParentsUnconfirmed(StoreUnavailable):
    """A write that depends on the dead-letter queue (its parents, or earlier writes of its
    ids, wait there) while the queue cannot be asked or cannot take it: 503, retry."""


class SchemaMismatch(StoreError):
    """The database schema is not the version this code needs; start-up stops."""


class SchemaBehind(SchemaMismatch):
    """The database schema is older than this code needs and migrating it is the operator's
    step (PostgreSQL without `store.autoMigrate`): the message names the command."""


class SchemaAhead(SchemaMismatch):
    """The database was made by a newer signalgate (its schema version is higher than any
    this code knows): refused on every backend, the database left unchanged."""


class _ByIndex(StoreError):
    """A refusal of some events of a batch, by their index. Rebuilt from `indexes` when
    unpickled: it is raised in the SQLite store's process and crosses to the service."""

    indexes: dict[int, Any]

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.indexes,))


class Conflict(_ByIndex):
    """Events whose id is already stored with different content."""

    def __init__(self, indexes: Mapping[int, str]) -> None:
        self.indexes = dict(indexes)  # batch index -> event_id
        first = next(iter(self.indexes.values()))
        super().__init__(f"event_id {first} is already stored with different content")


class MissingParent(_ByIndex):
    """Events whose `parent_event_id` names no stored event (nor an earlier one in the batch)."""

    def __init__(self, indexes: Mapping[int, str]) -> None:
        self.indexes = dict(indexes)  # batch index -> missing parent id
        first = next(iter(self.indexes.values()))
        super().__init__(f"parent_event_id {first} does not exist")


class ForeignParent(_ByIndex):
    """Events whose `parent_event_id` is an event of another correlation id: a parent link
    may not cross chains (it would tie one trail's story to another's)."""

    def __init__(self, indexes: Mapping[int, tuple[str, str]]) -> None:
        self.indexes = dict(indexes)  # batch index -> (parent id, the parent's correlation id)
        parent, _ = next(iter(self.indexes.values()))
        # the other correlation id is not named: a writer may hold no `audit:read`
        super().__init__(f"parent_event_id {parent} belongs to another correlation id")


class DeadLetterUnavailable(Exception):
    """The dead-letter queue cannot take or hand out events right now."""


class DeadLetterQueueFull(DeadLetterUnavailable):
    """The queue holds as much as it may (`dlq.maxBytes`): it takes no more letters until
    the replay drains it. What it refuses is not lost: its sender is answered 503 with
    Retry-After, and retries. `max_bytes`: the bound, for the answer to name."""

    def __init__(self, message: str, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        super().__init__(message)


class QueueNotDurable(DeadLetterUnavailable):
    """The queue answers but would not keep what it takes through its own restart (a Redis
    without an append-only file): an event answered 202 there could be lost. Found at
    start, it stops start-up; found later, the queue takes nothing until it changes."""
