"""The file dead-letter queue on files it did not write as they are: a letter's key found
twice, a line far longer than any letter, the file deleted or truncated under a running
service. No letter still in the file is lost, no such line takes the process's memory, and
what went missing is said (an outside check found each silent or lossy).
"""

from __future__ import annotations

import logging
import resource
import time
import tracemalloc
from pathlib import Path

import orjson
import pytest

from signalgate.datastorage.dlq import FileDeadLetterQueue
from signalgate.datastorage.dlq import file as dlq_file
from signalgate.datastorage.dlq import index as dlq_index
from tests.unit.datastorage.test_ds_replay import events, no_room_beside


async def test_a_key_found_twice_keeps_both_letters_through_replay_and_rewrite(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A letter line pasted with another letter's key: the index kept the later one under
    the key, and the rewrite that followed dropped the earlier one's event for good."""
    monkeypatch.setattr(dlq_file, "COMPACT_AFTER", 0)  # the next change rewrites the file
    path = tmp_path / "dlq.jsonl"
    queue = FileDeadLetterQueue(path)
    await queue.put(events(3), due=time.time())
    first, second, third = path.read_bytes().splitlines(keepends=True)
    record = orjson.loads(second)
    record["key"] = orjson.loads(first)["key"]
    path.write_bytes(first + orjson.dumps(record) + b"\n" + third)
    expected = {orjson.loads(line)["event"]["event_id"] for line in (first, second, third)}

    edited = FileDeadLetterQueue(path)
    with caplog.at_level(logging.WARNING):
        letters = await edited.due(None, 10)
    assert {letter.event_id for letter in letters} == expected
    assert "a dead-letter key appears twice" in caplog.text

    # a reschedule of the twin, then a rewrite (every letter but the twin acknowledged):
    # the twin's event survives, under its own key, and reads again from a new process
    twin = next(letter for letter in letters if "~" in letter.key)
    await edited.reschedule([letter for letter in letters if letter is twin])
    await edited.ack([letter for letter in letters if letter is not twin])
    again = await FileDeadLetterQueue(path).due(None, 10)
    assert [(letter.key, letter.event_id) for letter in again] == [(twin.key, twin.event_id)]
    assert len(path.read_bytes().splitlines()) == 1  # rewritten: the twin's key in its line
    assert orjson.loads(path.read_bytes())["key"] == twin.key

    await edited.ack(again)
    assert await FileDeadLetterQueue(path).depth() == 0


async def test_a_line_longer_than_any_letter_is_skipped_without_reading_it_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 300 MB line amid the letters took the process to 786 MB at open; a larger one got
    it OOM-killed at every start. The bound is lowered here so the test stays small."""
    monkeypatch.setattr(dlq_index, "MAX_LINE", 64 * 1024)
    path = tmp_path / "dlq.jsonl"
    queue = FileDeadLetterQueue(path)
    await queue.put(events(2), due=time.time())
    with open(path, "ab") as handle:
        for _ in range(64):  # 64 MiB, one line
            handle.write(b"A" * (1 << 20))
        handle.write(b"\n")
    await queue.put(events(2), due=time.time())

    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reopened = FileDeadLetterQueue(path)
    with caplog.at_level(logging.WARNING):
        await reopened.open()
        letters = await reopened.due(None, 10)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert len(letters) == 4
    assert grown_kib < 32 * 1024, f"the process grew by {grown_kib} KiB reading the file"
    assert "skipping an unreadable dead-letter line" in caplog.text

    # the letters after the long line are where the index says: replayed, then gone
    await reopened.ack(letters)
    assert await FileDeadLetterQueue(path).depth() == 0


@pytest.mark.parametrize("how", ["deleted", "truncated"])
async def test_letters_gone_from_the_file_behind_the_queue_are_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """Deleted or truncated while the service ran, the file read as an empty queue without
    a word: the loss showed only as events missing later."""
    path = tmp_path / "dlq.jsonl"
    queue = FileDeadLetterQueue(path)
    await queue.open()
    await queue.put(events(5), due=time.time())
    assert await queue.depth() == 5
    if how == "deleted":
        path.unlink()
    else:
        with open(path, "r+b") as handle:
            handle.truncate(len(path.read_bytes().splitlines(keepends=True)[0]))
    with caplog.at_level(logging.WARNING):
        assert await queue.depth() == (0 if how == "deleted" else 1)
    gone = [r for r in caplog.records if "changed outside DataStorage" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelno == logging.ERROR
    assert getattr(gone[0], "letters_gone", None) == (5 if how == "deleted" else 4)

    # the queue goes on: a new letter is taken and handed out
    await queue.put(events(1), due=time.time())
    assert await queue.depth() == (1 if how == "deleted" else 2)


async def test_another_writers_changes_are_no_alarm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Letters a `replay-dlq` run (another queue on the file) replayed, rewrote away or
    emptied are its doing: no error line."""
    path = tmp_path / "dlq.jsonl"
    service, other = FileDeadLetterQueue(path), FileDeadLetterQueue(path)
    await service.put(events(40), due=time.time())
    assert await service.depth() == 40
    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            await other.ack(await other.due(None, 10))
            await service.depth()
    assert await service.depth() == 0
    assert "changed outside DataStorage" not in caplog.text


async def test_the_queue_files_entry_is_made_durable_when_made_and_when_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file made by an append, or renamed over the queue by a rewrite, lasts a power loss
    only once its directory is fsynced too: without it, the old file could come back without
    the letters answered 202 since (an outside check named the gap; a kill cannot show it)."""
    synced: list[Path] = []
    monkeypatch.setattr(dlq_file, "sync_directory", synced.append)
    monkeypatch.setattr(dlq_file, "COMPACT_AFTER", 0)  # the next change rewrites the file
    path = tmp_path / "dlq.jsonl"
    queue = FileDeadLetterQueue(path)
    await queue.put(events(2), due=time.time())
    assert synced == [tmp_path]  # the file was made
    await queue.put(events(2), due=time.time())
    assert synced == [tmp_path]  # an append to a file that was there: no directory change
    letters = await queue.due(None, 3)
    await queue.ack(letters)  # stale lines outnumber live ones: rewritten, renamed over it
    assert synced == [tmp_path, tmp_path]
    assert len(path.read_bytes().splitlines()) == 1


@pytest.mark.parametrize("acked", ["all", "some"])
async def test_unreadable_lines_are_moved_to_the_dead_file_by_a_rewrite(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, acked: str
) -> None:
    """A line edited by hand into no letter (and one far longer than any letter) was warned
    about at each read and then left out of the next rewrite: gone for good. The rewrite
    keeps them in the dead file first, byte for byte, where `dead-letters` lists them."""
    monkeypatch.setattr(dlq_file, "COMPACT_AFTER", 0)  # the next change rewrites the file
    monkeypatch.setattr(dlq_index, "MAX_LINE", 64 * 1024)
    path = tmp_path / "dlq.jsonl"
    await FileDeadLetterQueue(path).put(events(3), due=time.time())
    first, second, third = path.read_bytes().splitlines(keepends=True)
    edited = second.replace(b'"attempts":0', b'"attempts":0,,')  # a slip of the hand
    long = b'{"key":"x","event":"' + b"A" * (3 << 20) + b'"}\n'  # copied in 1 MiB pieces
    path.write_bytes(first + edited + long + third)

    queue = FileDeadLetterQueue(path)
    with caplog.at_level(logging.WARNING):
        letters = await queue.due(None, 10)
        assert len(letters) == 2
        await queue.ack(letters if acked == "all" else letters[:1])
    moved = [record for record in caplog.records if hasattr(record, "dead_path")]
    assert [(record.dead_path, record.lines) for record in moved] == [  # type: ignore[attr-defined]
        (str(queue.dead_path), 2)
    ]

    assert queue.dead_path.read_bytes() == edited + long
    assert [letter.reason for letter in await queue.dead()] == [dlq_file.UNREADABLE_LINE] * 2
    assert edited not in path.read_bytes()
    left = await FileDeadLetterQueue(path).due(None, 10)
    assert [letter.key for letter in left] == [
        letter.key for letter in letters[2 if acked == "all" else 1 :]
    ]

    # moved once: later rewrites (a new process's too) copy nothing again
    await queue.put(events(1), due=time.time())
    await FileDeadLetterQueue(path).ack(await FileDeadLetterQueue(path).due(None, 10))
    assert queue.dead_path.read_bytes() == edited + long
    assert await FileDeadLetterQueue(path).depth() == 0


async def test_an_unreadable_line_is_moved_once_when_a_rewrite_is_refused_for_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rewrite copied the unreadable lines to the dead file before it wrote the file
    replacing the queue: a disk with no room for that file refused the rewrite after the
    copy (the change went in as a record), and the next rewrite, by a process that read the
    file again, copied them once more: `dead-letters` listed one line twice, and
    `requeue-dead` counted it twice."""
    monkeypatch.setattr(dlq_file, "COMPACT_AFTER", 0)  # each change rewrites the file
    path = tmp_path / "dlq.jsonl"
    await FileDeadLetterQueue(path).put(events(3), due=time.time())
    with open(path, "ab") as handle:
        handle.write(b"an operator's note\n")
    await FileDeadLetterQueue(path).put(events(1), due=time.time())

    with monkeypatch.context() as full:
        no_room_beside(full)
        queue = FileDeadLetterQueue(path)
        replayed = (await queue.due(None, 10))[:-1]
        await queue.ack(replayed)  # no room for the rewrite: appended as records

    queue = FileDeadLetterQueue(path)  # a restart, or a `replay-dlq` run
    await queue.ack(await queue.due(None, 10))
    assert queue.dead_path.read_bytes() == b"an operator's note\n"
    assert [letter.reason for letter in await queue.dead()] == [dlq_file.UNREADABLE_LINE]
    assert await FileDeadLetterQueue(path).depth() == 0


async def test_a_dead_line_longer_than_any_letter_is_listed_and_kept_without_reading_it_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dead-letters` and `requeue-dead` read the dead file line by line, but a line was read
    whole however long: a rewrite moves the queue file's over-long lines there, so one of
    300 MB would have taken the command that much memory. It is read past (and kept, by
    `forget_dead`) in pieces, and listed as an unreadable line. The bound is lowered here
    so the test stays small; the memory is Python's, traced."""
    monkeypatch.setattr(dlq_index, "MAX_LINE", 64 * 1024)
    queue = FileDeadLetterQueue(tmp_path / "dlq.jsonl")
    await queue.put(events(3), due=time.time())
    first, *rest = await queue.due(None, 10)
    await queue.bury([first], "conflict")
    long = b'{"key":"x","event":"' + b"A" * (32 << 20) + b'"}\n'
    with open(queue.dead_path, "ab") as handle:
        handle.write(long)
    await queue.bury(rest, "invalid")

    tracemalloc.start()
    try:
        with caplog.at_level(logging.WARNING):
            dead = await queue.dead()
        await queue.forget_dead([letter for letter in dead if letter.reason == "invalid"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak:,} bytes at the peak"
    assert [letter.reason for letter in dead] == [
        "conflict",
        dlq_file.UNREADABLE_LINE,
        "invalid",
        "invalid",
    ]
    assert "a line longer than any letter" in caplog.text
    kept = queue.dead_path.read_bytes().splitlines(keepends=True)
    assert len(kept) == 2 and kept[1] == long
    assert orjson.loads(kept[0])["event"]["event_id"] == first.event_id
