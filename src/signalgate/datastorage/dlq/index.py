"""The file dead-letter queue's index: where each letter's line is, and what the queue needs
of it without its event.

The queue kept every letter's event parsed in memory (`Letter.fields`): a queue file of
20,000 Gateway-sized events (54 MB) took 255 MB of the process on open, about 4.7 times the
file, so a PostgreSQL outage of minutes under a Gateway's load made a queue the pod was
OOM-killed for, at every restart, as the queue was read again. The index holds a few dozen
bytes and a few small strings per letter, whatever its event's size; an event is read from
its line (`os.pread` by offset) only when its letter is handed out or the file rewritten.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson

log = logging.getLogger(__name__)


class Entry(NamedTuple):
    """One letter of the file: its `key`, where its line is (`offset`, `length`, the newline
    included), its `attempts` and `due` (the change records folded in), and what the write
    path asks of its event (`event_id`, `correlation_id`). `exact`: the line itself holds
    this `attempts` and `due` (no change record since it was written), so a rewrite copies
    its bytes as they are."""

    key: str
    offset: int
    length: int
    attempts: int
    due: float
    event_id: str
    correlation_id: str
    exact: bool = True


# a change made to a letter: its new attempts and due (None where it is gone)
Change = tuple[int, float]

# the longest line `scan` reads: a letter's event is bounded (event_data 256 KiB serialised,
# error_message 64 Ki characters, each at most six bytes escaped), so its line is a few MiB
# at most. A longer line is no letter (a file edited by hand, another program's output): it
# is read past in pieces and skipped. Read whole, a line of 300 MB took the process to
# 786 MB at open (an outside check), and a larger one would have had it OOM-killed at
# every start.
MAX_LINE = 16 * 1024 * 1024
# the piece an over-long line is read past (and copied) in
SKIP_CHUNK = 1024 * 1024


def entry_of(record: dict[str, Any], offset: int, length: int) -> Entry:
    """The index entry of a letter `record` written at `offset` as a line of `length` bytes
    (the one constructor: a letter read from the file, or one being queued).
    Raises KeyError, TypeError or ValueError for a record that is no letter."""
    event = record["event"]
    if not isinstance(event, dict):
        raise TypeError("the event is not an object")
    return Entry(
        str(record["key"]),
        offset,
        length,
        int(record["attempts"]),
        float(record["due"]),
        str(event.get("event_id", "")),
        # a correlation id is shared by the events of one remediation: one string for all
        sys.intern(str(event.get("correlation_id", ""))),
    )


class Scanned(NamedTuple):
    """What `scan` found: the file's `letters`, in queue order, with the change records after
    them folded in; the number of `lines` read; and where each `unreadable` line is
    (offset, length: a line that reads as no letter and no change record, its newline
    included where it has one), so a rewrite that leaves them out can keep them in the dead
    file first."""

    letters: dict[str, Entry]
    lines: int
    unreadable: list[tuple[int, int]]


def dead_file(path: Path) -> Path:
    """The dead file of the queue file at `path`: the buried letters, and the lines of the
    queue file that read as no letter, moved there by a rewrite."""
    return path.with_name(path.name + ".dead")


def scan(path: Path) -> Scanned:
    """The file's letters, in queue order, with the change records after them folded in, the
    number of lines read, and where its unreadable lines are. Read line by line: one line in
    memory at a time, never the file. A last line without its newline is a write torn by a
    crash (never answered for): skipped with a warning, like any line that does not read as
    a letter; the next append ends it with a newline. Any other unreadable line is moved to
    the dead file by the next rewrite (`FileDeadLetterQueue`), where `dead-letters` lists
    it."""
    letters: dict[str, Entry] = {}
    unreadable: list[tuple[int, int]] = []
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; absent: an empty queue
    except FileNotFoundError:
        return Scanned(letters, 0, unreadable)
    number = offset = 0
    with handle:
        for line, length, whole in lines(handle):
            number += 1
            start, offset = offset, offset + length
            try:
                if not whole:
                    raise ValueError("a torn line")
                if line is None:
                    raise ValueError(f"a line of {length:,} bytes, over {MAX_LINE:,}")
                record = orjson.loads(line)
                key = str(record["key"])
                if "event" not in record:  # a change record
                    if record.get("gone"):
                        letters.pop(key, None)
                    elif key in letters:
                        letters[key] = letters[key]._replace(
                            attempts=int(record["attempts"]),
                            due=float(record["due"]),
                            exact=False,
                        )
                    continue
                entry = entry_of(record, start, length)
                if key in letters:
                    entry = _twin(path, entry, number)
                letters[entry.key] = entry
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                unreadable.append((start, length))
                log.warning(
                    "skipping an unreadable dead-letter line"
                    + ("" if whole else " (no newline: ended at the next append)"),
                    extra={"path": str(path), "line": number, "kept_in": str(dead_file(path))},
                )
    return Scanned(letters, number, unreadable)


def lines(handle: IO[bytes]) -> Iterator[tuple[bytes | None, int, bool]]:
    """Each line of `handle` with its length in bytes and whether it is whole (ends with its
    newline: only a last line can end without); a line over `MAX_LINE` as None (read past
    in pieces of `SKIP_CHUNK`, never held whole)."""
    while line := handle.readline(MAX_LINE + 1):
        if len(line) <= MAX_LINE:
            yield line, len(line), line.endswith(b"\n")
            continue
        length = len(line)
        while not line.endswith(b"\n") and (line := handle.readline(SKIP_CHUNK)):
            length += len(line)
        yield None, length, line.endswith(b"\n")


def _twin(path: Path, entry: Entry, number: int) -> Entry:
    """A letter whose key an earlier letter of the file holds already (a line duplicated or
    edited by hand), indexed under a key of its own: `<key>~<offset>`, its line's offset
    (the same at every scan until a rewrite, which writes the key into its line). Indexed
    under the same key, the later letter replaced the earlier one in the index, and the
    next rewrite dropped the earlier one's event from the file for good (an outside check);
    a copy of the same event is stored once, as a replay of any letter is."""
    twin = entry._replace(key=f"{entry.key}~{entry.offset}", exact=False)
    log.warning(
        "a dead-letter key appears twice in the file: the later letter is kept under a key "
        "of its own",
        extra={"path": str(path), "line": number, "key": entry.key, "new_key": twin.key},
    )
    return twin


def _holds(entry: Entry, key: object) -> bool:
    """Whether a line whose record has `key` is `entry`'s: its key, or the key it was found
    twice under (`_twin`), at the offset that names it."""
    return key == entry.key or f"{key}~{entry.offset}" == entry.key


def read_event(fd: int, entry: Entry) -> dict[str, Any] | None:
    """The event of `entry`'s letter, read from its line in the file open at `fd`; None when
    that line is not this letter's any more (another process rewrote or emptied the file
    since the index was taken: the caller reads the index again)."""
    line = os.pread(fd, entry.length, entry.offset)
    if len(line) != entry.length or not line.endswith(b"\n"):
        return None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not _holds(entry, record.get("key")):
        return None
    event = record.get("event")
    return event if isinstance(event, dict) else None


def line_of(entry: Entry, line: bytes) -> bytes:
    """`entry`'s letter as a line of a rewritten file, from its `line` as it is in the file:
    the same bytes while they hold its key, attempts and due, else the record written anew
    with them (one event parsed at a time)."""
    if entry.exact:
        return line
    record = orjson.loads(line)
    record["key"], record["attempts"], record["due"] = entry.key, entry.attempts, entry.due
    return orjson.dumps(record) + b"\n"
