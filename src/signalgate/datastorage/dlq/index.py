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
from pathlib import Path
from typing import Any, NamedTuple

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


def entry_of(record: dict[str, Any], offset: int, length: int) -> Entry:
    """The index entry of a letter `record` written at `offset` as a line of `length` bytes.
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


def scan(path: Path) -> tuple[dict[str, Entry], int]:
    """The file's letters, in queue order, with the change records after them folded in,
    and the number of lines read. Read line by line: one line in memory at a time, never
    the file. A last line without its newline is a write torn by a crash (never answered
    for): skipped with a warning, like any line that does not read as a letter."""
    letters: dict[str, Entry] = {}
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; absent: an empty queue
    except FileNotFoundError:
        return letters, 0
    number = offset = 0
    with handle:
        for line in handle:
            number += 1
            start, offset = offset, offset + len(line)
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("a torn line")
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
                letters[key] = entry_of(record, start, len(line))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                log.warning(
                    "skipping an unreadable dead-letter line",
                    extra={"path": str(path), "line": number},
                )
    return letters, number


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
    if not isinstance(record, dict) or record.get("key") != entry.key:
        return None
    event = record.get("event")
    return event if isinstance(event, dict) else None


def line_of(entry: Entry, line: bytes) -> bytes:
    """`entry`'s letter as a line of a rewritten file, from its `line` as it is in the file:
    the same bytes while they hold its attempts and due, else the record written anew with
    them (one event parsed at a time)."""
    if entry.exact:
        return line
    record = orjson.loads(line)
    record["attempts"], record["due"] = entry.attempts, entry.due
    return orjson.dumps(record) + b"\n"
