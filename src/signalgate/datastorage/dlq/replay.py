"""Replaying dead letters into the store on the backoff schedule."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from signalgate.common.logging import SampledLog
from signalgate.common.tasks import wait_event
from signalgate.datastorage.dlq.base import DeadLetterQueue, Letter, readable
from signalgate.datastorage.errors import (
    Conflict,
    DeadLetterUnavailable,
    ForeignParent,
    MissingParent,
    StoreUnavailable,
    StoreUnreachable,
)
from signalgate.datastorage.events import AuditEvent
from signalgate.datastorage.metrics import DataStorageMetrics
from signalgate.datastorage.store import AuditStore

log = logging.getLogger(__name__)
unavailable_log = SampledLog(log)

# the longest wait between passes that keep failing unexpectedly (seconds)
MAX_FAILED_WAIT = 60.0
# how long after its parent's letter a waiting child's is due: it comes out after the parent
AFTER_PARENT = 0.001

# a letter of a pass: its place in the pass, and its event
_Pending = tuple[int, Letter, AuditEvent]
# a child whose parent was missing: its place, letter and event, and the parent's id
_Orphan = tuple[int, Letter, AuditEvent, str]


@dataclass
class ReplayReport:
    """What one pass did. `waiting` letters were put back, attempts unchanged, to follow
    parents that are not due yet; `rescheduled` ones used up an attempt; `deferred`: the
    database is down, and the pass left the queue as it was."""

    replayed: int = 0
    rescheduled: int = 0
    dead: int = 0
    waiting: int = 0
    deferred: bool = False

    @property
    def busy(self) -> bool:
        return bool(self.replayed or self.rescheduled or self.dead or self.waiting)


class ReplayWorker:
    """Replays due letters into the store; reschedules on failure; buries after the last try.

    `backoff[n]` is the wait before replay attempt n+1, so a letter gets `len(backoff)`
    attempts. An event the store refuses for good (its id stored with other content) is
    buried at once: retrying cannot change the answer.

    A child whose parent is not stored yet is not at fault while the parent waits in the
    queue: met before its parent in a batch, it is tried again once the rest is stored;
    otherwise it waits, without using an attempt, until just after its parent's letter is
    due. A child whose parent is not queued, or whose parents form a cycle, uses an attempt
    like any failure, so it is buried in the end.

    A database that is down is no letter's failure: the pass ends and leaves the queue as it
    was (no attempt used, nothing rewritten), and the next polls only ping the database
    until it answers, then replay what is due at once. Counting the outage as attempts
    buried acknowledged events after an outage longer than the schedule (a 26 s one with a
    test's 1 s, 2 s, 5 s), kept them waiting hours after the database was back, and
    rewrote the whole queue file on every poll (an outside check). A database that answers
    pings but refuses writes has the letters tried again on the schedule, its last step
    repeating, never buried (`_unavailable`).
    """

    def __init__(
        self,
        dlq: DeadLetterQueue,
        store: AuditStore,
        backoff: Sequence[float],
        metrics: DataStorageMetrics,
        *,
        poll_interval: float = 1.0,
        batch_size: int = 500,
    ) -> None:
        self._dlq = dlq
        self._store = store
        self._backoff = list(backoff)
        self._metrics = metrics
        self._poll = poll_interval
        self._batch = batch_size
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._deferred = False  # the last pass found the database down
        # while draining: the (event id, new due) of each letter put back with an attempt
        # used, so the drain's next passes go past it instead of trying it again at once
        self._attempted: set[tuple[str, float]] | None = None
        # while draining: the (event id, new due) of each letter set aside to wait for its
        # parent, gone past like those until a pass stores something (maybe its parent)
        self._set_aside: set[tuple[str, float]] | None = None
        # why the database, answering, refused the last replay, until a replay is stored
        self._refused: str | None = None

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="dlq-replay")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        failures = 0  # unexpected failures in a row
        while not self._stopping.is_set():
            try:
                # the depth first: a pass that fails (its store down, its queue's disk full)
                # must not leave the gauge at 0 over letters that wait
                self._metrics.dlq_depth.set(await self._dlq.depth())
                report = await self.run_once()
                self._metrics.dlq_depth.set(await self._dlq.depth())
            except DeadLetterUnavailable as exc:
                # once per interval: a poll a second wrote a line a second while Redis was away
                unavailable_log.log(
                    logging.WARNING,
                    "unavailable",
                    "dead-letter queue unavailable",
                    {"error": str(exc)},
                )
                report = ReplayReport()
            except Exception as exc:
                failures += 1
                self._failed(exc, failures)
                report = ReplayReport()
            else:
                failures = 0
            if report.replayed and not report.rescheduled:
                continue  # draining after an outage: go on without waiting
            # a pass that keeps failing the same way (its role lost INSERT) waits longer
            wait = min(self._poll * 2 ** min(failures, 16), max(self._poll, MAX_FAILED_WAIT))
            await wait_event(self._stopping, wait)

    @staticmethod
    def _failed(exc: Exception, failures: int) -> None:
        """The first failure of a run of them with its traceback, the next ones one line
        each (a traceback per poll was 0.7 GB of log a day: an outside check)."""
        if failures == 1:
            log.exception("dead-letter replay failed")
        else:
            log.error(
                "dead-letter replay failed again",
                extra={"error": f"{type(exc).__name__}: {exc}", "failures": failures},
            )

    async def drain(self) -> ReplayReport:
        """Replay everything queued now, due or not, pass after pass, each going past the
        letters this drain put back, until no letter is left to try or the database is
        down. A letter the store refuses uses one attempt per drain: it was the end of the
        drain, so one orphan child in front of 2,000 events left 1,501 of them queued with
        the database up (an outside check). Children set aside to wait for a parent are
        gone past too, and tried again once the passes reach the end of the queue having
        stored something since they were set aside: a pass of them alone in front of their
        parent stored nothing and ended the drain, the parent never tried."""
        total = ReplayReport()
        self._attempted, self._set_aside = set(), set()
        stored = False  # since the letters set aside were last tried
        try:
            while True:
                report = await self.run_once(ignore_schedule=True)
                total.replayed += report.replayed
                total.rescheduled += report.rescheduled
                total.dead += report.dead
                total.waiting += report.waiting
                total.deferred = report.deferred
                if report.deferred:
                    return total
                stored = stored or bool(report.replayed or report.dead)
                if not report.busy:  # every letter left was put back by this drain
                    if not (self._set_aside and stored):
                        return total
                    self._set_aside.clear()
                    stored = False
        finally:
            self._attempted = self._set_aside = None

    async def run_once(self, *, ignore_schedule: bool = False) -> ReplayReport:
        now = time.time()
        report = ReplayReport()
        if self._deferred:
            if await self._database_down():
                report.deferred = True
                return report
            self._deferred = False
            log.info("replay resumed: the database answers")
        if ignore_schedule:
            letters = await self._first_untried()
        else:
            letters = await self._dlq.due(now, self._batch)
        if not letters:
            return report
        events, invalid = readable(letters)
        if invalid:
            await self._bury(invalid, "invalid", report)
        await self._write(events, now, report)
        return report

    async def _first_untried(self) -> list[Letter]:
        """The first letters in queue order, due or not, but for those this drain put back
        (wherever the backend keeps them: in place, or at the end): each is one letter of
        the queue (its event id and the due this drain gave it), so `batch` more than
        them holds a pass's worth of the others."""
        tried = (self._attempted or set()) | (self._set_aside or set())
        letters = await self._dlq.due(None, self._batch + len(tried))
        if tried:
            letters = [ltr for ltr in letters if (ltr.event_id, ltr.due) not in tried]
        return letters[: self._batch]

    async def _write(
        self, events: Sequence[tuple[Letter, AuditEvent]], now: float, report: ReplayReport
    ) -> None:
        """The letters' events stored in one write and acknowledged; when the store refuses
        some of them, those are taken out and the rest written together again, until a
        write goes through. A database that is unavailable ends the pass (`_unavailable`).

        The store names every event at fault of one kind (`exc.indexes`). Foreign parents
        are buried, and so are conflicts with what is stored; a later copy of an id met
        earlier in the pass (a client's retry, queued behind the first) waits for the next
        round, when it is stored if the first copy was refused, or buried as a conflict with
        it; while the first copy waits for its parent, the later one waits behind it.
        Children whose parent is missing are set aside; they get another round while a
        round stores something (their parent may be later in the pass, or one of them),
        then wait for their parents (`_follow_parents`). A write per round, not per letter:
        one at a time, a queue left by an outage (children due before their rescheduled
        parents) replayed at 50 to 90 events/s, a store write and a queue change for each
        (an outside check).
        """
        pending = [(index, letter, event) for index, (letter, event) in enumerate(events)]
        # a failed write is tried once more at once when the database answers a ping
        # after it: a restarted PostgreSQL refuses connections "starting up" for a moment,
        # and counted as a refusal that moment put the queue off by the schedule's first
        # step (a minute by default) after a blip of seconds
        tried_again = False
        unplaced: list[_Orphan] = []  # children whose parent no round stored yet
        held: list[_Pending] = []  # later copies of those children's ids
        while pending:
            replayed = report.replayed
            orphans: list[_Orphan] = []
            repeats: list[_Pending] = []
            while pending:
                try:
                    await self._store.write([event for _, _, event in pending])
                except Conflict as exc:
                    refused = exc.indexes.keys()
                    seen: set[str] = set()
                    first: set[int] = set()
                    for position, (_, _, event) in enumerate(pending):
                        if event.event_id not in seen:
                            seen.add(event.event_id)
                            first.add(position)
                    repeats += [pending[i] for i in refused if i not in first]
                    stored = [pending[i][1] for i in refused if i in first]
                    if stored:
                        await self._bury(stored, "conflict", report)
                except ForeignParent as exc:
                    refused = exc.indexes.keys()
                    await self._bury([pending[i][1] for i in refused], "foreign parent", report)
                except MissingParent as exc:
                    refused = exc.indexes.keys()
                    orphans += [(*pending[i], parent) for i, parent in exc.indexes.items()]
                except StoreUnavailable as exc:
                    if not tried_again and not await self._database_down():
                        tried_again = True
                        continue
                    await self._unavailable([ltr for _, ltr, _ in pending], now, report, exc)
                    if report.deferred:
                        return
                    break
                else:
                    await self._dlq.ack([letter for _, letter, _ in pending])
                    self._replayed(len(pending), report)
                    break
                pending = [item for i, item in enumerate(pending) if i not in refused]
            if report.replayed > replayed:  # a parent may have been stored: try them again
                pending = [(i, ltr, ev) for i, ltr, ev, _ in [*unplaced, *orphans]] + repeats
                unplaced = []
            else:
                unplaced += orphans
                # a later copy of an id whose first copy waits for its parent waits behind
                # it: written alone now, it was stored, and the first copy (acknowledged
                # first) then buried as a conflict with it (an outside check)
                waiting_ids = {event.event_id for _, _, event, _ in unplaced}
                held += [item for item in repeats if item[2].event_id in waiting_ids]
                pending = [item for item in repeats if item[2].event_id not in waiting_ids]
            pending.sort(key=lambda item: item[0])  # queue order, parents first
        dues = await self._follow_parents(
            [(letter, parent) for _, letter, _, parent in unplaced], now, report
        )
        if held:
            # behind the first copy's new due; its first copy buried, in the next pass
            behind = [
                replace(letter, due=dues.get(event.event_id, now) + AFTER_PARENT)
                for _, letter, event in held
            ]
            await self._dlq.reschedule(behind)
            self._setting_aside(behind)
            report.waiting += len(held)

    def _setting_aside(self, letters: Sequence[Letter]) -> None:
        """`letters`, put back to wait (attempts unchanged), gone past by a drain's next
        passes until one stores something."""
        if self._set_aside is not None:
            self._set_aside.update((letter.event_id, letter.due) for letter in letters)

    async def _follow_parents(
        self, orphans: Sequence[tuple[Letter, str]], now: float, report: ReplayReport
    ) -> dict[str, float]:
        """Children whose parent is not stored (`orphans`: each letter with its parent's
        id). One whose parent waits in the queue, or whose parent is one of them waiting
        so, waits too, attempts unchanged: its letter is due just after its parent's (so
        the parent comes out first, whether it is due later or due now and left for a
        later pass by the pass's size). The others (a parent nowhere in the queue, a cycle
        of parents) retry later, using an attempt. Counting a parent due now but not in
        this pass as missing buried acknowledged children after a long drain (an outside
        check: 20 to 246 after 30 s of a read-only database). Returns the new due of each
        child put back (waiting, or retrying), by event id."""
        if not orphans:
            return {}
        parents = {letter.event_id: parent for letter, parent in orphans}
        queued = await self._dlq.waiting(set(parents.values()) - parents.keys())
        dues: dict[str, float | None] = {}  # event id -> when to come out again (None: retry)
        for letter, _ in orphans:
            path: list[str] = []
            current = letter.event_id
            while current in parents and current not in dues and current not in path:
                path.append(current)
                current = parents[current]
            if current in dues:
                due = dues[current]
            elif current in path:
                due = None  # a cycle: no parent of it can ever be stored first
            else:
                found = queued.get(current)
                due = None if found is None else found.due
            for member in reversed(path):
                due = None if due is None else due + AFTER_PARENT
                dues[member] = due
        waiting: list[Letter] = []
        again: list[Letter] = []
        for letter, _ in orphans:
            due = dues[letter.event_id]
            if due is None:
                again.append(letter)
            else:
                waiting.append(replace(letter, due=due))
        if waiting:
            await self._dlq.reschedule(waiting)
            self._setting_aside(waiting)
            report.waiting += len(waiting)
        retried = await self._retry_later(again, now, report) if again else []
        return {letter.event_id: letter.due for letter in [*waiting, *retried]}

    async def _unavailable(
        self, letters: Sequence[Letter], now: float, report: ReplayReport, exc: Exception
    ) -> None:
        """The database could not take `letters`: down, the pass is deferred (the letters
        as they were). Answering pings but refusing writes (a read-only standby after a
        failover, a full disk, a statement timing out on this batch), the letters are tried
        again on the schedule, whose last step repeats: an unavailable database is never a
        letter's fault, and burying them lost acknowledged events (an outside check: 1,193
        of them after 40 s read-only on a 1s,2s,5s schedule)."""
        if isinstance(exc, StoreUnreachable) or await self._database_down():
            self._deferred = report.deferred = True
            log.info("replay deferred: the database is down", extra={"error": str(exc)})
            return
        again = await self._retry_later(letters, now, report, bury=False)
        # said, and shown by readiness: a queue that stopped draining was only a depth
        # gauge that did not move (an outside check: a full disk for hours, /readyz "ok")
        self._refused = str(exc)
        log.warning(
            "replay refused: the database answers but did not store the letters; they are "
            "tried again on the dlq.backoff schedule",
            extra={
                "error": str(exc),
                "letters": len(again),
                "next_in_seconds": round(min((ltr.due for ltr in again), default=now) - now, 1),
            },
        )

    def refusing(self) -> str | None:
        """Why the database refused the last replay pass while answering, until a replay
        is stored again; None when it did not."""
        return self._refused

    async def _database_down(self) -> bool:
        try:
            await self._store.ping()
        except StoreUnavailable:
            return True
        return False

    def _replayed(self, count: int, report: ReplayReport) -> None:
        self._refused = None
        report.replayed += count
        self._metrics.dlq_replayed.inc(count)

    async def _retry_later(
        self, letters: Sequence[Letter], now: float, report: ReplayReport, bury: bool = True
    ) -> list[Letter]:
        """Each letter uses an attempt and waits its step of the schedule; after the last,
        it is buried — or, with `bury` False, waits the last step again. Returns the
        letters put back, as they now are."""
        again: list[Letter] = []
        exhausted: list[Letter] = []
        last = len(self._backoff) - 1
        for letter in letters:
            attempts = letter.attempts + 1
            if attempts > last and bury:
                exhausted.append(replace(letter, attempts=attempts))
            else:
                step = self._backoff[min(attempts, last)]
                again.append(replace(letter, attempts=attempts, due=now + step))
        await self._dlq.reschedule(again)
        if self._attempted is not None:
            self._attempted.update((letter.event_id, letter.due) for letter in again)
        report.rescheduled += len(again)
        if exhausted:
            await self._bury(exhausted, "attempts exhausted", report)
        return again

    async def _bury(self, letters: Sequence[Letter], reason: str, report: ReplayReport) -> None:
        await self._dlq.bury(letters, reason)
        report.dead += len(letters)
        self._metrics.dlq_dead.inc(len(letters))
        log.error(
            "audit events moved to the dead-letter store",
            extra={"count": len(letters), "reason": reason},
        )
