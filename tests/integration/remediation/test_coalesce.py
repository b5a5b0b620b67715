"""The duplicate coalescer in front of the SQL stores: concurrent signals for one
fingerprint share store round trips, and every one is still counted exactly once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from signalgate.remediation.coalesce import CoalescingStore
from signalgate.remediation.model import RemediationRequest, StatusPatch
from signalgate.remediation.postgres import PostgresRemediationStore
from signalgate.remediation.sqlite import SqliteRemediationStore
from signalgate.remediation.store import Decision, FiringResult, ListQuery, StoreUnavailable
from tests.integration.remediation.rrcases import later, make_rr


class CountingSqliteStore(SqliteRemediationStore):
    """The real SQLite store, counting the statements the coalescer sends it."""

    decisions = 0
    bumps = 0

    async def record_firing(self, candidate: RemediationRequest, now: datetime) -> FiringResult:
        self.decisions += 1
        return await super().record_firing(candidate, now)

    async def bump_active(self, name: str, count: int, now: datetime) -> RemediationRequest | None:
        self.bumps += 1
        return await super().bump_active(name, count, now)


async def test_a_storm_shares_round_trips_and_counts_each_signal(tmp_path: Path) -> None:
    inner = CountingSqliteStore(tmp_path / "rr.db")
    store = CoalescingStore(inner)
    await store.open()
    try:
        results = await asyncio.gather(
            *(store.record_firing(make_rr(at=later(i / 100)), later(i / 100)) for i in range(300))
        )
        assert [r.decision for r in results].count(Decision.CREATED) == 1
        (stored,) = (await store.list(ListQuery())).items
        assert stored.deduplication.occurrence_count == 300
        # far fewer transactions than signals: one decision, then one bump per queued batch
        assert inner.decisions + inner.bumps < 30, (inner.decisions, inner.bumps)
    finally:
        await store.close()


async def test_a_batch_waiting_on_an_rr_that_ended_is_decided_again(tmp_path: Path) -> None:
    store = CoalescingStore(SqliteRemediationStore(tmp_path / "rr.db"))
    await store.open()
    try:
        first = (await store.record_firing(make_rr(), later(0))).rr
        await store.update_status(first.name, StatusPatch(overall_phase="Completed"))
        results = await asyncio.gather(
            *(store.record_firing(make_rr(at=later(1)), later(1)) for _ in range(20))
        )
        created = [r for r in results if r.decision is Decision.CREATED]
        assert len(created) == 1 and created[0].rr.name != first.name
        assert {r.rr.name for r in results} == {created[0].rr.name}
        assert max(r.rr.deduplication.occurrence_count for r in results) == 20
    finally:
        await store.close()


class Counting:
    """A SQL store, counting the calls the coalescer makes to it."""

    def __init__(self, inner: SqliteRemediationStore | PostgresRemediationStore) -> None:
        self.inner = inner
        self.calls: collections.Counter[str] = collections.Counter()
        self.batch_sizes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name in ("record_firing", "record_firings", "bump_active"):
            self.calls[name] += 1
        if name == "record_firings":

            async def counted(signals: Sequence[tuple[RemediationRequest, datetime]]) -> Any:
                self.batch_sizes.append(len(signals))
                return await attribute(signals)

            return counted
        return attribute


@pytest.fixture(params=["sqlite", "postgres"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Counting:
    if request.param == "sqlite":
        return Counting(SqliteRemediationStore(tmp_path / "rr.db"))
    return Counting(PostgresRemediationStore(request.getfixturevalue("postgres_dsn")))


async def test_new_signals_of_many_fingerprints_are_group_committed(sql_store: Counting) -> None:
    store = CoalescingStore(sql_store)
    await store.open()
    try:
        active = (await store.record_firing(make_rr("active-1"), later(0))).rr
        cooling = (await store.record_firing(make_rr("cooling-1"), later(0))).rr
        await store.update_status(
            cooling.name,
            StatusPatch(overall_phase="Completed", next_allowed_execution=later(3600)),
        )
        sql_store.calls.clear()
        new = [make_rr(f"new-{i}", at=later(1)) for i in range(120)]
        results = await asyncio.gather(
            *(store.record_firing(rr, later(1)) for rr in new),
            store.record_firing(make_rr("active-1", at=later(1)), later(1)),
            store.record_firing(make_rr("cooling-1", at=later(1)), later(1)),
        )
        created, on_active, on_cooling = results[:120], results[120], results[121]
        assert all(r.decision is Decision.CREATED for r in created)
        assert [r.rr.name for r in created] == [rr.name for rr in new]
        assert (on_active.decision, on_active.rr.name) == (Decision.DUPLICATE, active.name)
        assert on_active.rr.deduplication.occurrence_count == 2
        # the cool-down suppresses a new RR: the signal counts on the terminal one
        assert (on_cooling.decision, on_cooling.rr.name) == (Decision.DUPLICATE, cooling.name)
        assert on_cooling.rr.deduplication.occurrence_count == 2
        stored = await store.list(ListQuery(limit=500))
        assert len(stored.items) == 122
        # what each caller was answered is what the store holds
        by_name = {rr.name: rr for rr in stored.items}
        assert all(by_name[r.rr.name] == r.rr for r in created)
        # many signals per statement: 122 signals in far fewer transactions
        assert sql_store.calls["record_firings"] + sql_store.calls["record_firing"] <= 12, (
            sql_store.calls,
            sql_store.batch_sizes,
        )
        assert max(sql_store.batch_sizes) > 1
    finally:
        await store.close()


async def test_a_burst_on_a_known_active_rr_is_one_bump(sql_store: Counting) -> None:
    store = CoalescingStore(sql_store)
    await store.open()
    try:
        first = (await store.record_firing(make_rr(), later(0))).rr
        sql_store.calls.clear()
        results = await asyncio.gather(
            *(store.record_firing(make_rr(at=later(1)), later(1)) for _ in range(50))
        )
        assert {(r.decision, r.rr.name) for r in results} == {(Decision.DUPLICATE, first.name)}
        assert max(r.rr.deduplication.occurrence_count for r in results) == 51
        # the RR decided before is bumped for the whole burst: no full decision at all
        assert sql_store.calls == {"bump_active": 1}, sql_store.calls
    finally:
        await store.close()


async def test_a_remembered_rr_ended_by_another_replica_is_not_bumped(tmp_path: Path) -> None:
    here = CoalescingStore(SqliteRemediationStore(tmp_path / "rr.db"))
    there = CoalescingStore(SqliteRemediationStore(tmp_path / "rr.db"))
    await here.open()
    await there.open()
    try:
        ended = (await here.record_firing(make_rr(), later(0))).rr
        await there.update_status(ended.name, StatusPatch(overall_phase="Failed"))
        successor = (await there.record_firing(make_rr(at=later(1)), later(1))).rr
        assert successor.name != ended.name
        # `here` still remembers the ended RR as active: the store refuses the bump, and
        # the signal counts on the successor by the full rules
        result = await here.record_firing(make_rr(at=later(2)), later(2))
        assert (result.decision, result.rr.name) == (Decision.DUPLICATE, successor.name)
        assert result.rr.deduplication.occurrence_count == 2
        assert (await here.get(ended.name)).deduplication.occurrence_count == 1  # type: ignore[union-attr]
    finally:
        await here.close()
        await there.close()


class PoisonedSqliteStore(SqliteRemediationStore):
    """The real SQLite store, failing any statement that carries the signal named poison."""

    @staticmethod
    def _check(candidate: RemediationRequest) -> None:
        if candidate.spec["targetResource"]["name"] == "poison":
            raise ValueError("a value this store cannot write")

    async def record_firing(self, candidate: RemediationRequest, now: datetime) -> FiringResult:
        self._check(candidate)
        return await super().record_firing(candidate, now)

    async def record_firings(
        self, signals: Sequence[tuple[RemediationRequest, datetime]]
    ) -> list[FiringResult | None]:
        for candidate, _ in signals:
            self._check(candidate)
        return await super().record_firings(signals)


async def test_a_signal_that_fails_its_batch_fails_alone(tmp_path: Path) -> None:
    store = CoalescingStore(PoisonedSqliteStore(tmp_path / "rr.db"), batches_in_flight=1)
    await store.open()
    try:
        signals = [make_rr(f"good-{i}") for i in range(20)] + [make_rr("poison")]
        results = await asyncio.gather(
            *(store.record_firing(rr, later(1)) for rr in signals), return_exceptions=True
        )
        assert isinstance(results[-1], ValueError)
        good = [r for r in results[:-1] if isinstance(r, FiringResult)]
        assert len(good) == 20 and all(r.decision is Decision.CREATED for r in good)
        assert len((await store.list(ListQuery())).items) == 20
    finally:
        await store.close()


async def test_first_signals_that_arrive_together_share_one_statement(sql_store: Counting) -> None:
    """Signals read in one loop iteration form one batch: the first to arrive does not take a
    statement alone while the others wait for the next free one."""
    store = CoalescingStore(sql_store)
    await store.open()
    try:
        results = await asyncio.gather(
            *(store.record_firing(make_rr(f"together-{i}"), later(0)) for i in range(10))
        )
        assert all(r.decision is Decision.CREATED for r in results)
        assert sql_store.batch_sizes == [10]
    finally:
        await store.close()


async def test_duplicates_of_a_remembered_rr_never_build_a_candidate(sql_store: Counting) -> None:
    """Building the candidate RR is a tenth of a duplicate's CPU: a burst on an RR the
    coalescer remembers active is counted without it; once that RR ended, the next signal's
    candidate is built and stored."""
    store = CoalescingStore(sql_store)
    await store.open()
    built: list[str] = []

    def build(at: float) -> RemediationRequest:
        candidate = make_rr(at=later(at))
        built.append(candidate.name)
        return candidate

    fingerprint = make_rr().fingerprint
    try:
        first = await store.record_firing_of(fingerprint, lambda: build(0), later(0))
        assert first.decision is Decision.CREATED and built == [first.rr.name]
        burst = await asyncio.gather(
            *(store.record_firing_of(fingerprint, lambda: build(1), later(1)) for _ in range(20))
        )
        assert {r.rr.name for r in burst} == {first.rr.name}
        assert max(r.rr.deduplication.occurrence_count for r in burst) == 21
        assert len(built) == 1  # no candidate for any of the 20
        await store.update_status(first.rr.name, StatusPatch(overall_phase="Completed"))
        again = await store.record_firing_of(fingerprint, lambda: build(2), later(2))
        assert again.decision is Decision.CREATED and again.rr.name == built[-1] != first.rr.name
    finally:
        await store.close()


async def test_a_candidate_that_cannot_be_built_fails_only_its_own_signal(
    sql_store: Counting,
) -> None:
    """Candidates are built inside the coalescer now: a build that raises is that signal's
    error, in a batch of first signals and in a queue decided one by one."""
    store = CoalescingStore(sql_store)
    await store.open()

    def broken() -> RemediationRequest:
        raise ValueError("cannot build this candidate")

    def signal(resource: str, at: float, fails: bool = False) -> Any:
        rr = make_rr(resource, at=later(at))
        return store.record_firing_of(rr.fingerprint, broken if fails else (lambda: rr), later(at))

    try:
        async with asyncio.timeout(10):  # a batch whose build failed once never answered
            results = await asyncio.gather(
                *(signal(f"batch-{i}", 0, fails=i == 2) for i in range(5)),
                return_exceptions=True,
            )
        assert isinstance(results[2], ValueError)
        assert all(
            not isinstance(r, BaseException) and r.decision is Decision.CREATED
            for i, r in enumerate(results)
            if i != 2
        )
        # signals on an RR in its cool-down are decided one by one by the full rules, each
        # with its candidate: the broken one fails alone, the others count on the RR
        first = await signal("cooling", 1)
        await store.update_status(
            first.rr.name,
            StatusPatch(overall_phase="Completed", next_allowed_execution=later(3600)),
        )
        queued = await asyncio.gather(
            *(signal("cooling", 2, fails=i == 1) for i in range(4)), return_exceptions=True
        )
        assert isinstance(queued[1], ValueError)
        answered = [r for i, r in enumerate(queued) if i != 1]
        decided = [r for r in answered if not isinstance(r, BaseException)]
        assert len(decided) == len(answered)
        assert all(r.decision is Decision.DUPLICATE for r in decided)
        assert {r.rr.name for r in decided} == {first.rr.name}
        assert max(r.rr.deduplication.occurrence_count for r in decided) == 4
    finally:
        await store.close()


class HungSqliteStore(SqliteRemediationStore):
    """The real SQLite store, behind a connection that hangs while `hung` is set: each call
    then waits `HOLD` and fails as a store's timeout does (503), counting the calls."""

    HOLD = 0.3
    hung = False
    calls = 0

    async def _hang(self) -> None:
        if self.hung:
            self.calls += 1
            await asyncio.sleep(self.HOLD)
            raise StoreUnavailable("the store did not answer within its timeout")

    async def record_firing(self, candidate: RemediationRequest, now: datetime) -> FiringResult:
        await self._hang()
        return await super().record_firing(candidate, now)

    async def record_firings(
        self, signals: Sequence[tuple[RemediationRequest, datetime]]
    ) -> list[FiringResult | None]:
        await self._hang()
        return await super().record_firings(signals)

    async def bump_active(self, name: str, count: int, now: datetime) -> RemediationRequest | None:
        await self._hang()
        return await super().bump_active(name, count, now)


async def test_signals_queued_behind_a_call_the_store_did_not_answer_fail_with_it(
    tmp_path: Path,
) -> None:
    """A hung store (an API server that stopped answering): the signals queued behind the
    call that timed out made calls of their own and waited out a second timeout (an outside
    check: 503s after twice `kubernetes.timeout`), or, for a new fingerprint, one timeout
    each in turn. They now get that call's 503."""
    inner = HungSqliteStore(tmp_path / "rr.db")
    store = CoalescingStore(inner)
    await store.open()
    try:
        known = make_rr("known")
        assert (await store.record_firing(known, later(1))).decision is Decision.CREATED
        inner.hung = True

        async def storm(rr: RemediationRequest) -> list[BaseException | FiringResult]:
            first = asyncio.ensure_future(store.record_firing(rr, later(2)))
            await asyncio.sleep(0.05)  # the first's call is under way: these queue behind it
            rest = [store.record_firing(rr, later(3)) for _ in range(7)]
            return await asyncio.gather(first, *rest, return_exceptions=True)

        async def together(rr: RemediationRequest) -> list[BaseException | FiringResult]:
            # one batch: the first decided, the rest waiting in that batch for its RR
            calls = [store.record_firing(rr, later(2)) for _ in range(8)]
            return await asyncio.gather(*calls, return_exceptions=True)

        # a bump of a known RR, a new RR's decision; behind the call, and beside it
        for rr, send in ((known, storm), (make_rr("new"), storm), (make_rr("new-2"), together)):
            inner.calls = 0
            answers = await send(rr)
            assert all(isinstance(a, StoreUnavailable) for a in answers), answers
            assert inner.calls == 1, f"{inner.calls} calls to a store that does not answer"
        inner.hung = False
        counted = await store.record_firing(known, later(4))
        assert counted.rr.deduplication.occurrence_count == 2  # none of the 503s was counted
    finally:
        await store.close()


async def test_signals_decided_one_by_one_fail_together_with_the_first_outage(
    tmp_path: Path,
) -> None:
    """The signals of a batch decided one by one (here: its first caller gave up, so the
    others are not its duplicates) met a hung store each in turn, every one waiting out a
    timeout of its own (seven in a row). The first outage now answers them all at once."""
    inner = HungSqliteStore(tmp_path / "rr.db")
    store = CoalescingStore(inner)
    await store.open()
    try:
        inner.hung = True
        rr = make_rr("alone")
        calls = [asyncio.ensure_future(store.record_firing(rr, later(2))) for _ in range(8)]
        while inner.calls == 0:  # the first's call is under way, the others wait behind it
            await asyncio.sleep(0.01)
        calls[0].cancel()  # its caller gave up (its deadline passed)
        answers = await asyncio.gather(*calls[1:], return_exceptions=True)
        assert all(isinstance(a, StoreUnavailable) for a in answers), answers
        # the first's abandoned call, then one of the others' calls: not one per signal
        assert inner.calls == 2, f"{inner.calls} calls to a store that does not answer"
        inner.hung = False
        created = await store.record_firing(rr, later(4))
        assert created.decision is Decision.CREATED  # none of the 503s was stored
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def unretrieved_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """The event loop's error reports made inside the block ("Future exception was never
    retrieved" among them), garbage collected at its end so that an abandoned future is."""
    loop = asyncio.get_running_loop()
    reports: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reports.append(context))
    try:
        yield reports
        await asyncio.sleep(0.05)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)


class CancelledIntoOutageStore(SqliteRemediationStore):
    """A batch statement to a server that stopped: it never answers and, cancelled, ends in
    StoreUnavailable instead of the cancellation, as asyncpg does there (the pool's release
    of the cancelled query's connection times out). After `fail_after` seconds (if set) it
    fails by itself, as the store's own timeout does."""

    fail_after: float | None = None

    async def record_firings(
        self, signals: Sequence[tuple[RemediationRequest, datetime]]
    ) -> list[FiringResult | None]:
        try:
            await asyncio.sleep(1000 if self.fail_after is None else self.fail_after)
        except asyncio.CancelledError:
            raise StoreUnavailable("no answer in time (releasing the cancelled query)") from None
        raise StoreUnavailable("no answer in time")


async def test_a_batch_every_caller_gave_up_on_leaves_no_unretrieved_error(
    tmp_path: Path,
) -> None:
    """Every caller of a batch passes its deadline; the batch statement, cancelled, ends in
    StoreUnavailable (a paused PostgreSQL): set on each caller's slot, nobody retrieved it,
    and the Gateway logged "Future exception was never retrieved" once per signal (an
    outside check: 16, `WEBHOOK_CONCURRENCY`)."""
    store = CoalescingStore(CancelledIntoOutageStore(tmp_path / "rr.db"))
    await store.open()
    try:
        async with unretrieved_errors() as reports:

            async def fire(resource: str) -> FiringResult:
                async with asyncio.timeout(0.1):
                    return await store.record_firing(make_rr(resource), later(1))

            answers = await asyncio.gather(
                *(fire(f"gone-{i}") for i in range(16)), return_exceptions=True
            )
            kinds = {type(answer) for answer in answers}
            del answers
            assert kinds == {TimeoutError}
        assert [r["message"] for r in reports] == []
    finally:
        await store.close()


async def test_a_caller_that_gave_up_leaves_no_error_while_the_others_get_503(
    tmp_path: Path,
) -> None:
    """One caller of a batch gives up, the others wait: when the statement then fails for
    an outage, each waiting caller gets StoreUnavailable (503), and the one that left has
    no unretrieved error logged for it."""
    inner = CancelledIntoOutageStore(tmp_path / "rr.db")
    inner.fail_after = 0.3
    store = CoalescingStore(inner)
    await store.open()
    try:
        async with unretrieved_errors() as reports:

            async def impatient() -> FiringResult:
                async with asyncio.timeout(0.05):
                    return await store.record_firing(make_rr("impatient"), later(1))

            answers = await asyncio.gather(
                impatient(),
                *(store.record_firing(make_rr(f"patient-{i}"), later(1)) for i in range(3)),
                return_exceptions=True,
            )
            # (only the kinds are kept: the errors' tracebacks would keep the batch alive)
            kinds = [type(answer) for answer in answers]
            del answers
            assert kinds == [TimeoutError, StoreUnavailable, StoreUnavailable, StoreUnavailable]
        assert [r["message"] for r in reports] == []
    finally:
        await store.close()


class SlowToUndoStore(SqliteRemediationStore):
    """A batch statement that never answers and, cancelled, takes 2 s to be undone."""

    async def record_firings(
        self, signals: Sequence[tuple[RemediationRequest, datetime]]
    ) -> list[FiringResult | None]:
        try:
            await asyncio.sleep(1000)
        except asyncio.CancelledError:
            await asyncio.sleep(2)
            raise
        raise AssertionError("not reached")


async def test_a_caller_cancelled_again_while_its_statement_is_undone_stops_at_once(
    tmp_path: Path,
) -> None:
    """A caller gives up (its deadline) and waits, up to CANCEL_WAIT, for its statement to be
    undone; cancelled again meanwhile (the server's stop), it stops at once. (A guard for
    the wait's form: `asyncio.wait`, which raises the caller's own cancellation and neither
    the statement's end nor the timeout.)"""
    store = CoalescingStore(SlowToUndoStore(tmp_path / "rr.db"))
    await store.open()
    try:

        async def fire() -> FiringResult:
            async with asyncio.timeout(0.05):
                return await store.record_firing(make_rr("slow-undo"), later(1))

        caller = asyncio.create_task(fire())
        await asyncio.sleep(0.3)  # past its deadline: waiting for the undo
        assert not caller.done()
        caller.cancel()
        done, _ = await asyncio.wait({caller}, timeout=1)
        assert caller in done, "the caller waited on after its second cancellation"
        assert caller.cancelled()
    finally:
        await store.close()


async def test_a_sqlite_statement_whose_caller_gave_up_runs_to_its_end(tmp_path: Path) -> None:
    """What a 504 on SQLite means (docs/gateway.md): the store's process runs a statement it
    was sent to its end, unseen. A caller that gave up at its deadline while its statement
    waited on SQLite's write lock (the Gateway answers it 504) has its signal counted once
    the lock is gone, and its retry counts it once more."""
    import sqlite3

    path = tmp_path / "rr.db"
    store = CoalescingStore(SqliteRemediationStore(path, busy_timeout=60.0), batches_in_flight=1)
    await store.open()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        candidate = make_rr("gave-up")
        blocker.execute("BEGIN IMMEDIATE")  # the write lock, as another writer holds it
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await store.record_firing(candidate, later(1))
        blocker.execute("COMMIT")
        # the process answers its calls in the order sent: this one after the abandoned one
        stored = await store.get(candidate.name)
        assert stored is not None, "the statement of a caller that gave up was withdrawn"
        assert stored.deduplication.occurrence_count == 1
        retried = await store.record_firing(candidate, later(2))
        assert retried.decision is Decision.DUPLICATE
        assert retried.rr.deduplication.occurrence_count == 2
    finally:
        blocker.close()
        await store.close()
