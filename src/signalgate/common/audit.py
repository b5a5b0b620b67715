"""Where a service hands its audit events: the `AuditSink` interface and a log-only sink.

Emitting never blocks and never fails the caller: a sink buffers, batches and retries on its
own. Events are DataStorage request envelopes (see `spec/datastorage.md` section 2) as plain
dicts, each with a client-made `event_id` so retries are stored once.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger("signalgate.audit")


class AuditSink(Protocol):
    def emit(self, event: dict[str, Any]) -> None:
        """Queue one event for delivery; returns at once."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Flush what is buffered (bounded in time); keep the rest for the next start."""
        ...

    def status(self) -> dict[str, Any]:
        """Delivery state for `/readyz` (e.g. reachable, buffered, spooled)."""
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

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"sink": "log"}
