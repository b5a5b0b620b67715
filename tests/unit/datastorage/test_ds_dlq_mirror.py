"""The file dead-letter queue answers from a mirror of its file, read again only when the file
changed: the same letters as a fresh read of the file, whoever changed it.

Reading the whole file on every poll cost CPU and memory in proportion to the queue, every
second, with nothing due (an outside check). A `replay-dlq` run is another process on the same
file; a second queue object on the same path stands in for it here (what tells a change is
on disk: the file and its lock file's generation).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalgate.datastorage.dlq import FileDeadLetterQueue
from signalgate.datastorage.dlq import file as dlq_file
from signalgate.datastorage.dlq.base import Letter
from signalgate.datastorage.dlq.index import Scanned
from tests.unit.datastorage.test_ds_replay import events

HOUR = 3600.0


def shape(letters: list[Letter]) -> list[tuple[str, str, int, float]]:
    return [(ltr.key, ltr.event_id, ltr.attempts, ltr.due) for ltr in letters]


async def everything(queue: FileDeadLetterQueue) -> list[tuple[str, str, int, float]]:
    return shape(await queue.due(None, 10**6))


async def fresh(path: Path) -> list[tuple[str, str, int, float]]:
    queue = FileDeadLetterQueue(path)
    await queue.open()
    return await everything(queue)


async def test_an_unchanged_file_is_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = FileDeadLetterQueue(tmp_path / "dlq.jsonl")
    await queue.open()
    await queue.put(events(50), due=time.time() + HOUR)
    reads = 0
    parse = FileDeadLetterQueue._parse

    def counted(self: FileDeadLetterQueue) -> Scanned:
        nonlocal reads
        reads += 1
        return parse(self)

    monkeypatch.setattr(FileDeadLetterQueue, "_parse", counted)
    for _ in range(20):  # the replay worker's polls between retries, and its depth gauge
        assert await queue.due(time.time(), 500) == []
        assert await queue.depth() == 50
    await queue.put(events(5), due=time.time() + HOUR)  # its own append: mirrored
    letters = await queue.due(time.time() + 2 * HOUR, 500)
    await queue.reschedule([replace(ltr, attempts=1) for ltr in letters[:10]])
    await queue.ack(letters[10:20])
    assert await queue.depth() == 45
    assert reads == 0
    assert await everything(queue) == await fresh(queue.path)


async def test_what_another_process_does_is_seen_at_the_next_look(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    server, other = FileDeadLetterQueue(path), FileDeadLetterQueue(path)
    await server.open()
    await server.put(events(6), due=time.time() + HOUR)
    await other.open()
    letters = await other.due(None, 100)
    await other.ack(letters[:2])
    assert await server.depth() == 4
    await other.put(events(3), due=time.time() - 1)
    assert len(await server.due(time.time(), 100)) == 3  # due now: the poll finds them
    # two rewrites of the same size in a row: the second file can get the first's freed
    # inode back within one timestamp tick; the lock file's generation still tells
    for due in (time.time() + 2 * HOUR, time.time() + 3 * HOUR):
        queued = await other.due(None, 100)
        await other.reschedule([replace(ltr, due=due) for ltr in queued])
        assert await everything(server) == await everything(other) == await fresh(path)
    await server.ack(await server.due(None, 100))
    assert await other.depth() == 0 and await fresh(path) == []


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["server", "other"]),
        st.sampled_from(["put", "ack", "reschedule", "bury"]),
        st.integers(min_value=1, max_value=4),
    ),
    min_size=1,
    max_size=12,
)
# how many stale lines the file may hold: 0 and 2 have changes rewrite the file often, 1000
# never in these examples (appended records only)
COMPACTIONS = st.sampled_from([0, 2, 1000])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=OPERATIONS, compact_after=COMPACTIONS)
def test_both_queues_always_read_as_the_file_does(
    tmp_path_factory: pytest.TempPathFactory,
    operations: list[tuple[str, str, int]],
    compact_after: int,
) -> None:
    path = tmp_path_factory.mktemp("dlq") / "dlq.jsonl"

    async def run() -> None:
        queues = {"server": FileDeadLetterQueue(path), "other": FileDeadLetterQueue(path)}
        for queue in queues.values():
            await queue.open()
        for who, operation, count in operations:
            queue = queues[who]
            letters = (await queue.due(None, 100))[:count]
            if operation == "put":
                await queue.put(events(count), due=1000.0 + count)
            elif operation == "ack":
                await queue.ack(letters)
            elif operation == "reschedule":
                await queue.reschedule([replace(ltr, due=ltr.due + 1.0) for ltr in letters])
            else:
                await queue.bury(letters, "invalid")
            expected = await fresh(path)
            for queue in queues.values():
                assert await everything(queue) == expected

    with patch.object(dlq_file, "COMPACT_AFTER", compact_after):
        asyncio.run(run())


def written_bytes() -> int:
    """What this process has written so far (its threads included), from /proc."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


async def test_draining_a_queue_writes_in_proportion_to_it(tmp_path: Path) -> None:
    """A change appends a record; the file is rewritten only once its stale lines outnumber
    its letters. Before, each change rewrote the whole file: acking 400 letters one by one
    (a batch with a conflict goes one by one) from a 14 MB queue wrote 5.6 GB."""
    queue = FileDeadLetterQueue(tmp_path / "dlq.jsonl")
    await queue.open()
    for _ in range(6):
        await queue.put(events(500), due=time.time() - 1)
    size = queue.path.stat().st_size
    before = written_bytes()
    letters = await queue.due(time.time(), 500)
    for letter in letters[:300]:  # one by one
        await queue.ack([letter])
    await queue.reschedule([replace(ltr, attempts=1) for ltr in letters[300:]])
    while letters := await queue.due(None, 100):
        await queue.ack(letters)
    assert await queue.depth() == 0 and await fresh(queue.path) == []
    assert queue.path.stat().st_size == 0
    assert written_bytes() - before < 3 * size


async def test_the_file_holds_at_most_as_many_stale_lines_as_letters(tmp_path: Path) -> None:
    queue = FileDeadLetterQueue(tmp_path / "dlq.jsonl")
    await queue.open()
    await queue.put(events(400), due=time.time() - 1)
    inode = queue.path.stat().st_ino
    with patch.object(dlq_file, "COMPACT_AFTER", 10):
        await queue.ack((await queue.due(None, 5))[:5])
        assert queue.path.stat().st_ino == inode  # appended to, not rewritten
        rewritten = 0
        while letters := await queue.due(None, 7):
            await queue.ack(letters)
            live = await queue.depth()
            lines = len(queue.path.read_bytes().splitlines())
            assert lines - live <= max(live, 10)
            assert await fresh(queue.path) == await everything(queue)
            rewritten += queue.path.stat().st_ino != inode
            inode = queue.path.stat().st_ino
    assert 3 <= rewritten <= 12  # roughly each time the queue halved, not at every change
    assert queue.path.stat().st_size == 0
