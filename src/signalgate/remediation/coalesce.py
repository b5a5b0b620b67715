"""Coalesced duplicates: concurrent firing signals for one fingerprint share a store round trip.

An alert storm is the same signal many times at once. Deciding each one alone costs one
transaction each, all serialised on one row. Here, while a decision for a fingerprint is in
flight, later signals for that fingerprint queue up. When the decision is known, the whole
queue is applied as one statement: `occurrenceCount + N` on that RR, if it is still active.
Each caller is answered only after the commit that covers its own signal.

Across processes the store stays the arbiter: a queued batch is bumped only with the store's
own check (`active`), and when that check fails (a consumer ended the RR meanwhile) each
queued signal is decided again, alone, by the store's full rules.

The coalescer also remembers the active RR of recently seen fingerprints (a bounded map,
`KNOWN_LIMIT`): the next burst for a fingerprint is then one bump of that RR, one round trip
instead of a full decision followed by a bump. The bump's own `active` check keeps this
safe: an RR that ended meanwhile (here or in another replica) is not bumped, the entry is
forgotten and the burst is decided by the full rules.

Group commit across fingerprints: the first signal of each fingerprint is decided in a batch
with the first signals of other fingerprints that arrive while earlier batches are in flight
(at most `batches_in_flight` statements at once, `BATCH_LIMIT` signals each): one statement
and one commit for many new RRs. A batch is formed at the end of the event-loop iteration
its first signal arrived in, so the signals read together go together. No timer: a signal
waits only for that and while the store is busy, so an idle Gateway answers as fast as
before and a loaded one commits more per round trip.

The store underneath needs two more operations than `RemediationStore`:
`bump_active(name, count, now)` — add `count` to an RR's occurrences if it is active, else
None — and `record_firings(signals)` — decide many signals of distinct fingerprints at once,
None for each that needs `record_firing`'s full rules.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from signalgate.remediation.model import RemediationRequest, StatusPatch
from signalgate.remediation.store import (
    Decision,
    FiringResult,
    ListQuery,
    Page,
    RemediationStore,
    StoreUnavailable,
    drain_failing_fast,
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


T = TypeVar("T")

BATCH_LIMIT = 64  # first signals decided by one statement
KNOWN_LIMIT = 4096  # fingerprints whose active RR is remembered


class _Waiting:
    """One caller's firing signal, its answer, and the store call deciding it."""

    __slots__ = ("_build", "_candidate", "decision", "done", "now", "sharing")

    def __init__(self, build: Callable[[], RemediationRequest], now: datetime) -> None:
        self._build = build
        self._candidate: RemediationRequest | None = None
        self.now = now
        self.done: asyncio.Future[FiringResult] = asyncio.get_running_loop().create_future()
        # the store call deciding this signal, while it runs, and the callers it decides
        # for: it is cancelled (undone in the store) once every one of them gave up
        self.decision: asyncio.Future[Any] | None = None
        self.sharing: list[_Waiting] = []

    @property
    def candidate(self) -> RemediationRequest:
        """The RR to store if the signal is new: built on first use, which a duplicate of a
        remembered active RR never reaches."""
        if self._candidate is None:
            self._candidate = self._build()
        return self._candidate


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
# statement is undone before the caller answers (504), as it was without the queue. So a 504
# comes within `server.processingTimeout` + CANCEL_WAIT, as docs/gateway.md says (on
# PostgreSQL: a call to SQLite's process is not withdrawn, and its wait ends at once)
CANCEL_WAIT = 5.0


class CoalescingStore:
    """A `RemediationStore` that coalesces concurrent duplicates in front of another."""

    # a store call every caller gave up is cancelled and undone (`_undo_if_abandoned`)
    writes_outlive_cancellation = False

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
        self._send_scheduled = False
        # fingerprint → name of its active RR, as last decided here (a hint: bumps check it)
        self._known: dict[str, str] = {}

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
        return await self.record_firing_of(candidate.fingerprint, lambda: candidate, now)

    async def record_firing_of(
        self, fingerprint: str, build: Callable[[], RemediationRequest], now: datetime
    ) -> FiringResult:
        """`record_firing` for a candidate that `build` makes only when it is needed: a
        duplicate of an RR remembered active is counted without one (building the candidate
        is a tenth of a duplicate's CPU)."""
        key = fingerprint
        waiting = _Waiting(build, now)
        self._queues.setdefault(key, []).append(waiting)
        if key not in self._drainers:
            self._drainers[key] = asyncio.create_task(
                self._drain(key), name=f"rr-coalesce-{key[:12]}"
            )
        try:
            return await waiting.done
        except asyncio.CancelledError:
            if waiting.decision is not None:
                abandoned = all(w.done.cancelled() for w in waiting.sharing)
                await _undo_if_abandoned(waiting.decision, abandoned)
            raise

    async def _drain(self, key: str) -> None:
        """Decide the fingerprint's queue, batch after batch; after an outage the signals
        waiting behind it get its answer (`drain_failing_fast`)."""

        def take() -> list[_Waiting] | None:
            batch = self._queues.pop(key, None)
            return None if batch is None else [w for w in batch if not w.done.done()]

        async def decide(batch: list[_Waiting]) -> StoreUnavailable | None:
            if batch and not await self._bump_known(key, batch):
                await self._decide(key, batch)
            return _outage_of(batch)

        def fail(batch: list[_Waiting], outage: StoreUnavailable) -> None:
            for waiting in batch:
                _fail(waiting, outage)

        try:
            await drain_failing_fast(take, decide, fail)
        finally:
            self._drainers.pop(key, None)

    async def _bump_known(self, key: str, batch: list[_Waiting]) -> bool:
        """One bump of the RR last seen active for `key`, for the whole batch; False (and
        the hint forgotten) when there is none or it is no longer active."""
        name = self._known.get(key)
        if name is None:
            return False
        try:
            bumped = await _decide_for(
                batch, self.inner.bump_active(name, len(batch), max(w.now for w in batch))
            )
        except _Abandoned:
            return True  # every caller gave up: nothing was counted
        except Exception as exc:
            for waiting in batch:
                _fail(waiting, exc)
            return True
        if bumped is None:
            del self._known[key]
            return False
        # counted in arrival order: the first of the batch made the first of its counts
        first = bumped.deduplication.occurrence_count - len(batch) + 1
        for position, waiting in enumerate(batch):
            if not waiting.done.done():
                rr = bumped.counted_as(first + position)
                waiting.done.set_result(FiringResult(Decision.DUPLICATE, rr))
        return True

    def _remember(self, key: str, rr: RemediationRequest) -> None:
        if not rr.active:
            self._known.pop(key, None)
            return
        if key not in self._known and len(self._known) >= KNOWN_LIMIT:
            del self._known[next(iter(self._known))]  # the oldest entry
        self._known[key] = rr.name

    async def _decide(self, key: str, batch: list[_Waiting]) -> None:
        """The first signal decided by the store's full rules; the rest of the batch as one
        bump of the RR it landed on, while that RR is active. A caller that gave up (its
        deadline passed) is not counted: its pending statement is cancelled, as it would
        have been without the queue."""
        first, rest = batch[0], batch[1:]
        if not await _settle(first, self._batched(first)):
            if _outage_of([first]) is not None:
                return  # the store is away: `_drain` answers the rest with the same
            # the store failed for the first alone (or it gave up): the others, each on its own
            await self._each_alone(key, rest)
            return
        self._remember(key, first.done.result().rr)
        rest = [w for w in rest if not w.done.done()]
        if rest and not await self._bump_known(key, rest):
            # not active (a suppressing RR, or ended meanwhile): each one by the full rules
            await self._each_alone(key, rest)

    async def _each_alone(self, key: str, batch: list[_Waiting]) -> None:
        """Each signal decided by the store's full rules, one after another; a caller that
        gave up meanwhile is skipped (not counted). Once one finds the store away, the rest
        are left undecided: `_drain` answers them with the same outage at once
        (`drain_failing_fast`), where each waited out a timeout of its own in turn."""
        for waiting in batch:
            if waiting.done.done():
                continue
            if await _settle(waiting, self._alone(waiting)):
                self._remember(key, waiting.done.result().rr)
            elif _outage_of([waiting]) is not None:
                return

    async def _alone(self, waiting: _Waiting) -> FiringResult:
        # the candidate is built here, inside `_settle`: a build that fails fails its own
        # signal, not the others of the queue
        return await self.inner.record_firing(waiting.candidate, waiting.now)

    async def _batched(self, waiting: _Waiting) -> FiringResult:
        """Decide `waiting` in the next group-committed batch (alone, by the full rules,
        when the batch statement leaves it undecided)."""
        # built before the signal joins a batch: a build that fails fails this signal alone
        candidate = waiting.candidate
        member = _Member(waiting)
        self._unsent.append(member)
        if not self._send_scheduled:
            # formed at the end of this loop iteration: the other first signals read in the
            # same iteration join this batch instead of each taking a statement alone
            self._send_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_soon)
        try:
            result = await asyncio.shield(member.slot)
        except asyncio.CancelledError:
            await self._give_up(member)
            raise
        if result is None:
            return await self.inner.record_firing(candidate, waiting.now)
        return result

    async def _give_up(self, member: _Member) -> None:
        """The caller gave up: withdrawn if not sent yet; once sent, its batch statement is
        cancelled (undone in the store) only when every caller in it gave up."""
        member.gave_up = True
        # nobody reads the slot any more: the batch's answer is not set on it, and one set
        # already (the caller gave up as it came) is taken here. A statement cancelled for
        # callers that gave up can still end in StoreUnavailable (asyncpg's pool, releasing
        # the connection of a cancelled query to a stopped server, times out): set on these
        # slots, each was logged "Future exception was never retrieved"
        if not member.slot.cancel() and not member.slot.cancelled():
            member.slot.exception()
        batch = member.batch
        if batch is None:
            self._unsent.remove(member)
            return
        if batch.task is not None:
            await _undo_if_abandoned(batch.task, all(m.gave_up for m in batch.members))

    def _send_soon(self) -> None:
        self._send_scheduled = False
        self._send()

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


async def _undo_if_abandoned(call: asyncio.Future[Any], abandoned: bool) -> None:
    """When every caller of a store call still running gave up (`abandoned`), cancel it and
    wait (up to `CANCEL_WAIT`) until it is undone, so the caller's 504 is not followed by
    a count it was not given. Neither the call's end nor the wait's timeout is raised here;
    this caller's own cancellation is (a stop cancelling it again ends the wait at once: it
    was swallowed, and on Python 3.11 `asyncio.wait_for` could drop it as the call ended)."""
    if abandoned and not call.done():
        call.cancel()
        await asyncio.wait({call}, timeout=CANCEL_WAIT)
        if call.done() and not call.cancelled():
            call.exception()  # its end is nobody's: taken, so it is not logged as unretrieved


class _Abandoned(Exception):
    """Every caller a store call decided for gave up, and the call was cancelled."""


async def _decide_for(callers: list[_Waiting], call: Coroutine[Any, Any, T]) -> T:
    """Run the store call deciding `callers`. It is kept on each of them, so that it is
    cancelled (undone in the store) once every one gave up (`CoalescingStore.record_firing`);
    then `_Abandoned` is raised here instead of the cancellation."""
    task = asyncio.ensure_future(call)
    for waiting in callers:
        waiting.decision, waiting.sharing = task, callers
    try:
        return await task
    except asyncio.CancelledError:
        if all(w.done.cancelled() for w in callers):
            raise _Abandoned from None
        raise


async def _settle(waiting: _Waiting, decision: Coroutine[Any, Any, FiringResult]) -> bool:
    """Run `decision` for the waiting caller and hand it the result (or error); True on
    success."""
    try:
        result = await _decide_for([waiting], decision)
    except _Abandoned:
        return False
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


def _outage_of(batch: list[_Waiting]) -> StoreUnavailable | None:
    """The store's unavailability one of `batch` was answered with, if any."""
    for waiting in batch:
        done = waiting.done
        if done.done() and not done.cancelled():
            exc = done.exception()
            if isinstance(exc, StoreUnavailable):
                return exc
    return None
