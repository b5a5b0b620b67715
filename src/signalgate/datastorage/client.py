"""`DataStorageAuditSink`: the Gateway's delivery of audit events to DataStorage.

Emitting never blocks or fails signal handling. Events wait in a bounded memory buffer and
leave in batches (`batch_size`, or every `flush_interval`) for
`POST <url>/api/v1/audit/events/batch`; failures are retried with backoff (1 s doubling to
30 s). What the buffer cannot hold goes to a bounded spool file, replayed in order when
DataStorage is back; while the spool holds anything, new events queue behind it, so delivery
stays first-in first-out. Only a full spool, or an event older than DataStorage accepts
(7 days), drops events, counted in `audit_events_dropped_total{service, reason}`.

The spool's file work (reading, committing, compacting, fsync, closing) runs in one worker
thread of its own, never on the event loop; `emit()` only appends a line to the open spool
file (a buffered write, no fsync), which is cheap enough to stay synchronous.

Every event carries an `event_id` (made here when missing), so a batch retried after a lost
answer is stored once.

Answers, and why: 201/202 delivered (on 202 DataStorage's own queue holds them); 400 drops
the items its `field_errors` name (retrying cannot fix them) and resends the rest; 409 is
resolved event by event (the conflicting one is dropped); 413 halves the batch; 401/403 and
everything else are retried, since they need a person or time, not a different request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from signalgate.datastorage.events import MAX_AGE, parse_rfc3339
from signalgate.datastorage.spool import Spool

log = logging.getLogger("signalgate.audit")

BATCH_PATH = "/api/v1/audit/events/batch"

T = TypeVar("T")


@dataclass(frozen=True)
class SinkOptions:
    """The sink's tuning, resolved once (the constructor's keyword arguments)."""

    buffer_size: int = 10_000
    batch_size: int = 100
    flush_interval: float = 1.0
    timeout: float = 10.0
    spool_max_bytes: int = 100 * 1024 * 1024
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    stop_flush_timeout: float = 10.0
    max_age: timedelta = MAX_AGE


class _Metrics:
    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.dropped = Counter(
            "audit_events_dropped",
            "Audit events given up on (spool full, too old, refused by DataStorage)",
            ["service", "reason"],
            registry=registry,
        )
        self.buffered = Gauge(
            "audit_events_buffered", "Audit events waiting in memory", registry=registry
        )
        self.spooled = Gauge(
            "audit_events_spooled", "Audit events waiting in the spool file", registry=registry
        )
        self.service = service


@dataclass
class _Batch:
    """Events taken from the buffer or the spool; `events` shrinks as they are settled."""

    events: list[dict[str, Any]]
    taken: int  # how many source entries this batch covers
    from_spool: bool
    spool_offset: int = 0
    chunk: int = 0  # how many to send per request (halved on 413, one at a time after 409)


class DataStorageAuditSink:
    """An `AuditSink` delivering to DataStorage. `start()` in the service's event loop."""

    def __init__(
        self,
        url: str,
        token_file: Path | None,
        spool_path: Path,
        registry: CollectorRegistry,
        *,
        timeout: float = 10.0,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        buffer_size: int = 10_000,
        spool_max_bytes: int = 100 * 1024 * 1024,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        stop_flush_timeout: float = 10.0,
        max_age: timedelta = MAX_AGE,
        service: str = "gateway",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._token_file = token_file
        self._options = SinkOptions(
            buffer_size=buffer_size,
            batch_size=batch_size,
            flush_interval=flush_interval,
            timeout=timeout,
            spool_max_bytes=spool_max_bytes,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            stop_flush_timeout=stop_flush_timeout,
            max_age=max_age,
        )
        self._metrics = _Metrics(registry, service)
        self._spool = Spool(spool_path, self._options.spool_max_bytes)
        self._spool_thread: ThreadPoolExecutor | None = None
        self._transport = transport
        self._buffer: deque[dict[str, Any]] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._reachable: bool | None = None
        self._last_error = ""
        self._delivered = 0
        self._oldest_at = 0.0
        self._current: _Batch | None = None

    # -- AuditSink ------------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        """Queue one event; returns at once, whatever the state of DataStorage.

        Spooling stays synchronous on purpose: it is one buffered append and flush to the
        already open spool file (no fsync, no open), and a compaction running in the spool
        thread holds the spool's lock only for its last few lines and the file swap.
        """
        if not event.get("event_id"):
            event = {**event, "event_id": str(uuid.uuid4())}
        if self._spool.count or len(self._buffer) >= self._options.buffer_size:
            self._to_spool(event)
        else:
            if not self._buffer:
                self._oldest_at = time.monotonic()
            self._buffer.append(event)
            if len(self._buffer) >= self._options.batch_size:
                self._wakeup.set()
        self._update_gauges()

    async def start(self) -> None:
        self._spool_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-spool")
        await self._spool_io(self._spool.open)
        self._client = httpx.AsyncClient(
            base_url=self._url, timeout=self._options.timeout, transport=self._transport
        )
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="audit-delivery")
        self._update_gauges()
        if self._spool.count:
            log.info("audit spool has events to replay", extra={"spooled": self._spool.count})

    async def stop(self) -> None:
        """Deliver what is buffered for up to `stop_flush_timeout`, then spool the rest."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            # on timeout wait_for cancels the task; what it was sending stays buffered
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._task, self._options.stop_flush_timeout)
            self._task = None
        current, self._current = self._current, None
        if current is not None and not current.from_spool:
            # what this batch already settled (delivered or dropped) is not spooled again
            for _ in range(current.taken):
                self._buffer.popleft()
            self._buffer.extendleft(reversed(current.events))
        left = len(self._buffer)
        while self._buffer:
            self._to_spool(self._buffer.popleft())
        if self._spool_thread is not None:
            try:
                # queued behind whatever the cancelled task left running there (a compaction)
                await self._spool_io(self._spool.close)
            finally:
                self._spool_thread.shutdown(wait=False)
                self._spool_thread = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._update_gauges()
        if left:
            log.warning("audit events spooled at shutdown", extra={"count": left})

    def status(self) -> dict[str, Any]:
        return {
            "sink": "datastorage",
            "url": self._url,
            "reachable": self._reachable,
            "buffered": len(self._buffer),
            "spooled": self._spool.count,
            "delivered": self._delivered,
            "last_error": self._last_error,
        }

    # -- delivery loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        """Send one batch at a time, retrying that same batch until it is settled."""
        backoff = self._options.backoff_initial
        while True:
            if self._current is None:
                self._current = await self._next_batch()
            if self._current is None:
                if self._closing:
                    return
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._until_flush())
                continue
            if await self._deliver(self._current):
                await self._settle(self._current)
                self._current = None
                backoff = self._options.backoff_initial
                continue
            if self._closing:
                return  # DataStorage is down: stop() spools the rest
            await self._pause(backoff)
            backoff = min(backoff * 2, self._options.backoff_max)

    async def _next_batch(self) -> _Batch | None:
        """The oldest events first: the memory buffer, then the spool behind it."""
        size = self._options.batch_size
        if self._buffer:
            full = len(self._buffer) >= size
            if not (full or self._closing or self._until_flush() <= 0):
                return None
            taken = min(size, len(self._buffer))
            events = [self._buffer[i] for i in range(taken)]
            return _Batch(events, taken, from_spool=False, chunk=taken)
        if self._spool.count:  # spooled events are late already: no batching wait
            # emit() keeps spooling while the spool holds anything, so the buffer stays
            # empty during this wait and the order holds
            events, offset = await self._spool_io(functools.partial(self._spool.peek, size))
            return _Batch(events, len(events), True, offset, chunk=max(1, len(events)))
        return None

    def _until_flush(self) -> float:
        """Seconds until the oldest buffered event has waited one flush interval."""
        if not self._buffer:
            return self._options.flush_interval
        return self._oldest_at + self._options.flush_interval - time.monotonic()

    async def _settle(self, batch: _Batch) -> None:
        if batch.from_spool:
            commit = functools.partial(self._spool.commit, batch.spool_offset, batch.taken)
            await self._spool_io(commit)
        else:
            for _ in range(batch.taken):
                self._buffer.popleft()
            self._oldest_at = 0.0  # the rest has waited behind this batch: due now
        self._update_gauges()

    async def _spool_io(self, call: Callable[[], T]) -> T:
        """Run one spool file operation in the spool's own thread.

        A dedicated single thread rather than `asyncio.to_thread`: the calls run one after
        another in the order they were made, including the `close()` that `stop()` queues
        behind a commit (and its compaction) still running for a delivery task it gave up
        on, since cancelling the awaiting task does not stop the thread. A long compaction
        or fsync also never holds a thread of the loop's default executor, which DNS lookups
        and other `to_thread` users share.
        """
        if self._spool_thread is None:
            raise RuntimeError("audit sink is not started: call start() first")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._spool_thread, call)

    async def _pause(self, seconds: float) -> None:
        """Back off, but wake for `stop()` so shutdown is not held by a 30 s wait."""
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wait_closing(), seconds)

    async def _wait_closing(self) -> None:
        while not self._closing:
            await self._wakeup.wait()
            self._wakeup.clear()

    async def _deliver(self, batch: _Batch) -> bool:
        """True when every event of the batch is settled: delivered, or dropped for good.

        Settled events leave `batch.events` at once, so a retry after a failure resends only
        the rest and no drop is counted twice.
        """
        self._remove_expired(batch)
        while batch.events:
            chunk = batch.events[: batch.chunk]
            try:
                answer = await self._post(chunk)
            except httpx.HTTPError as exc:
                return self._failed(f"{type(exc).__name__}: {exc}")
            status = answer.status_code
            if status in (201, 202):
                del batch.events[: len(chunk)]
                self._reachable = True
                self._delivered += len(chunk)
            elif status == 400:
                refused = self._refused(answer, len(chunk))
                self._drop(len(refused), "rejected", answer.text[:300])
                batch.events = [e for i, e in enumerate(batch.events) if i not in refused]
            elif status == 409 and len(chunk) > 1:
                batch.chunk = 1  # find the conflicting one
            elif status == 409:
                self._drop(1, "conflict", answer.text[:300])
                del batch.events[0]
            elif status == 413 and len(chunk) > 1:
                batch.chunk = len(chunk) // 2
            else:
                return self._failed(f"DataStorage answered {status}: {answer.text[:200]}")
        return True

    @staticmethod
    def _refused(answer: httpx.Response, size: int) -> set[int]:
        """Which items of a 400 batch DataStorage named (all of them when it named none)."""
        try:
            errors = answer.json().get("field_errors") or {}
        except ValueError:
            errors = {}
        named = {int(head) for key in errors if (head := key.split(".", 1)[0]).isdigit()}
        refused = {index for index in named if index < size}
        return refused or set(range(size))

    async def _post(self, events: Sequence[dict[str, Any]]) -> httpx.Response:
        if self._client is None:
            raise httpx.TransportError("audit sink is not started")
        token = await asyncio.to_thread(self._token) if self._token_file else None
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return await self._client.post(BATCH_PATH, json=list(events), headers=headers)

    def _token(self) -> str:
        """Read on every request: rotated (service-account) tokens apply without a restart."""
        assert self._token_file is not None
        try:
            return self._token_file.read_text().strip()
        except OSError as exc:
            log.error("cannot read the DataStorage token file", extra={"error": str(exc)})
            return ""

    def _remove_expired(self, batch: _Batch) -> None:
        oldest = datetime.now(UTC) - self._options.max_age
        fresh = []
        for event in batch.events:
            try:
                expired = parse_rfc3339(event.get("event_timestamp")) < oldest
            except ValueError:
                expired = False  # DataStorage will say what is wrong with it
            if expired:
                self._drop(1, "expired", "older than DataStorage accepts")
            else:
                fresh.append(event)
        batch.events = fresh

    def _failed(self, error: str) -> bool:
        if self._reachable is not False or error != self._last_error:
            log.warning("audit delivery failed; will retry", extra={"error": error})
        self._reachable = False
        self._last_error = error
        return False

    def _to_spool(self, event: dict[str, Any]) -> None:
        if not self._spool.is_open or not self._spool.append(event):
            self._drop(1, "spool_full", "the audit spool is full")

    def _drop(self, count: int, reason: str, detail: str) -> None:
        self._metrics.dropped.labels(self._metrics.service, reason).inc(count)
        log.error(
            "audit events dropped", extra={"count": count, "reason": reason, "detail": detail}
        )

    def _update_gauges(self) -> None:
        self._metrics.buffered.set(len(self._buffer))
        self._metrics.spooled.set(self._spool.count)
