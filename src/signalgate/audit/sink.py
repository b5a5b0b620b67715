"""`JournalAuditSink`: the `AuditSink` the Gateway's pipeline emits to when DataStorage is set.

`emit` stages an event in the journal; the HTTP layer awaits `commit()` before it answers, so
a 2xx means the signal's audit events are on disk. When the journal's backlog is over its
bound (`datastorage.spoolMaxBytes`) the sink stops `accepting()`: with `audit.onBacklogFull:
reject` the Gateway answers signals 503 + Retry-After and `/readyz` 503; with `drop` events
are dropped and counted in `audit_events_dropped_total{reason="backlog_full"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from signalgate.audit.journal import FAILURE_RETRY_AFTER, Journal, JournalUnavailable
from signalgate.audit.relay import Relay
from signalgate.audit.settings import AuditSettings, DeliverySettings
from signalgate.common.audit import Refusal
from signalgate.common.ids import new_uuid
from signalgate.common.secrets import hide_secrets
from signalgate.common.tasks import cancel_and_wait

log = logging.getLogger("signalgate.audit")

# every reason an event is given up on: the journal over its bound (drop mode), and the
# relay's (refused by DataStorage, a conflicting id, older than DataStorage accepts)
DROP_REASONS = ("backlog_full", "journal_failing", "rejected", "conflict", "expired")
# a journal over its bound drains as fast as DataStorage takes events: seconds, not one
BACKLOG_RETRY_AFTER = 30

__all__ = ["JournalAuditSink", "JournalUnavailable"]


class JournalAuditSink:
    def __init__(
        self,
        delivery: DeliverySettings,
        audit: AuditSettings,
        journal_dir: Path,
        registry: CollectorRegistry,
        *,
        extension_types: frozenset[str] = frozenset(),
        service: str = "gateway",
        transport: httpx.AsyncBaseTransport | None = None,
        legacy_spool: Path | None = None,
        stranded: Sequence[Path] = (),
    ) -> None:
        """`stranded`: journals no process writes any more (other workers', left by a run
        with more of them), delivered beside this one's and then removed."""
        self._delivery = delivery
        self._audit = audit
        self._service = service
        self._extension_types = extension_types
        self._transport = transport
        self._stranded = list(stranded)
        self._stranded_tasks: list[asyncio.Task[None]] = []
        # the stranded journals not delivered yet, opened (a Journal) or not yet (None)
        self._stranded_left: dict[Path, Journal | None] = {}
        self.journal = Journal(
            journal_dir, audit.segment_bytes, legacy_spool, commit_timeout=audit.commit_timeout
        )
        self._dropped = Counter(
            "audit_events_dropped",
            "Audit events given up on (backlog full, too old, refused by DataStorage)",
            ["service", "reason"],
            registry=registry,
        )
        for reason in DROP_REASONS:  # each series exists at 0, so an alert on it can fire
            self._dropped.labels(service, reason)
        self._buffered = Gauge(
            "audit_events_buffered",
            "Audit events staged, waiting for the journal's next fsync",
            registry=registry,
        )
        self._spooled = Gauge(
            "audit_events_spooled",
            "Audit events in the journal not yet confirmed by DataStorage (with those of "
            "journals left by workers no longer running, once opened)",
            registry=registry,
        )
        self._buffered.set_function(lambda: self.journal.pending_events)
        self._spooled.set_function(self._spooled_events)
        # what an operator alerts on before signals are refused: the journal's bytes against
        # its bound (`audit.spoolMaxBytes`), and whether signals are taken at all
        Gauge(
            "audit_journal_bytes",
            "Bytes of audit events in the journal not yet confirmed by DataStorage",
            registry=registry,
        ).set_function(lambda: self.journal.backlog_bytes + self.journal.pending_bytes)
        Gauge(
            "audit_journal_max_bytes",
            "The journal's bound (datastorage.spoolMaxBytes): signals are refused beyond it",
            registry=registry,
        ).set(delivery.spool_max_bytes)
        Gauge(
            "audit_accepting",
            "1 while the audit journal takes events; 0 while it takes none (backlog full, "
            "journal failing): signals are then answered 503 (audit.onBacklogFull: reject) "
            "or their events dropped (drop)",
            registry=registry,
        ).set_function(lambda: 1.0 if self.accepting() else 0.0)
        self.relay = Relay(
            self.journal, delivery, extension_types, self._dropped, service, transport
        )
        self._task: asyncio.Task[None] | None = None

    # -- AuditSink ---------------------------------------------------------------------------

    def accepting(self) -> bool:
        return self.refusal() is None

    def refusal(self) -> Refusal | None:
        """Why no events are taken now: the journal over its bound (until DataStorage catches
        up), or its disk failing (for `journal.FAILURE_HOLD` after a failed write)."""
        backlog = self.journal.backlog_bytes + self.journal.pending_bytes
        if backlog >= self._delivery.spool_max_bytes:
            return Refusal(
                "backlog_full",
                "the audit journal is over its bound (datastorage.spoolMaxBytes): DataStorage "
                "is not taking events fast enough",
                BACKLOG_RETRY_AFTER,
            )
        if self.journal.failing():
            return Refusal(
                "journal_failing",
                f"the audit journal cannot write: {self.journal.last_failure}",
                FAILURE_RETRY_AFTER,
            )
        return None

    def emit(self, event: dict[str, Any]) -> None:
        if not event.get("event_id"):  # the envelope builders set it; same recipe here
            event = {**event, "event_id": new_uuid()}
        if self._audit.on_backlog_full == "drop" and (refused := self.refusal()):
            self._dropped.labels(self._service, refused.reason).inc()
            log.error(
                f"audit event dropped: {refused.message} (audit.onBacklogFull=drop)",
                extra={"event_id": event["event_id"], "event_type": event.get("event_type")},
            )
            return
        self.journal.stage(event)

    def mark(self) -> int:
        return self.journal.mark()

    async def commit(self, since: int | None = None) -> None:
        """Wait until every event emitted so far is durable (bounded by audit.commitTimeout);
        raises `JournalUnavailable` when the disk does not confirm in time, or when a write
        failed since `since` (a `mark()`)."""
        await self.journal.commit(since)

    async def start(self) -> None:
        await self.journal.open()
        await self.relay.check_token()
        self._task = asyncio.create_task(self.relay.run(), name="audit-relay")
        self._stranded_left = dict.fromkeys(self._stranded)
        self._stranded_tasks = [
            asyncio.create_task(self._deliver_stranded(path), name=f"audit-relay-{path.name}")
            for path in self._stranded
        ]

    async def _deliver_stranded(self, directory: Path) -> None:
        """Deliver a journal nothing writes any more, with its own relay (retrying with
        backoff while DataStorage is away), then remove it. Stopped early, it stays for the
        next start; a crash before the removal delivers its rest again (stored once)."""
        # one another process still holds (its worker stopping) is left for the next start
        journal = Journal(directory, self._audit.segment_bytes, held_wait=0.0)
        try:
            await journal.open()
        except OSError as exc:
            log.error(
                "cannot open a stranded audit journal; it stays for the next start",
                extra={"path": str(directory), "error": str(exc)},
            )
            with contextlib.suppress(OSError):
                await journal.close()  # its threads
            return
        self._stranded_left[directory] = journal
        relay = Relay(
            journal,
            self._delivery,
            self._extension_types,
            self._dropped,
            self._service,
            self._transport,
        )
        log.info(
            "delivering the audit journal of a worker no longer running",
            extra={"path": str(directory), "events": journal.backlog_events},
        )
        try:
            await relay.deliver_all()
            self._stranded_left.pop(directory, None)
        finally:
            await relay.close()
            await journal.close()
        try:
            await asyncio.to_thread(shutil.rmtree, directory)
        except OSError as exc:  # delivered all the same; a later start finds it empty
            log.warning(
                "a delivered audit journal could not be removed",
                extra={"path": str(directory), "error": str(exc)},
            )
            return
        log.info("delivered and removed a stranded audit journal", extra={"path": str(directory)})

    async def stop(self) -> None:
        """Write what is staged, try delivering the backlog for a while, then close.

        Nothing is lost by stopping early: the journal is on disk and the next start
        delivers it.
        """
        await cancel_and_wait(*self._stranded_tasks, self._task)
        self._task, self._stranded_tasks = None, []
        try:
            # an OSError is the journal's own files failing: what is left stays for next time
            with contextlib.suppress(TimeoutError, JournalUnavailable, OSError):
                async with asyncio.timeout(self._delivery.stop_flush_timeout):
                    await self.journal.commit()
                async with asyncio.timeout(self._delivery.stop_flush_timeout):
                    await self.relay.drain()
        finally:
            await self.relay.close()
            await self.journal.close()
        if self.journal.backlog_events:
            log.warning(
                "audit events left in the journal for the next start",
                extra={"count": self.journal.backlog_events},
            )

    def status(self) -> dict[str, Any]:
        return {
            "sink": "datastorage",
            "url": self._delivery.url and hide_secrets(self._delivery.url),
            "reachable": self.relay.reachable,
            "buffered": self.journal.pending_events,
            "spooled": self.journal.backlog_events,
            "journalBytes": self.journal.backlog_bytes,
            "journalMaxBytes": self._delivery.spool_max_bytes,
            "accepting": self.accepting(),
            "onBacklogFull": self._audit.on_backlog_full,
            "delivered": self.relay.delivered,
            "last_error": self.relay.last_error,
            **self._stranded_status(),
        }

    def _spooled_events(self) -> int:
        """Events journaled and not yet confirmed: this process's and the stranded journals'
        (what an alert on DataStorage falling behind must count)."""
        return self.journal.backlog_events + sum(
            journal.backlog_events for journal in self._stranded_left.values() if journal
        )

    def _stranded_status(self) -> dict[str, Any]:
        """Journals left by workers no longer running, while they are being delivered: how
        many, and their events not yet confirmed (those of a journal not opened yet are
        not known)."""
        if not self._stranded_left:
            return {}
        opened = [journal for journal in self._stranded_left.values() if journal is not None]
        return {
            "stranded": {
                "journals": len(self._stranded_left),
                "spooled": sum(journal.backlog_events for journal in opened),
                "journalBytes": sum(journal.backlog_bytes for journal in opened),
            }
        }
