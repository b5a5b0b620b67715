"""Coalesced duplicates: concurrent firing signals for one fingerprint share a store round trip.

An alert storm is the same signal many times at once. Deciding each one alone costs one
transaction each, all serialised on one row. Here, while a decision for a fingerprint is in
flight, later signals for that fingerprint queue up. When the decision is known, the whole
queue is applied as one statement: `occurrenceCount + N` on that RR, if it is still active.
Each caller is answered only after the commit that covers its own signal.

Across processes the store stays the arbiter: a queued batch is bumped only with the store's
own check (`active`), and when that check fails (a consumer ended the RR meanwhile) each
queued signal is decided again, alone, by the store's full rules.

Group commit across fingerprints: the first signal of each fingerprint is decided in a batch
with the first signals of other fingerprints that arrive while earlier batches are in flight
(at most `batches_in_flight` statements at once, `BATCH_LIMIT` signals each): one statement
and one commit for many new RRs. No timer: a signal waits only while the store is busy, so
an idle Gateway answers as fast as before and a loaded one commits more per round trip.

The store underneath needs two more operations than `RemediationStore`:
`bump_active(name, count, now)` — add `count` to an RR's occurrences if it is active, else
None — and `record_firings(signals)` — decide many signals of distinct fingerprints at once,
None for each that needs `record_firing`'s full rules.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
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
    StoreUnavailable,
)


class BumpingStore(RemediationStore, Protocol):
    async def bump_active(self, name: str, count: int, now: datetime) -> RemediationRequest | None:
        """Add `count` occurrences at `now` to RR `name` if it is active; else None."""
        ...

    async def record_firings(
        self, signals: Sequence[tuple[RemediationRequest, datetime]]
    ) -> list[FiringResult | None]:
        """Decide signals of distinct fingerprints in one transaction; None for a signal
        that must be decided alone by `record_firing`."""
        ...


BATCH_LIMIT = 64  # first signals decided by one statement


@dataclass
class _Waiting:
    candidate: RemediationRequest
    now: datetime
    done: asyncio.Future[FiringResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    # the store call deciding this signal alone, while it runs
    decision: asyncio.Future[FiringResult] | None = None


@dataclass(eq=False)
class _Batch:
    members: list[_Member]
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Member:
    waiting: _Waiting
    slot: asyncio.Future[FiringResult | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    batch: _Batch | None = None
    gave_up: bool = False


# how long a caller that gave up waits for its own store call to be cancelled, so that the
# statement is undone before the caller answers (504), as it was without the queue
CANCEL_WAIT = 5.0


class CoalescingStore:
    """A `RemediationStore` that coalesces concurrent duplicates in front of another."""

    def __init__(self, inner: BumpingStore, batches_in_flight: int = 2) -> None:
        """`batches_in_flight`: group-commit statements at once; later arrivals wait and
        go together. Two keep creates moving while one statement waits on a row lock; a
        store that runs one transaction at a time anyway (SQLite) is best served by one."""
        self.inner = inner
        self.batches_in_flight = batches_in_flight
        self._queues: dict[str, list[_Waiting]] = {}
        self._drainers: dict[str, asyncio.Task[None]] = {}
        self._unsent: list[_Member] = []  # first signals waiting for a batch to go
        self._in_flight = 0

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
        if not await _settle(first, self._batched(first)):
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

    async def _batched(self, waiting: _Waiting) -> FiringResult:
        """Decide `waiting` in the next group-committed batch (alone, by the full rules,
        when the batch statement leaves it undecided)."""
        member = _Member(waiting)
        self._unsent.append(member)
        self._send()
        try:
            result = await asyncio.shield(member.slot)
        except asyncio.CancelledError:
            await self._give_up(member)
            raise
        if result is None:
            return await self.inner.record_firing(waiting.candidate, waiting.now)
        return result

    async def _give_up(self, member: _Member) -> None:
        """The caller gave up: withdrawn if not sent yet; once sent, its batch statement is
        cancelled (undone in the store) only when every caller in it gave up."""
        member.gave_up = True
        batch = member.batch
        if batch is None:
            self._unsent.remove(member)
            return
        task = batch.task
        if task is not None and not task.done() and all(m.gave_up for m in batch.members):
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), CANCEL_WAIT)

    def _send(self) -> None:
        while self._unsent and self._in_flight < self.batches_in_flight:
            members = self._unsent[:BATCH_LIMIT]
            del self._unsent[:BATCH_LIMIT]
            batch = _Batch(members)
            for member in members:
                member.batch = batch
            self._in_flight += 1
            batch.task = asyncio.create_task(self._run(batch), name="rr-group-commit")

    async def _run(self, batch: _Batch) -> None:
        signals = [(m.waiting.candidate, m.waiting.now) for m in batch.members]
        try:
            results = await self.inner.record_firings(signals)
        except StoreUnavailable as exc:  # the store is away: every caller answers 503
            for member in batch.members:
                if not member.slot.done():
                    member.slot.set_exception(exc)
        except Exception:
            # something in one signal failed the whole statement: each one decided alone, so
            # the signal at fault fails by itself and the others go through
            for member in batch.members:
                if not member.slot.done():
                    member.slot.set_result(None)
        except BaseException:
            for member in batch.members:
                member.slot.cancel()
            raise
        else:
            for member, result in zip(batch.members, results, strict=True):
                if not member.slot.done():
                    member.slot.set_result(result)
        finally:
            self._in_flight -= 1
            self._send()

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
