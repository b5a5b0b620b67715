"""The RemediationStore contract (docs/gateway.md), run against every backend.

Every test gets a fresh, empty store of each kind (`store` is parametrised over "sqlite"
and "postgres"); equal expectations for both is what "identical answers" means.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from signalgate.remediation.model import (
    MANUAL_REVIEW_OUTCOME,
    TERMINAL_PHASES,
    RemediationRequest,
    SignalResolved,
    StatusPatch,
)
from signalgate.remediation.postgres import PostgresRemediationStore
from signalgate.remediation.sqlite import SqliteRemediationStore
from signalgate.remediation.store import (
    Conflict,
    Decision,
    InvalidCursor,
    ListQuery,
    NotFound,
    Page,
    RemediationStore,
    encode_cursor,
)
from tests.integration.remediation.rrcases import T0, Backend, fingerprint, later, make_rr

NON_TERMINAL = [
    "Pending",
    "Processing",
    "Analyzing",
    "AwaitingApproval",
    "Executing",
    "Verifying",
    "Blocked",
]


async def create(store: RemediationStore, rr: RemediationRequest) -> RemediationRequest:
    result = await store.record_firing(rr, rr.created_at)
    assert result.decision is Decision.CREATED
    return result.rr


async def finish(
    store: RemediationStore, rr: RemediationRequest, phase: str = "Completed", **status: object
) -> RemediationRequest:
    return await store.update_status(rr.name, StatusPatch(overall_phase=phase, **status))  # type: ignore[arg-type]


# --- record_firing --------------------------------------------------------------------------


async def test_first_signal_creates_the_candidate_as_is(store: RemediationStore) -> None:
    candidate = make_rr(payload='{"big": "' + "x" * 100_000 + '"}')
    result = await store.record_firing(candidate, T0)
    assert result.decision is Decision.CREATED
    # a store may name the RR itself (Kubernetes: by generation), in the same pattern
    assert re.fullmatch(rf"rr-{candidate.fingerprint[:12]}-[0-9a-f]{{8}}", result.rr.name)
    stored = replace(candidate, name=result.rr.name, namespace=result.rr.namespace)
    assert result.rr == stored
    assert result.rr.to_json()["spec"] == candidate.to_json()["spec"]
    assert result.rr.status_json() == stored.status_json()
    assert await store.get(result.rr.name) == stored


async def test_a_lazily_built_candidate_is_built_for_a_new_rr_only(
    store: RemediationStore,
) -> None:
    """`record_firing_of` (what the pipeline calls): the candidate is made when the signal
    is new; a duplicate of the RR this store just created is counted without one."""
    candidate = make_rr()
    builds: list[RemediationRequest] = []

    def build() -> RemediationRequest:
        builds.append(candidate)
        return candidate

    first = await store.record_firing_of(candidate.fingerprint, build, T0)
    assert first.decision is Decision.CREATED
    assert len(builds) == 1
    assert first.rr.to_json()["spec"] == candidate.to_json()["spec"]
    second = await store.record_firing_of(candidate.fingerprint, build, later(1))
    assert second.decision is Decision.DUPLICATE
    assert second.rr.name == first.rr.name
    assert second.rr.deduplication.occurrence_count == 2
    assert len(builds) == 1


async def test_duplicate_counts_moves_last_seen_and_clears_resolved(
    store: RemediationStore,
) -> None:
    rr = await create(store, make_rr())
    await store.record_resolved(rr.fingerprint, later(5))
    result = await store.record_firing(make_rr(at=later(10)), later(10))
    assert result.decision is Decision.DUPLICATE
    assert result.rr.name == rr.name
    assert result.rr.deduplication.occurrence_count == 2
    assert result.rr.deduplication.first_seen_at == T0
    assert result.rr.deduplication.last_seen_at == later(10)
    # the resolved condition turns False when the signal fires again
    assert result.rr.signal_resolved == SignalResolved(False, later(10))
    assert result.rr.spec == rr.spec  # spec never changes
    assert result.rr.created_at == T0
    assert await store.get(rr.name) == result.rr
    again = await store.record_firing(make_rr(at=later(11)), later(11))
    assert again.rr.deduplication.occurrence_count == 3


@pytest.mark.parametrize("phase", sorted(TERMINAL_PHASES))
async def test_terminal_rr_lets_a_new_one_be_created(store: RemediationStore, phase: str) -> None:
    old = await create(store, make_rr())
    old = await finish(store, old, phase)
    assert not old.active
    candidate = make_rr(at=later(60))
    result = await store.record_firing(candidate, later(60))
    assert result.decision is Decision.CREATED
    assert result.rr.name != old.name
    assert result.rr.deduplication.occurrence_count == 1
    assert await store.get(old.name) == old  # untouched


@pytest.mark.parametrize("phase", NON_TERMINAL)
async def test_every_non_terminal_phase_deduplicates(store: RemediationStore, phase: str) -> None:
    rr = await create(store, make_rr())
    await store.update_status(rr.name, StatusPatch(overall_phase=phase))
    result = await store.record_firing(make_rr(at=later(1)), later(1))
    assert result.decision is Decision.DUPLICATE
    assert result.rr.name == rr.name
    assert result.rr.overall_phase == phase
    assert result.rr.deduplication.occurrence_count == 2


async def test_manual_review_suppresses_with_the_newest_such_rr(store: RemediationStore) -> None:
    first = await create(store, make_rr())
    await finish(store, first, "Failed", outcome=MANUAL_REVIEW_OUTCOME)
    # A second RR can only be made while the first does not suppress: lift its review,
    # make and end the second, then put the first back under review.
    await finish(store, first, "Completed", outcome=None)
    second = await create(store, make_rr(at=later(10)))
    await finish(store, second, "Failed", outcome=MANUAL_REVIEW_OUTCOME)
    await finish(store, first, "Failed", outcome=MANUAL_REVIEW_OUTCOME)

    result = await store.record_firing(make_rr(at=later(20)), later(20))
    assert result.decision is Decision.DUPLICATE
    assert result.rr.name == second.name
    assert result.rr.deduplication.occurrence_count == 2
    assert result.rr.deduplication.last_seen_at == later(20)
    assert result.rr.overall_phase == "Failed"  # still terminal, still suppressing
    again = await store.record_firing(make_rr(at=later(30)), later(30))
    assert again.rr.name == second.name
    assert again.rr.deduplication.occurrence_count == 3


async def test_manual_review_wins_over_a_cool_down(store: RemediationStore) -> None:
    reviewed = await create(store, make_rr())
    await finish(store, reviewed, "Failed", outcome=MANUAL_REVIEW_OUTCOME)
    # A (made-up) second terminal RR with a cool-down, stored while the first was terminal:
    # suppression makes creating one impossible, so reopen/close around it.
    await finish(store, reviewed, "Completed", outcome=None)
    cooling = await create(store, make_rr(at=later(10)))
    await finish(store, cooling, "Completed", next_allowed_execution=later(3600))
    await finish(store, reviewed, "Failed", outcome=MANUAL_REVIEW_OUTCOME)

    result = await store.record_firing(make_rr(at=later(20)), later(20))
    assert result.decision is Decision.DUPLICATE
    assert result.rr.name == reviewed.name


@pytest.mark.parametrize("suppressor", ["manual-review", "cool-down"])
async def test_an_active_rr_wins_over_a_suppressing_terminal_one(
    store: RemediationStore, suppressor: str
) -> None:
    """The active RR is looked for before suppressors: a duplicate lands on it, not on a
    terminal ManualReviewRequired or cooling-down RR of the same fingerprint."""
    terminal = await create(store, make_rr())
    await finish(store, terminal, "Completed")  # ended, suppressing nothing yet
    active = await create(store, make_rr(at=later(10)))
    if suppressor == "manual-review":
        await finish(store, terminal, "Failed", outcome=MANUAL_REVIEW_OUTCOME)
    else:
        await store.update_status(terminal.name, StatusPatch(next_allowed_execution=later(3600)))
    result = await store.record_firing(make_rr(at=later(20)), later(20))
    assert result.decision is Decision.DUPLICATE
    assert result.rr.name == active.name
    assert result.rr.deduplication.occurrence_count == 2


async def test_future_cool_down_suppresses_with_the_latest_one(store: RemediationStore) -> None:
    # The older RR has the later cool-down: the rule picks by time, not by age.
    older = await create(store, make_rr())
    await finish(store, older, "Completed")
    newer = await create(store, make_rr(at=later(10)))
    await finish(store, newer, "Completed", next_allowed_execution=later(3600))
    await store.update_status(older.name, StatusPatch(next_allowed_execution=later(7200)))
    result = await store.record_firing(make_rr(at=later(20)), later(20))
    assert result.decision is Decision.DUPLICATE
    assert result.rr.name == older.name
    assert result.rr.deduplication.occurrence_count == 2
    assert result.rr.next_allowed_execution == later(7200)


async def test_past_cool_down_does_not_suppress(store: RemediationStore) -> None:
    old = await create(store, make_rr())
    await finish(store, old, "Completed", next_allowed_execution=later(60))
    # exactly at the cool-down's end it is over ("in the future" is strict)
    at_end = await store.record_firing(make_rr(at=later(60)), later(60))
    assert at_end.decision is Decision.CREATED
    assert at_end.rr.name != old.name


async def test_cool_down_still_running_then_over(store: RemediationStore) -> None:
    old = await create(store, make_rr())
    await finish(store, old, "Completed", next_allowed_execution=later(60))
    during = await store.record_firing(make_rr(at=later(30)), later(30))
    assert (during.decision, during.rr.name) == (Decision.DUPLICATE, old.name)
    after = await store.record_firing(make_rr(at=later(61)), later(61))
    assert after.decision is Decision.CREATED


async def test_other_fingerprints_are_independent(store: RemediationStore) -> None:
    a = await create(store, make_rr("a"))
    b = await create(store, make_rr("b"))
    c = await create(store, make_rr("a", namespace="staging"))
    assert len({a.fingerprint, b.fingerprint, c.fingerprint}) == 3
    dup = await store.record_firing(make_rr("b", at=later(1)), later(1))
    assert dup.rr.name == b.name
    got_a = await store.get(a.name)
    assert got_a is not None and got_a.deduplication.occurrence_count == 1


# --- record_resolved ------------------------------------------------------------------------


async def test_resolved_marks_the_active_rr_and_keeps_its_count(store: RemediationStore) -> None:
    rr = await create(store, make_rr())
    resolved = await store.record_resolved(rr.fingerprint, later(5))
    assert resolved is not None
    assert resolved.name == rr.name
    assert resolved.signal_resolved == SignalResolved(True, later(5))
    assert resolved.deduplication == rr.deduplication
    assert await store.get(rr.name) == resolved
    # a second notice keeps the condition's transition time
    again = await store.record_resolved(rr.fingerprint, later(9))
    assert again is not None and again.signal_resolved == SignalResolved(True, later(5))
    condition = again.to_json()["status"]["conditions"][0]
    assert (condition["type"], condition["status"]) == ("SignalResolved", "True")


async def test_resolved_without_an_active_rr_is_none(store: RemediationStore) -> None:
    assert await store.record_resolved(fingerprint("nothing"), T0) is None
    rr = await create(store, make_rr())
    await finish(store, rr, "Failed", outcome=MANUAL_REVIEW_OUTCOME)
    assert await store.record_resolved(rr.fingerprint, later(1)) is None
    stored = await store.get(rr.name)
    assert stored is not None and stored.signal_resolved is None


# --- update_status --------------------------------------------------------------------------


async def test_update_status_sets_and_clears_fields(store: RemediationStore) -> None:
    rr = await create(store, make_rr())
    updated = await store.update_status(
        rr.name,
        StatusPatch(
            overall_phase="Executing",
            outcome="Remediated",
            next_allowed_execution=later(600),
            message="restarting — ✓",
        ),
    )
    assert (updated.overall_phase, updated.outcome, updated.message) == (
        "Executing",
        "Remediated",
        "restarting — ✓",
    )
    assert updated.next_allowed_execution == later(600)
    assert updated.deduplication == rr.deduplication
    assert await store.get(rr.name) == updated

    # Fields not in the patch are left alone; None clears.
    only_message = await store.update_status(rr.name, StatusPatch(message="still going"))
    assert only_message.overall_phase == "Executing"
    assert only_message.outcome == "Remediated"
    cleared = await store.update_status(
        rr.name, StatusPatch(outcome=None, next_allowed_execution=None, message=None)
    )
    assert (cleared.outcome, cleared.next_allowed_execution, cleared.message) == (None, None, None)
    assert cleared.overall_phase == "Executing"
    assert await store.get(rr.name) == cleared
    # An empty patch answers the RR unchanged.
    assert await store.update_status(rr.name, StatusPatch()) == cleared


async def test_update_status_keeps_the_signal_resolved_mark(store: RemediationStore) -> None:
    rr = await create(store, make_rr())
    await store.record_resolved(rr.fingerprint, later(1))
    done = await finish(store, rr, "Completed")
    assert done.signal_resolved == SignalResolved(True, later(1))


async def test_update_status_of_an_unknown_rr_is_not_found(store: RemediationStore) -> None:
    with pytest.raises(NotFound, match="rr-missing"):
        await store.update_status("rr-missing", StatusPatch(overall_phase="Completed"))
    with pytest.raises(NotFound):
        await store.update_status("rr-missing", StatusPatch())


async def test_reactivating_a_terminal_rr_beside_an_active_one_conflicts(
    store: RemediationStore,
) -> None:
    old = await create(store, make_rr())
    old = await finish(store, old, "Completed")
    current = await create(store, make_rr(at=later(10)))
    with pytest.raises(Conflict, match=old.name):
        await store.update_status(old.name, StatusPatch(overall_phase="Processing"))
    assert await store.get(old.name) == old  # nothing changed
    # Terminal to terminal is fine; and once the active one ends, reopening is allowed.
    await store.update_status(old.name, StatusPatch(overall_phase="Failed"))
    await finish(store, current, "Cancelled")
    reopened = await store.update_status(old.name, StatusPatch(overall_phase="Processing"))
    assert reopened.active
    dup = await store.record_firing(make_rr(at=later(20)), later(20))
    assert dup.rr.name == old.name


# --- get / list -----------------------------------------------------------------------------


async def test_get_unknown_is_none(store: RemediationStore) -> None:
    assert await store.get("rr-000000000000-00000000") is None


async def _fleet(store: RemediationStore) -> list[RemediationRequest]:
    """Seven RRs over two namespaces, phases and activity, created one second apart."""
    specs = [
        ("a", "prod", "Pending"),
        ("b", "prod", "Completed"),
        ("c", "staging", "Executing"),
        ("d", "staging", "Completed"),
        ("e", "prod", "Failed"),
        ("node-1", "", "Pending"),
        ("a", "prod", "Pending"),  # 'a' again after its first RR ended
    ]
    made: list[RemediationRequest] = []
    for i, (resource, namespace, phase) in enumerate(specs):
        kind = "Node" if not namespace else "Pod"
        if resource == "a" and made:
            await finish(store, made[0], "Completed")
            made[0] = (await store.get(made[0].name)) or made[0]
        rr = await create(store, make_rr(resource, namespace=namespace, kind=kind, at=later(i)))
        if phase != "Pending":
            rr = await store.update_status(rr.name, StatusPatch(overall_phase=phase))
        made.append(rr)
    return made


def _names(items: object) -> list[str]:
    return [rr.name for rr in items]  # type: ignore[attr-defined]


async def test_list_is_newest_first_with_every_filter(store: RemediationStore) -> None:
    made = await _fleet(store)
    newest_first = list(reversed(made))

    async def names(**filters: object) -> list[str]:
        page = await store.list(ListQuery(**filters))  # type: ignore[arg-type]
        assert page.next_cursor is None
        return _names(page.items)

    assert await names() == _names(newest_first)
    assert (await store.list(ListQuery())).items == newest_first  # whole objects, too
    assert await names(fingerprint=made[0].fingerprint) == [made[6].name, made[0].name]
    assert await names(phase="Completed") == [made[3].name, made[1].name, made[0].name]
    assert await names(namespace="staging") == [made[3].name, made[2].name]
    assert await names(namespace="") == [made[5].name]  # cluster-scoped target
    assert await names(active=True) == [made[6].name, made[5].name, made[2].name]
    assert await names(active=False) == [
        made[4].name,
        made[3].name,
        made[1].name,
        made[0].name,
    ]
    assert await names(namespace="prod", active=False) == [
        made[4].name,
        made[1].name,
        made[0].name,
    ]
    assert await names(
        fingerprint=made[0].fingerprint, phase="Pending", namespace="prod", active=True
    ) == [made[6].name]
    assert await names(phase="NoSuchPhase") == []
    assert await names(namespace="nowhere") == []


@pytest.mark.parametrize(("count", "limit"), [(25, 7), (21, 7), (5, 5), (1, 1), (3, 500)])
async def test_list_pages_meet_without_gaps_or_repeats(
    store: RemediationStore, count: int, limit: int
) -> None:
    made = []
    for i in range(count):
        # groups of three share a creation time, so the name decides their order
        made.append(await create(store, make_rr(f"pod-{i}", at=later(i // 3))))
    expected = sorted(made, key=lambda rr: (rr.created_at, rr.name), reverse=True)

    seen: list[RemediationRequest] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await store.list(ListQuery(limit=limit, cursor=cursor))
        pages += 1
        assert len(page.items) <= limit
        seen.extend(page.items)
        if page.next_cursor is None:
            break
        assert len(page.items) == limit
        cursor = page.next_cursor
    assert _names(seen) == _names(expected)
    assert pages == max(1, -(-count // limit))


async def test_list_paginates_inside_a_filter(store: RemediationStore) -> None:
    made = [await create(store, make_rr(f"p-{i}", at=later(i))) for i in range(6)]
    for rr in made[::2]:
        await finish(store, rr)
    first = await store.list(ListQuery(active=False, limit=2))
    assert _names(first.items) == [made[4].name, made[2].name]
    assert first.next_cursor is not None
    second = await store.list(ListQuery(active=False, limit=2, cursor=first.next_cursor))
    assert _names(second.items) == [made[0].name]
    assert second.next_cursor is None


async def test_cursor_from_an_rr_that_is_not_stored_still_works(store: RemediationStore) -> None:
    made = [await create(store, make_rr(f"p-{i}", at=later(i))) for i in range(3)]
    cursor = encode_cursor(later(1) + timedelta(microseconds=1), "zzz")
    page = await store.list(ListQuery(cursor=cursor))
    assert _names(page.items) == [made[1].name, made[0].name]


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not-a-cursor",
        "!!!",
        encode_cursor(T0, "x")[:-3] + "%%%",
        "MjAyNnxuYW1l",
        encode_cursor(T0, "a\x00b"),  # a NUL: PostgreSQL refused the statement (a 500)
        encode_cursor(T0, "' OR 1=1--"),
    ],
)
async def test_invalid_cursor_is_refused(store: RemediationStore, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        await store.list(ListQuery(cursor=cursor))


@pytest.mark.parametrize(("limit", "expected"), [(0, 1), (-5, 1), (1, 1), (10_000, 3)])
async def test_list_survives_any_limit(store: RemediationStore, limit: int, expected: int) -> None:
    for i in range(3):
        await create(store, make_rr(f"p-{i}", at=later(i)))
    page = await store.list(ListQuery(limit=limit))
    assert len(page.items) == expected


# --- liveness and races ---------------------------------------------------------------------


async def test_ping(store: RemediationStore) -> None:
    await store.ping()


async def test_concurrent_identical_signals_make_one_rr(store: RemediationStore) -> None:
    results = await asyncio.gather(
        *(store.record_firing(make_rr(at=later(i / 1000)), later(i / 1000)) for i in range(200))
    )
    created = [r for r in results if r.decision is Decision.CREATED]
    assert len(created) == 1
    page = await store.list(ListQuery())
    assert len(page.items) == 1
    assert page.items[0].deduplication.occurrence_count == 200
    assert {r.rr.name for r in results} == {page.items[0].name}
    # every call is answered with the count its own signal made: 1 to 200, each once. Calls
    # coalesced into one write were answered with that write's last count, so the audit
    # trail held two sightings with one count and none with another (an outside check)
    counts = sorted(r.rr.deduplication.occurrence_count for r in results)
    assert counts == list(range(1, 201))


async def test_two_stores_on_one_database_make_one_rr(backend: Backend) -> None:
    one = await backend.open()
    two = await backend.open()
    calls = [
        (one if i % 2 else two).record_firing(make_rr(at=later(i / 1000)), later(i / 1000))
        for i in range(200)
    ]
    results = await asyncio.gather(*calls)
    assert sum(r.decision is Decision.CREATED for r in results) == 1
    items = (await one.list(ListQuery())).items
    for _ in range(100):  # `one`'s list may lag `two`'s last write (Kubernetes, see below)
        if items and items[0].deduplication.occurrence_count == 200:
            break
        await asyncio.sleep(0.05)
        items = (await one.list(ListQuery())).items
    assert len(items) == 1
    assert items[0].deduplication.occurrence_count == 200
    assert (await two.get(items[0].name)) == items[0]


async def test_many_fingerprints_at_once(backend: Backend) -> None:
    one = await backend.open()
    two = await backend.open()
    calls = [
        (one if i % 2 else two).record_firing(make_rr(f"pod-{f}", at=later(i)), later(i))
        for i in range(10)
        for f in range(20)
    ]
    results = await asyncio.gather(*calls)
    assert sum(r.decision is Decision.CREATED for r in results) == 20
    items = (await one.list(ListQuery(limit=500))).items
    # Kubernetes: `one` lists from its cache, which sees `two`'s writes through its watch,
    # milliseconds later (docs/kubernetes.md); an SQL store's list sees them at once
    for _ in range(100):
        if {rr.deduplication.occurrence_count for rr in items} == {10}:
            break
        await asyncio.sleep(0.05)
        items = (await one.list(ListQuery(limit=500))).items
    assert len(items) == 20
    assert {rr.deduplication.occurrence_count for rr in items} == {10}
    assert len({rr.fingerprint for rr in items}) == 20


async def test_both_backends_answer_a_whole_story_identically(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """The same calls, with the same candidates, give the same JSON from every backend."""
    first, second, third = make_rr(), make_rr(at=later(30)), make_rr(at=later(90))
    other = make_rr("db-0", namespace="data", kind="StatefulSet", at=later(5))
    story: list[Callable[[RemediationStore], Awaitable[object]]] = [
        lambda s: s.record_firing(first, T0),
        lambda s: s.record_firing(other, later(5)),
        lambda s: s.record_firing(second, later(10)),
        lambda s: s.record_resolved(first.fingerprint, later(11)),
        lambda s: s.record_resolved(other.fingerprint, later(12)),
        lambda s: s.update_status(first.name, StatusPatch(overall_phase="Executing")),
        lambda s: s.update_status(
            first.name,
            StatusPatch(
                overall_phase="Completed", message="done", next_allowed_execution=later(60)
            ),
        ),
        lambda s: s.record_firing(second, later(20)),
        lambda s: s.record_firing(third, later(90)),
        lambda s: s.update_status(
            third.name, StatusPatch(overall_phase="Failed", outcome=MANUAL_REVIEW_OUTCOME)
        ),
        lambda s: s.record_firing(make_rr(at=later(95)), later(95)),
        lambda s: s.record_resolved(first.fingerprint, later(96)),
        lambda s: s.get(first.name),
        lambda s: s.list(ListQuery(limit=2)),
        lambda s: s.list(ListQuery(active=False)),
        lambda s: s.list(ListQuery(namespace="data")),
    ]

    def plain(value: object) -> object:
        if isinstance(value, RemediationRequest):
            return value.to_json()
        if isinstance(value, Page):
            return {"items": [rr.to_json() for rr in value.items], "next": value.next_cursor}
        if hasattr(value, "decision"):
            return {"decision": value.decision.value, "rr": value.rr.to_json()}  # type: ignore[attr-defined]
        return value

    answers = []
    for store in (
        SqliteRemediationStore(tmp_path / "rr.db"),
        PostgresRemediationStore(postgres_dsn),
    ):
        await store.open()
        try:
            answers.append([plain(await step(store)) for step in story])
        finally:
            await store.close()
    assert answers[0] == answers[1]


async def test_cancelled_calls_leave_the_store_usable(store: RemediationStore) -> None:
    """The Gateway's processing deadline cancels store calls; the store must stay sound."""
    tasks = [
        asyncio.create_task(store.record_firing(make_rr(at=later(i)), later(i))) for i in range(60)
    ]
    await asyncio.sleep(0.005)
    for task in tasks[::2]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    done = [r for r in results if not isinstance(r, BaseException)]
    assert done, "some calls should have finished"
    after = await store.record_firing(make_rr(at=later(100)), later(100))
    items = (await store.list(ListQuery())).items
    assert len(items) == 1
    # each finished call counted once; a cancelled one may or may not have landed
    assert len(done) + 1 <= after.rr.deduplication.occurrence_count <= 61
    await store.ping()
