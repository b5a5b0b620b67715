"""Coalesced duplicates: concurrent firing signals for one fingerprint share a store round trip.

An alert storm is the same signal many times at once. Deciding each one alone costs one
transaction each, all serialised on one row. Here, while a decision for a fingerprint is in
flight, later signals for that fingerprint queue up. When the decision is known, the whole
queue is applied as one statement: `occurrenceCount + N` on that RR, if it is still active.
Each caller is answered only after the commit that covers its own signal.

Across processes the store stays the arbiter: a queued batch is bumped only with the store's
own check (`active`), and when that check fails (a consumer ended the RR meanwhile) each
queued signal is decided again, alone, by the store's full rules.

The store underneath needs one more operation than `RemediationStore`: `bump_active(name,
count, now)` — add `count` to an RR's occurrences if it is active, else None.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from signalgate.remediation.model import RemediationRequest, StatusPatch
from signalgate.remediation.store import (
    Decision,
    FiringResult,
    ListQuery,
    Page,
    RemediationStore,
)


class BumpingStore(RemediationStore, Protocol):
    async def bump_active(self, name: str, count: int, now: datetime) -> RemediationRequest | None:
        """Add `count` occurrences at `now` to RR `name` if it is active; else None."""
        ...


@dataclass
class _Waiting:
    candidate: RemediationRequest
    now: datetime
    done: asyncio.Future[FiringResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    # the store call deciding this signal alone, while it runs
    decision: asyncio.Future[FiringResult] | None = None


# how long a caller that gave up waits for its own store call to be cancelled, so that the
# statement is undone before the caller answers (504), as it was without the queue
CANCEL_WAIT = 5.0


class CoalescingStore:
    """A `RemediationStore` that coalesces concurrent duplicates in front of another."""

    def __init__(self, inner: BumpingStore) -> None:
        self.inner = inner
        self._queues: dict[str, list[_Waiting]] = {}
        self._drainers: dict[str, asyncio.Task[None]] = {}

    def __repr__(self) -> str:
        return repr(self.inner)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        drainers = list(self._drainers.values())
        for task in drainers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.inner.close()

    async def ping(self) -> None:
        await self.inner.ping()

    async def record_firing(self, candidate: RemediationRequest, now: datetime) -> FiringResult:
        key = candidate.fingerprint
        waiting = _Waiting(candidate, now)
        self._queues.setdefault(key, []).append(waiting)
        if key not in self._drainers:
            self._drainers[key] = asyncio.create_task(
                self._drain(key), name=f"rr-coalesce-{key[:12]}"
            )
        try:
            return await waiting.done
        except asyncio.CancelledError:
            decision = waiting.decision
            if decision is not None and not decision.done():
                decision.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(decision), CANCEL_WAIT)
            raise

    async def _drain(self, key: str) -> None:
        try:
            while batch := self._queues.pop(key, None):
                await self._decide(batch)
        finally:
            self._drainers.pop(key, None)

    async def _decide(self, batch: list[_Waiting]) -> None:
        """The first signal decided by the store's full rules; the rest of the batch as one
        bump of the RR it landed on, while that RR is active. A caller that gave up (its
        deadline passed) is not counted: its pending statement is cancelled, as it would
        have been without the queue."""
        batch = [w for w in batch if not w.done.done()]
        if not batch:
            return
        first, rest = batch[0], batch[1:]
        if not await _settle(first, self.inner.record_firing(first.candidate, first.now)):
            # the store failed for the first (or it gave up): the others, each on its own
            for waiting in rest:
                if not waiting.done.done():
                    await _settle(waiting, self.inner.record_firing(waiting.candidate, waiting.now))
            return
        decided = first.done.result().rr
        rest = [w for w in rest if not w.done.done()]
        if not rest:
            return
        if decided.active:
            now = max(w.now for w in rest)
            try:
                bumped = await self.inner.bump_active(decided.name, len(rest), now)
            except Exception as exc:
                for waiting in rest:
                    _fail(waiting, exc)
                return
            if bumped is not None:
                for waiting in rest:
                    if not waiting.done.done():
                        waiting.done.set_result(FiringResult(Decision.DUPLICATE, bumped))
                return
        # not active (a suppressing RR, or ended meanwhile): each one by the full rules
        for waiting in rest:
            await _settle(waiting, self.inner.record_firing(waiting.candidate, waiting.now))

    async def record_resolved(self, fingerprint: str, now: datetime) -> RemediationRequest | None:
        return await self.inner.record_resolved(fingerprint, now)

    async def get(self, name: str) -> RemediationRequest | None:
        return await self.inner.get(name)

    async def list(self, query: ListQuery) -> Page:
        return await self.inner.list(query)

    async def update_status(self, name: str, patch: StatusPatch) -> RemediationRequest:
        return await self.inner.update_status(name, patch)


async def _settle(waiting: _Waiting, decision: Coroutine[Any, Any, FiringResult]) -> bool:
    """Run `decision` for the waiting caller and hand it the result (or error); True on
    success. The task is kept on `waiting`, so a caller that gives up cancels it
    (`CoalescingStore.record_firing`)."""
    task = asyncio.ensure_future(decision)
    waiting.decision = task
    try:
        result = await task
    except asyncio.CancelledError:
        if waiting.done.cancelled():
            return False
        raise
    except Exception as exc:
        _fail(waiting, exc)
        return False
    if waiting.done.done():
        return not waiting.done.cancelled()
    waiting.done.set_result(result)
    return True


def _fail(waiting: _Waiting, exc: Exception) -> None:
    if not waiting.done.done():
        waiting.done.set_exception(exc)
