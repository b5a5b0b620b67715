"""Children whose parent waits in the dead-letter queue, on both queue backends.

The write path queues such a child instead of refusing it, and the replay stores parents
before their children however the letters come out of the queue. Every test runs on the file
queue and on Redis (a redis-server of its own), replaying into a real SQLite store.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from e2ecov.recipes import RedisServer
from signalgate.datastorage.chain import verify
from signalgate.datastorage.dlq import (
    DeadLetterQueue,
    FileDeadLetterQueue,
    RedisDeadLetterQueue,
    ReplayWorker,
    Waiting,
)
from signalgate.datastorage.dlq.replay import AFTER_PARENT
from signalgate.datastorage.errors import (
    ForeignParent,
    MissingParent,
    ParentsUnconfirmed,
    StoreUnavailable,
)
from signalgate.datastorage.events import AuditEvent, validate_event
from signalgate.datastorage.metrics import DataStorageMetrics
from signalgate.datastorage.sqlite import SqliteAuditStore
from signalgate.datastorage.store import WriteResult
from signalgate.datastorage.writer import AuditWriter, Written
from tests.support.event_bodies import event_body

HOUR = 3600.0


@pytest.fixture(params=["file", "redis"])
async def dlq(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DeadLetterQueue]:
    queue: DeadLetterQueue
    if request.param == "file":
        queue = FileDeadLetterQueue(tmp_path / "dlq.jsonl")
    else:
        queue = RedisDeadLetterQueue(request.getfixturevalue("private_redis").url)
    await queue.open()
    try:
        yield queue
    finally:
        await queue.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteAuditStore]:
    backend = SqliteAuditStore(tmp_path / "audit.db")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


def ev(correlation_id: str = "rr-p", parent: AuditEvent | str | None = None) -> AuditEvent:
    parent_id = parent.event_id if isinstance(parent, AuditEvent) else parent
    body = event_body(correlation_id, parent_event_id=parent_id)
    return validate_event(body, datetime.now(UTC))


def worker(
    dlq: DeadLetterQueue,
    store: SqliteAuditStore,
    backoff: Sequence[float] = (0.0, 0.0, 0.0),
    **kw: int,
) -> ReplayWorker:
    return ReplayWorker(dlq, store, backoff, DataStorageMetrics(CollectorRegistry()), **kw)


async def stored_ids(store: SqliteAuditStore, correlation_id: str = "rr-p") -> list[str]:
    rows = await store.chain(correlation_id)
    assert verify(correlation_id, rows).valid
    return [row["event_id"] for row in rows]


async def test_waiting_names_queued_events_with_their_due(dlq: DeadLetterQueue) -> None:
    kept, acked, buried = ev(), ev("rr-a"), ev("rr-b")
    await dlq.put([kept, acked, buried], due=100.0)
    await dlq.put([kept], due=200.0)  # a client retry queued it again: the latest answers
    ids = [kept.event_id, acked.event_id, buried.event_id, str(uuid.uuid4())]
    assert await dlq.waiting(ids) == {
        kept.event_id: Waiting(200.0, "rr-p"),
        acked.event_id: Waiting(100.0, "rr-a"),
        buried.event_id: Waiting(100.0, "rr-b"),
    }
    letters = {ltr.event_id: ltr for ltr in await dlq.due(None, 10) if ltr.due == 100.0}
    await dlq.ack([letters[acked.event_id]])
    await dlq.bury([letters[buried.event_id]], "attempts exhausted")
    assert await dlq.waiting(ids) == {kept.event_id: Waiting(200.0, "rr-p")}
    newest = next(ltr for ltr in await dlq.due(None, 10) if ltr.due == 200.0)
    await dlq.reschedule([replace(newest, due=300.0)])
    assert await dlq.waiting(ids) == {kept.event_id: Waiting(300.0, "rr-p")}
    assert await dlq.waiting([]) == {}


async def test_waiting_survives_a_restart(dlq: DeadLetterQueue, tmp_path: Path) -> None:
    """The file queue's index is in memory: a new process rebuilds it on open."""
    parent = ev()
    await dlq.put([parent], due=100.0)
    again: DeadLetterQueue
    if isinstance(dlq, FileDeadLetterQueue):
        again = FileDeadLetterQueue(dlq.path)
    else:
        assert isinstance(dlq, RedisDeadLetterQueue)
        again = RedisDeadLetterQueue(dlq._url)
    await again.open()
    try:
        assert await again.waiting([parent.event_id]) == {parent.event_id: Waiting(100.0, "rr-p")}
    finally:
        await again.close()


async def test_child_replayed_in_a_later_batch_than_its_parent(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    parent = ev()
    child = ev(parent=parent)
    await dlq.put([parent], due=time.time() - 2)
    await dlq.put([child], due=time.time() - 1)
    replay = worker(dlq, store, batch_size=1)
    assert (await replay.run_once()).replayed == 1
    assert await stored_ids(store) == [parent.event_id]
    report = await replay.run_once()
    assert (report.replayed, report.rescheduled, report.waiting) == (1, 0, 0)
    assert await stored_ids(store) == [parent.event_id, child.event_id]


async def test_child_in_the_same_batch_after_its_parent(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    parent = ev()
    child = ev(parent=parent)
    grandchild = ev(parent=child)
    await dlq.put([parent, child, grandchild], due=time.time() - 1)
    report = await worker(dlq, store).run_once()
    assert (report.replayed, report.rescheduled, report.waiting) == (3, 0, 0)
    assert await stored_ids(store) == [parent.event_id, child.event_id, grandchild.event_id]
    assert await dlq.depth() == 0


async def test_children_met_before_their_parents_in_a_batch_are_stored_in_the_same_pass(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    """Due earlier than its parents (queued straight, not through the writer), a grandchild
    comes out first: it is tried again after the rest of the batch, using no attempt."""
    parent = ev()
    child = ev(parent=parent)
    grandchild = ev(parent=child)
    now = time.time()
    await dlq.put([grandchild], due=now - 30)
    await dlq.put([child], due=now - 20)
    await dlq.put([parent], due=now - 10)
    report = await worker(dlq, store).run_once()
    assert (report.replayed, report.rescheduled, report.waiting, report.dead) == (3, 0, 0, 0)
    assert await stored_ids(store) == [parent.event_id, child.event_id, grandchild.event_id]


async def test_child_due_before_its_parent_waits_without_using_an_attempt(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    parent = ev()
    child = ev(parent=parent)
    parent_due = time.time() + HOUR
    await dlq.put([parent], due=parent_due)
    await dlq.put([child], due=time.time() - 1)
    replay = worker(dlq, store, backoff=(60.0,))  # one attempt only: waiting must not use it
    report = await replay.run_once()
    assert (report.replayed, report.rescheduled, report.waiting) == (0, 0, 1)
    [letter] = [ltr for ltr in await dlq.due(None, 10) if ltr.event_id == child.event_id]
    assert (letter.attempts, letter.due) == (0, parent_due + AFTER_PARENT)  # just after it
    assert (await replay.drain()).replayed == 2
    assert await stored_ids(store) == [parent.event_id, child.event_id]


async def test_child_of_a_parent_nowhere_uses_its_attempts_and_dies(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    orphan = ev(parent=str(uuid.uuid4()))
    await dlq.put([orphan], due=time.time() - 1)
    replay = worker(dlq, store, backoff=(0.0, 0.0))
    assert (await replay.run_once()).rescheduled == 1
    assert (await replay.run_once()).dead == 1
    assert await dlq.depth() == 0


async def test_a_child_of_another_chains_event_is_buried_and_the_rest_replayed(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    """Queued while the database was down (its parent could not be looked at then), a child
    whose parent is an event of another correlation id is refused for itself at the replay.
    Unhandled, that refusal failed every pass, and no letter behind it was ever replayed (an
    outside check: 971 of 2,000 events stuck)."""
    elsewhere = ev("rr-other")
    await store.write([elsewhere])
    before, after = ev(), ev()
    stray = ev(parent=elsewhere)
    await dlq.put([before, stray, after], due=time.time() - 1)
    report = await worker(dlq, store).drain()
    assert (report.replayed, report.dead) == (2, 1)
    assert await stored_ids(store) == [before.event_id, after.event_id]
    assert [letter.event_id for letter in await dlq.dead()] == [stray.event_id]
    assert await dlq.depth() == 0


async def test_a_cycle_of_parents_ends_in_the_dead_queue(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    """Two queued events naming each other as parent can never be stored: they must not
    wait for each other forever."""
    first_id = str(uuid.uuid4())
    second = ev(parent=first_id)
    first = validate_event(
        event_body("rr-p", event_id=first_id, parent_event_id=second.event_id), datetime.now(UTC)
    )
    await dlq.put([first, second], due=time.time() - 1)
    replay = worker(dlq, store)
    for _ in range(20):
        if not await dlq.depth():
            break
        await replay.run_once()
    assert await dlq.depth() == 0
    assert await stored_ids(store) == []


async def test_a_child_whose_parent_is_due_but_beyond_the_pass_waits_for_it(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    """A backlog bigger than a pass, children due before their parents (rescheduled while
    the database refused writes): a parent due now but left for a later pass is not
    missing. Counted so, each child used an attempt, and deep chains were buried before
    the drain reached their ancestors (an outside check: 20 to 246 acknowledged events)."""
    chain = [ev()]
    for _ in range(5):
        chain.append(ev(parent=chain[-1]))
    now = time.time()
    for depth, event in enumerate(reversed(chain)):  # the deepest child first
        await dlq.put([event], due=now - 60 + depth)
    replay = worker(dlq, store, backoff=(60.0,), batch_size=2)  # one attempt only
    for _ in range(20):
        if not await dlq.depth():
            break
        await replay.run_once()
    assert await dlq.dead() == []
    assert await stored_ids(store) == [event.event_id for event in chain]


async def test_a_retry_with_other_content_is_stored_when_its_first_copy_is_refused(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    """Queued during an outage: an event whose parent belongs to another chain, then a
    client's retry of the same id with other content and no parent. The first copy is
    refused for itself; the retry is what the client last sent, and is stored (written
    together, the retry was buried as a conflict with a copy that was never stored)."""
    elsewhere = ev("rr-other")
    await store.write([elsewhere])
    first = ev(parent=elsewhere)
    retry = validate_event(
        event_body("rr-p", event_id=first.event_id, event_data={"v": "B"}), datetime.now(UTC)
    )
    await dlq.put([first], due=time.time() - 2)
    await dlq.put([retry], due=time.time() - 1)
    report = await worker(dlq, store).run_once()
    assert (report.replayed, report.dead) == (1, 1)
    [row] = await store.chain("rr-p")
    assert row["event_data"] == {"v": "B"}
    [dead] = await dlq.dead()
    assert dead.fields["event_data"] == first.fields["event_data"]
    assert await dlq.depth() == 0


async def test_a_retry_queued_behind_a_first_copy_waiting_for_its_parent_waits_too(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    """The first copy waits for its parent (queued for later); the client's retry of its id
    with other content must not be stored meanwhile: it was, and the first copy, accepted
    first, was then buried as a conflict with it (an outside check)."""
    parent = ev()
    first = ev(parent=parent)
    retry = validate_event(
        event_body("rr-p", event_id=first.event_id, event_data={"v": "B"}), datetime.now(UTC)
    )
    await dlq.put([first], due=time.time() - 2)
    await dlq.put([retry], due=time.time() - 1)
    await dlq.put([parent], due=time.time() + HOUR)
    replay = worker(dlq, store, backoff=(60.0,))
    report = await replay.run_once()
    assert (report.replayed, report.dead, report.waiting) == (0, 0, 2)
    await replay.drain()
    assert await stored_ids(store) == [parent.event_id, first.event_id]
    [row] = [r for r in await store.chain("rr-p") if r["event_id"] == first.event_id]
    assert row["event_data"] == first.fields["event_data"]
    [dead] = await dlq.dead()
    assert (dead.fields["event_data"], await dlq.depth()) == ({"v": "B"}, 0)


class CountingStore:
    """The real store, its writes counted (how many round trips a pass took)."""

    def __init__(self, store: SqliteAuditStore) -> None:
        self._store = store
        self.writes = 0

    async def write(self, events: Sequence[AuditEvent]) -> WriteResult:
        self.writes += 1
        return await self._store.write(events)

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


async def test_a_pass_with_refused_letters_writes_the_rest_together(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    """As an outage leaves a queue: children due before their rescheduled parents, and a
    letter the store refuses for itself. The refused ones are taken out and the rest stored
    in a few writes, not one write (and one queue change) per letter: one at a time such a
    queue replayed at 50 to 90 events/s (an outside check)."""
    elsewhere = ev("rr-other")
    await store.write([elsewhere])
    chains = [f"rr-{n}" for n in range(60)]
    parents = [ev(chain) for chain in chains]
    children = [ev(chain, parent=parent) for chain, parent in zip(chains, parents, strict=True)]
    stray = ev("rr-0", parent=elsewhere)
    now = time.time()
    await dlq.put(children[:30], due=now - 30)
    await dlq.put([stray], due=now - 25)
    await dlq.put(children[30:], due=now - 20)
    await dlq.put(parents, due=now - 10)
    counting = CountingStore(store)
    report = await worker(dlq, counting, batch_size=500).run_once()  # type: ignore[arg-type]
    assert (report.replayed, report.dead, report.rescheduled, report.waiting) == (120, 1, 0, 0)
    assert counting.writes <= 4
    for chain, parent, child in zip(chains, parents, children, strict=True):
        assert await stored_ids(store, chain) == [parent.event_id, child.event_id]
    assert [letter.event_id for letter in await dlq.dead()] == [stray.event_id]
    assert await dlq.depth() == 0


def writer(store: object, dlq: DeadLetterQueue) -> AuditWriter:
    return AuditWriter(store, dlq, DataStorageMetrics(CollectorRegistry()))  # type: ignore[arg-type]


async def test_writer_queues_a_child_behind_its_queued_parent(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    parent = ev()
    parent_due = time.time() + HOUR
    await dlq.put([parent], due=parent_due)  # queued during an outage; the database is back
    child = ev(parent=parent)
    outcome = await writer(store, dlq).write([ev(), child])
    assert outcome.written is Written.QUEUED
    assert (await dlq.waiting([child.event_id]))[child.event_id].due >= parent_due
    assert await stored_ids(store) == []

    bogus = ev(parent=str(uuid.uuid4()))
    with pytest.raises(MissingParent) as refused:
        await writer(store, dlq).write([ev(parent=parent), bogus])
    assert refused.value.indexes == {1: bogus.parent_event_id}  # the queued parent is fine

    assert (await worker(dlq, store).drain()).replayed == 3
    assert (await stored_ids(store))[0] == parent.event_id
    assert (await stored_ids(store))[-1] == child.event_id


async def test_writer_refuses_a_child_of_a_queued_parent_of_another_correlation_id(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    """Refused (400) as it is once its parent is stored, not queued with 202 and buried at
    the replay (an outside check: the sender was told 202, the event never stored)."""
    parent = ev("rr-a")
    await dlq.put([parent], due=time.time() + HOUR)  # queued during an outage; back now
    stray = ev("rr-b", parent=parent)
    with pytest.raises(ForeignParent) as refused:
        await writer(store, dlq).write([ev("rr-b"), stray])
    assert refused.value.indexes == {1: (parent.event_id, "rr-a")}
    assert await dlq.waiting([stray.event_id]) == {}
    # a child in the parent's own correlation id is still queued behind it
    assert (await writer(store, dlq).write([ev("rr-a", parent=parent)])).written is Written.QUEUED


async def test_while_the_database_is_down_a_child_of_a_known_foreign_parent_is_refused(
    dlq: DeadLetterQueue,
) -> None:
    """Whether a parent is stored cannot be known while the database is down, but one
    waiting in the queue, or earlier in the batch, can: its child of another correlation id
    was queued with 202 and buried at the replay (an outside check), and is refused now."""

    class DatabaseDown:
        async def write(self, events: Sequence[AuditEvent]) -> WriteResult:
            raise StoreUnavailable("connection refused")

    parent = ev("rr-a")
    await dlq.put([parent], due=time.time() + HOUR)  # queued earlier in the outage
    down = writer(DatabaseDown(), dlq)
    with pytest.raises(ForeignParent) as refused:
        await down.write([ev("rr-b"), ev("rr-b", parent=parent)])
    assert refused.value.indexes == {1: (parent.event_id, "rr-a")}
    in_batch = ev("rr-c")
    with pytest.raises(ForeignParent):
        await down.write([in_batch, ev("rr-d", parent=in_batch)])
    # its own correlation's child, and a parent nobody here knows, are queued as before
    outcome = await down.write([ev("rr-a", parent=parent), ev("rr-e", parent=str(uuid.uuid4()))])
    assert outcome.written is Written.QUEUED
    assert outcome.why == "the audit database is unavailable"


async def test_writer_looks_again_at_a_parent_replayed_meanwhile(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    """The replay stores a parent, then acks it: a writer that saw it missing from the store
    and then missing from the queue finds it stored on a second look."""
    parent = ev()

    class ReplayedMeanwhile:
        def __init__(self) -> None:
            self.calls = 0

        async def write(self, events: Sequence[AuditEvent]) -> WriteResult:
            self.calls += 1
            if self.calls == 1:
                await store.write([parent])  # the replay of another replica, meanwhile
                raise MissingParent({0: parent.event_id})
            return await store.write(events)

    child = ev(parent=parent)
    outcome = await writer(ReplayedMeanwhile(), dlq).write([child])
    assert outcome.written is Written.STORED
    assert await stored_ids(store) == [parent.event_id, child.event_id]


async def test_writer_cannot_ask_an_unreachable_queue_and_says_retry(
    store: SqliteAuditStore, private_redis: RedisServer
) -> None:
    dlq = RedisDeadLetterQueue(private_redis.url, timeout=2.0)
    await dlq.open()
    try:
        private_redis.stop()
        with pytest.raises(ParentsUnconfirmed):
            await writer(store, dlq).write([ev(parent=str(uuid.uuid4()))])
    finally:
        await dlq.close()


async def test_a_queued_event_stands_against_a_later_write_of_its_id(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    """An event accepted with 202 during an outage waits in the queue; a write of the same id
    with other content arriving once the database is back must not win over it (found from
    outside: the later write was stored and the acknowledged one dead-lettered). It queues
    behind: the replay stores the first, a same-content retry is stored once, a different
    one is the conflict."""
    first = ev("rr-q")
    await dlq.put([first], due=time.time() - 1)  # as the write path queues it in an outage
    other_fields = {**first.fields, "event_action": "changed-meanwhile"}
    other = AuditEvent.from_fields(other_fields)
    writer = AuditWriter(store, dlq, DataStorageMetrics(CollectorRegistry()))
    assert (await writer.write([other])).written is Written.QUEUED
    retry = AuditEvent.from_fields(dict(first.fields))
    assert (await writer.write([retry])).written is Written.QUEUED
    report = await worker(dlq, store).drain()
    assert report.replayed == 2 and report.dead == 1  # the first and its retry; the other
    rows = await store.chain("rr-q")
    assert [row["event_id"] for row in rows] == [first.event_id]
    assert rows[0]["event_action"] == first.fields["event_action"]
    # nothing of it waits any more: the next write goes to the database directly
    assert await dlq.waiting([first.event_id]) == {}


async def test_dead_letters_are_forgotten_once_queued_again(dlq: DeadLetterQueue) -> None:
    """`requeue-dead`'s two steps, on each backend: the buried letters queued again, then
    removed from the dead store; the others stay dead."""
    events = [ev(f"rr-{uuid.uuid4().hex[:6]}") for _ in range(3)]
    await dlq.put(events, due=0.0)
    before = time.time()
    await dlq.bury(await dlq.due(None, 10), "attempts exhausted")
    dead = await dlq.dead()
    assert sorted(letter.event_id for letter in dead) == sorted(e.event_id for e in events)
    # what `dead-letters` shows an operator: why, and when
    assert {letter.reason for letter in dead} == {"attempts exhausted"}
    assert all(
        letter.buried is not None and before - 1 <= letter.buried <= time.time() + 1
        for letter in dead
    )
    revived, staying = dead[:2], dead[2:]
    await dlq.put([AuditEvent.from_fields(letter.fields) for letter in revived], due=0.0)
    await dlq.forget_dead(revived)
    assert [letter.event_id for letter in await dlq.dead()] == [staying[0].event_id]
    queued = await dlq.due(time.time(), 10)
    assert sorted(letter.event_id for letter in queued) == sorted(
        letter.event_id for letter in revived
    )


def test_requeue_dead_puts_buried_events_back_to_be_stored(tmp_path: Path) -> None:
    """After the cause of a burial is mended, `signalgate-datastorage requeue-dead` queues
    the dead letters again and `replay-dlq` stores them; a letter that is no event stays."""
    import asyncio
    import json
    import os
    import subprocess
    import sys

    async def bury() -> list[str]:
        queue = FileDeadLetterQueue(tmp_path / "audit-dlq.jsonl")  # the default path
        await queue.open()
        events = [ev(f"rr-{uuid.uuid4().hex[:6]}") for _ in range(2)]
        await queue.put(events, due=0.0)
        await queue.bury(await queue.due(None, 10), "attempts exhausted")
        with open(queue.dead_path, "ab") as dead:  # a line whose event no longer reads
            dead.write(json.dumps({"key": "x", "event": {}, "attempts": 6}).encode() + b"\n")
            dead.write(b'{"key": "y", "event": {"ev\n')  # torn by a crash: shown, kept
        return [e.correlation_id for e in events]

    correlation_ids = asyncio.run(bury())
    env = {**os.environ, "SIGNALGATE_DATADIR": str(tmp_path)}

    def command(*argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "signalgate", "datastorage", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    listed = [json.loads(line) for line in command("dead-letters").splitlines()]
    assert listed[-1] == {
        "dead": 4,
        "reasons": {"": 1, "attempts exhausted": 2, "unreadable line": 1},
    }
    assert sorted(line["correlation_id"] or "" for line in listed[:-1]) == sorted(
        ["", "", *correlation_ids]
    )
    assert all(line["buried"] for line in listed[:2])  # ISO times; the hand-made line has none
    assert listed[2]["buried"] is None and listed[2]["event_id"] is None

    # one event chosen by id: only it is queued again
    first = listed[0]["event_id"]
    assert "requeued 1 dead letter(s); 3 not chosen left in the dead store" in command(
        "requeue-dead", "--event-id", first
    )
    typo = command("requeue-dead", "--reason", "no such reason")
    assert "requeued 0 dead letter(s); 3 not chosen" in typo
    assert (
        "no dead letter matches; the dead letters' reasons: '', 'attempts exhausted', "
        "'unreadable line'" in typo
    )
    assert "requeued 1 dead letter(s); 2 not chosen" in command(
        "requeue-dead", "--reason", "attempts exhausted"
    )
    assert "replayed 2, rescheduled 0, dead 0, still queued 0" in command("replay-dlq")
    for correlation_id in correlation_ids:  # exit 1 when no event of it is stored
        assert json.loads(command("verify-chain", correlation_id))["events"] == 1
    assert "requeued 0 dead letter(s); 2 unreadable" in command("requeue-dead")


async def test_a_drain_goes_past_an_orphan_and_uses_one_of_its_attempts(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    """`replay-dlq` with one child whose parent is nowhere in front of the queue: the drain
    ended after its first pass (499 of 2,000 stored with the database up) and each run used
    one of the orphan's attempts (an outside check). Now it stores everything else in one
    run, and the orphan waits, one attempt used, for its schedule."""
    orphan = ev("rr-orphan", parent=str(uuid.uuid4()))
    await dlq.put([orphan], due=0.0)
    others = [ev(f"rr-{n % 7}") for n in range(250)]
    await dlq.put(others, due=0.0)
    backoff = (60.0, 60.0, 60.0, 60.0)
    report = await worker(dlq, store, backoff, batch_size=40).drain()
    assert (report.replayed, report.rescheduled, report.dead) == (250, 1, 0)
    [left] = await dlq.due(None, 10)
    assert (left.event_id, left.attempts) == (orphan.event_id, 1)
    for n in range(7):
        assert len(await stored_ids(store, f"rr-{n}")) == len(others[n::7])
    # a second run: nothing else queued, one more attempt of the orphan's, no more
    again = await worker(dlq, store, backoff, batch_size=40).drain()
    assert (again.replayed, again.rescheduled, again.dead) == (0, 1, 0)
    [left] = await dlq.due(None, 10)
    assert left.attempts == 2


def test_replay_dlq_that_buries_letters_exits_1(tmp_path: Path) -> None:
    """A run that buried letters exited 0, so a script could not tell (an outside check):
    it was refused events, as one that reschedules them."""
    import asyncio
    import os
    import subprocess
    import sys

    async def queue_an_orphan() -> None:
        queue = FileDeadLetterQueue(tmp_path / "audit-dlq.jsonl")
        await queue.open()
        await queue.put([ev("rr-orphan", parent=str(uuid.uuid4()))], due=0.0)
        await queue.close()

    asyncio.run(queue_an_orphan())
    done = subprocess.run(
        [sys.executable, "-m", "signalgate", "datastorage", "replay-dlq"],
        env={**os.environ, "SIGNALGATE_DATADIR": str(tmp_path), "SIGNALGATE_DLQ__BACKOFF": "1s"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "replayed 0, rescheduled 0, dead 1, still queued 0" in done.stdout


async def test_dead_letters_are_read_a_page_at_a_time(dlq: DeadLetterQueue) -> None:
    """`dead-letters` and `requeue-dead` held every dead letter with its event at once; an
    outage's worth of them took the command that much memory. They read pages, in burial
    order, on each backend."""
    events = [ev(f"rr-{uuid.uuid4().hex[:6]}") for _ in range(5)]
    await dlq.put(events, due=0.0)
    for letter in await dlq.due(None, 10):  # one at a time: the burial order is the queue's
        await dlq.bury([letter], "conflict")
    pages = [page async for page in dlq.dead_pages(2)]
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [letter.event_id for page in pages for letter in page] == [e.event_id for e in events]


def test_requeue_dead_queues_every_page_and_forgets_them(tmp_path: Path) -> None:
    """`requeue-dead` over more dead letters than a page (`DEAD_PAGE`): each page is queued
    as it is read, and every letter queued leaves the dead store, none twice."""
    import asyncio
    import subprocess
    import sys

    from signalgate.datastorage.dlq.base import DEAD_PAGE

    count = 2 * DEAD_PAGE + 1
    queue = FileDeadLetterQueue(tmp_path / "audit-dlq.jsonl")  # the default path

    async def bury() -> set[str]:
        await queue.open()
        events = [ev(f"rr-{n % 50}") for n in range(count)]
        await queue.put(events, due=0.0)
        await queue.bury(await queue.due(None, count), "attempts exhausted")
        return {event.event_id for event in events}

    buried = asyncio.run(bury())
    done = subprocess.run(
        [sys.executable, "-m", "signalgate", "datastorage", "requeue-dead"],
        env={**os.environ, "SIGNALGATE_DATADIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"requeued {count} dead letter(s)"

    async def look() -> tuple[list[str], int]:
        again = FileDeadLetterQueue(tmp_path / "audit-dlq.jsonl")
        queued = [letter.event_id for letter in await again.due(None, 2 * count)]
        return queued, len(await again.dead())

    queued, dead = asyncio.run(look())
    assert sorted(queued) == sorted(buried) and dead == 0


async def test_a_drain_goes_past_a_pass_of_children_waiting_for_a_later_parent(
    dlq: DeadLetterQueue, store: SqliteAuditStore
) -> None:
    """`replay-dlq` with more children in front of their parent than a pass takes: the
    first pass set them all aside to wait for the parent (no attempt used), stored nothing,
    and the drain ended there, the parent and the rest never tried ("replayed 0", exit 0).
    Now the drain goes past them to the parent, then stores them."""
    parent = ev("rr-p")
    children = [ev("rr-p", parent=parent) for _ in range(5)]
    await dlq.put(children, due=0.0)
    await dlq.put([parent], due=0.0)
    report = await worker(dlq, store, batch_size=2).drain()
    assert (report.replayed, report.rescheduled, report.dead) == (6, 0, 0)
    assert sorted(await stored_ids(store)) == sorted(e.event_id for e in [parent, *children])
    assert await dlq.depth() == 0
