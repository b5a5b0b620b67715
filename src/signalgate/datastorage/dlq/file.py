"""The dead-letter queue in a local append-only file: needs nothing else running."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import heapq
import logging
import math
import os
import time
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from signalgate.common.directories import disk_full
from signalgate.common.file_watch import Signature, signature
from signalgate.datastorage.dlq.base import Letter, Waiting
from signalgate.datastorage.errors import DeadLetterUnavailable
from signalgate.datastorage.events import AuditEvent

log = logging.getLogger(__name__)

# what tells a change of the queue file (`_state`): its generation and its signature
State = tuple[int, Signature]
# stale lines (letters gone or changed since written, and change records) the file may hold
# before a change rewrites it without them: at least this many, and at most as many as it
# has live letters, so draining a queue writes bytes in proportion to the queue. A rewrite
# per change made it quadratic: acking 400 letters one by one (a batch with a conflict) from
# a 14 MB queue wrote 5.6 GB and took 48 s.
COMPACT_AFTER = 1000
# the reason `dead()` gives a line of the dead file that does not read as a letter (a write
# torn by a crash, an edit by hand)
UNREADABLE_LINE = "unreadable line"


class FileDeadLetterQueue:
    """JSON lines, appended with fsync; changes (a letter replayed, rescheduled or buried)
    are appended too, as small records (`{"key", "gone"}`, `{"key", "attempts", "due"}`)
    that reading folds into the letters. Once the file's stale lines (letters gone or
    changed, and the records) outnumber its live letters (and `COMPACT_AFTER`), a change
    rewrites it atomically (tmp + rename) as the live letters alone; a queue emptied is
    truncated in place. So each change costs a small append, and the rewrites, each of the
    queue as it stands, add up to a few times the queue.

    A rewrite needs room for the whole queue beside it: on a disk too full for that, the
    changes are appended as records instead, and a later rewrite that fits drops them. When
    not even the records fit (the queue filled its own disk), the changes are kept in
    memory, folded into every read and written with the next rewrite or append that fits —
    and once every letter is replayed the file is truncated, which needs no room. So a full
    disk never keeps acknowledged events from being replayed and removed (a crash before
    they are written replays those letters again: each event is stored once).

    An `fcntl` lock serialises this process's writer with a `replay-dlq` run on the same file;
    a torn last line (crash mid-append) is skipped with a warning.

    The file is read (and parsed) only when it changed since this process last read or wrote
    it (`_state`: a generation its writers count up in the lock file, and the file's inode,
    size and change times): the replay worker's polls, the
    depth gauge and the writer's questions are answered from a mirror of it. Reading the
    whole file on each poll cost CPU and memory in proportion to the queue, every second,
    even with nothing due (an outside check: 24,000 queued events, 60 to 70 % of a core, no
    traffic). A `replay-dlq` run in another process changes the file, and the next look
    reads it. Which events wait here (`waiting`) is answered from an index of event id →
    due kept with the mirror; an id it lists is checked against the file before it is
    answered.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dead_path = path.with_name(path.name + ".dead")
        self._lock = asyncio.Lock()
        self._queued: dict[str, Waiting] = {}
        # changes no record of which fitted on the disk yet (see the class docstring)
        self._unwritten: dict[str, Letter | None] = {}
        # the file's letters as last read or written, and the signature it had then
        self._mirror: tuple[State, dict[str, Letter]] | None = None
        # the lines of the file the mirror was taken from (live letters and stale lines)
        self._lines = 0
        # the mirror with `_unwritten` folded in, in queue order (None: to be made again)
        self._view: list[Letter] | None = None
        self._earliest = math.inf  # the earliest due of `_view`

    async def open(self) -> None:
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        try:
            await self._call("read", self._read)
        except DeadLetterUnavailable as exc:  # like Redis down at start: the next read retries
            log.warning("dead-letter file not indexed yet", extra={"error": str(exc)})

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        await self._call("ping", self._check)

    def _check(self) -> None:
        if not os.access(self.path.parent, os.W_OK):
            raise OSError(f"directory '{self.path.parent}' is not writable")

    async def _call(self, action: str, func: Any, *args: Any) -> Any:
        async with self._lock:
            try:
                return await asyncio.to_thread(func, *args)
            except OSError as exc:
                raise DeadLetterUnavailable(
                    f"dead-letter file '{self.path}' {action} failed: {exc}"
                ) from exc

    async def put(self, events: Sequence[AuditEvent], due: float) -> None:
        added = [Letter(str(uuid.uuid4()), dict(event.fields), 0, due) for event in events]
        await self._call("append", self._enqueue, added, due)

    def _enqueue(self, added: list[Letter], due: float) -> None:
        before, after = self._append(self.path, [_record(letter) for letter in added])
        self._queued = self._queued | {letter.event_id: letter.waiting for letter in added}
        if self._mirror is None or self._mirror[0] != before:
            self._mirror = self._view = None  # changed by another process too: read it again
            return
        self._mirror[1].update((letter.key, letter) for letter in added)
        self._mirror = (after, self._mirror[1])
        self._lines += len(added)
        if self._view is not None:  # new keys: nothing unwritten applies to them
            self._view.extend(added)
            self._earliest = min(self._earliest, due)

    @staticmethod
    def _append(
        path: Path, records: Sequence[dict[str, Any]], lock: bool = True
    ) -> tuple[State, State]:
        """Append whole lines durably, or raise with the file as it was: a write the disk
        took only in part (full) is cut off again, so the caller's refusal (a 5xx, and the
        sender retries) never leaves half a letter behind, nor a letter it did not answer
        for. A torn tail from a crash mid-append (never answered) is cut first. `lock=False`:
        the caller holds the file's lock already (a second flock would wait for it). The
        file's `_state` before and after the append, both taken under the lock."""
        data = b"".join(orjson.dumps(record) + b"\n" for record in records)
        with _locked(path, lock) as held:
            end = _whole_lines_end(held.fd)
            try:
                view = memoryview(data)
                while view:  # a short write (the disk filling up) is continued, or raises
                    view = view[os.write(held.fd, view) :]
                os.fsync(held.fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(held.fd, end)
                raise
            return held.before, _state(path)

    async def due(self, now: float | None, limit: int) -> list[Letter]:
        letters: list[Letter] = await self._call("read", self._due, now, limit)
        return letters

    def _due(self, now: float | None, limit: int) -> list[Letter]:
        letters = self._read()
        if now is None:
            return letters[:limit]
        if now < self._earliest:
            return []  # the usual poll between retries: no letter looked at
        # as sorted()[:limit], which is stable (equal dues stay in queue order), without
        # sorting the whole queue at each pass of a long drain
        return heapq.nsmallest(limit, (ltr for ltr in letters if ltr.due <= now), key=_due_of)

    async def waiting(self, event_ids: Collection[str]) -> dict[str, Waiting]:
        if not any(event_id in self._queued for event_id in event_ids):
            return {}  # the usual answer, from memory
        # the index may be behind a `replay-dlq` run in another process (it catches up at the
        # next poll): a "yes" is checked against the file, as the writer acts on it
        await self._call("read", self._read)
        queued = self._queued
        return {event_id: queued[event_id] for event_id in event_ids if event_id in queued}

    def _read(self) -> list[Letter]:
        """Every letter, in queue order, the changes not written yet folded in; the event
        index is made again whenever this is. The caller must not change the list."""
        letters = self._file_letters()
        if self._view is not None:
            return self._view
        return self._viewing(_changed(letters.values(), self._unwritten))

    def _viewing(self, letters: list[Letter]) -> list[Letter]:
        """`letters` as the queue's view, with what derives from it (the event index, the
        earliest due)."""
        self._view = letters
        self._queued = _event_index(letters)
        self._earliest = min((letter.due for letter in letters), default=math.inf)
        return letters

    def _file_letters(self) -> dict[str, Letter]:
        """The file's letters: the mirror while the file has the signature it had when this
        process last read or wrote it, else read anew (a signature taken before the read: a
        change made during it shows at the next look)."""
        now = _state(self.path)
        if self._mirror is not None and self._mirror[0] == now:
            return self._mirror[1]
        letters, self._lines = self._parse()
        self._mirror, self._view = (now, letters), None
        return letters

    def _parse(self) -> tuple[dict[str, Letter], int]:
        """The file's letters, in queue order, with the change records appended after them
        folded in (see the class docstring), and the number of lines read."""
        letters: dict[str, Letter] = {}
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            return letters, 0
        lines = content.splitlines()
        for number, line in enumerate(lines, start=1):
            try:
                record = orjson.loads(line)
                key = str(record["key"])
                if "event" not in record:  # a change record
                    if record.get("gone"):
                        letters.pop(key, None)
                    elif key in letters:
                        letters[key] = Letter(
                            key,
                            letters[key].fields,
                            int(record["attempts"]),
                            float(record["due"]),
                        )
                    continue
                if not isinstance(record["event"], dict):
                    raise TypeError("the event is not an object")
                letters[key] = Letter(
                    key, record["event"], int(record["attempts"]), float(record["due"])
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning(
                    "skipping an unreadable dead-letter line",
                    extra={"path": str(self.path), "line": number},
                )
        return letters, len(lines)

    async def ack(self, letters: Sequence[Letter]) -> None:
        await self._call("rewrite", self._rewrite, {ltr.key: None for ltr in letters}, [])

    async def reschedule(self, letters: Sequence[Letter]) -> None:
        await self._call("rewrite", self._rewrite, {ltr.key: ltr for ltr in letters}, [])

    async def bury(self, letters: Sequence[Letter], reason: str) -> None:
        now = time.time()
        dead = [
            {
                "key": ltr.key,
                "event": ltr.fields,
                "attempts": ltr.attempts,
                "reason": reason,
                "buried": now,
            }
            for ltr in letters
        ]
        await self._call("bury", self._rewrite, {ltr.key: None for ltr in letters}, dead)

    def _rewrite(self, changes: dict[str, Letter | None], dead: list[dict[str, Any]]) -> None:
        """`changes` made to the file (None: the letter is gone), in time in proportion to
        them, not to the queue (but for the rare rewrite: see the class docstring)."""
        if dead:
            self._append(self.dead_path, dead)
        with _locked(self.path) as held:
            if self._mirror is not None and self._mirror[0] == held.before:
                # unchanged since this process last looked: only the generation moved
                self._mirror = (_state(self.path), self._mirror[1])
            letters = self._file_letters()
            pending = {**self._unwritten, **changes}
            if (full := self._recorded(letters, pending)) is None:
                self._unwritten = {}
                # the file reads as the mirror with the changes applied (rewritten, or its
                # change records appended)
                _apply(letters, pending)
                self._mirror = (_state(self.path), letters)
            else:
                if not self._unwritten:
                    log.warning(
                        "dead-letter changes kept in memory until the disk has room",
                        extra={"path": str(self.path), "error": str(full)},
                    )
                self._unwritten = pending  # the file, and so the mirror, as it was
            self._view = None  # made again, with what derives from it, at the next read

    def _recorded(
        self, letters: dict[str, Letter], pending: dict[str, Letter | None]
    ) -> OSError | None:
        """The file (`letters`, its lock held) made to hold them with the `pending` changes:
        the changes appended as small records while the stale lines stay within bounds
        (`COMPACT_AFTER`), else the file rewritten — or, no room for the queue twice,
        appended anyway. The disk's refusal when it has room for neither, else None."""
        gone = sum(1 for key, letter in pending.items() if letter is None and key in letters)
        live = len(letters) - gone
        lines = self._lines + len(pending)
        if live and lines - live <= max(live, COMPACT_AFTER):
            return self._appended(pending, lines)
        try:
            self._replace(_changed(letters.values(), pending))
            self._lines = live
            return None
        except OSError as exc:
            if not disk_full(exc):
                raise
        return self._appended(pending, lines)

    def _appended(self, pending: dict[str, Letter | None], lines: int) -> OSError | None:
        """The `pending` changes appended as records (the lock held); the disk's refusal
        when it has no room for them, else None."""
        try:
            self._append(self.path, _change_records(pending), lock=False)
        except OSError as exc:
            if not disk_full(exc):
                raise
            return exc
        self._lines = lines
        return None

    def _replace(self, kept: list[Letter]) -> None:
        """The file rewritten as `kept` (its lock held): emptied in place when nothing is
        kept (no room needed), else written beside it and renamed over it."""
        if not kept:
            with open(self.path, "r+b") as handle:
                handle.truncate(0)
                os.fsync(handle.fileno())
            return
        _write_whole(self.path, b"".join(orjson.dumps(_record(ltr)) + b"\n" for ltr in kept))

    async def depth(self) -> int:
        return len(await self._call("read", self._read))

    async def dead(self) -> list[Letter]:
        def read() -> list[Letter]:
            if not self.dead_path.exists():
                return []
            found = []
            for line in self.dead_path.read_bytes().splitlines():
                try:
                    record = orjson.loads(line)
                    if not isinstance(record["event"], dict):
                        raise TypeError("the event is not an object")
                    letter = Letter(
                        str(record["key"]),
                        record["event"],
                        int(record["attempts"]),
                        0,
                        reason=str(record.get("reason", "")),
                        buried=_seconds(record.get("buried")),
                    )
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    # shown, not skipped (`dead-letters` left a torn line out silently); no
                    # event, so `requeue-dead` counts it unreadable, and it stays in the file
                    letter = Letter("", {}, 0, 0, reason=UNREADABLE_LINE)
                found.append(letter)
            return found

        result: list[Letter] = await self._call("read", read)
        return result

    async def forget_dead(self, letters: Sequence[Letter]) -> None:
        await self._call("rewrite", self._forget_dead, {letter.key for letter in letters})

    def _forget_dead(self, keys: set[str]) -> None:
        """The dead file without the letters of `keys` (under its lock), written beside it
        and renamed over it."""
        if not keys:
            return
        with _locked(self.dead_path):
            kept = []
            for line in self.dead_path.read_bytes().splitlines():
                try:
                    gone = str(orjson.loads(line)["key"]) in keys
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    gone = False  # an unreadable line stays for a person to look at
                if not gone:
                    kept.append(line + b"\n")
            _write_whole(self.dead_path, b"".join(kept))


def _record(letter: Letter) -> dict[str, Any]:
    """A letter as a line of the file."""
    return {
        "key": letter.key,
        "event": letter.fields,
        "attempts": letter.attempts,
        "due": letter.due,
    }


def _apply(letters: dict[str, Letter], changes: dict[str, Letter | None]) -> None:
    """`changes` made to `letters` in place (None: the letter is gone); a change to a letter
    no longer there is none."""
    for key, letter in changes.items():
        if key not in letters:
            continue
        if letter is None:
            del letters[key]
        else:
            letters[key] = letter


def _changed(letters: Iterable[Letter], changes: dict[str, Letter | None]) -> list[Letter]:
    """`letters` with `changes` applied (None: the letter is gone), in queue order."""
    found = []
    for letter in letters:
        changed = changes.get(letter.key, letter)
        if changed is not None:
            found.append(changed)
    return found


def _due_of(letter: Letter) -> float:
    return letter.due


def _change_records(changes: dict[str, Letter | None]) -> list[dict[str, Any]]:
    return [
        {"key": key, "gone": True}
        if letter is None
        else {"key": key, "attempts": letter.attempts, "due": letter.due}
        for key, letter in changes.items()
    ]


def _whole_lines_end(fd: int) -> int:
    """Where the file's last whole line ends; a torn tail after it is cut off."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    if end != size:
        log.warning("cutting a torn dead-letter line", extra={"bytes": size - end})
        os.ftruncate(fd, end)
    return end


def _event_index(letters: Sequence[Letter]) -> dict[str, Waiting]:
    """event id → due and correlation id of the last letter holding it (a client retry may
    queue one twice)."""
    return {ltr.event_id: ltr.waiting for ltr in letters if ltr.event_id}


@dataclass
class _Held:
    """The file, locked: its append descriptor, and its `_state` just before this holder
    counted its generation up."""

    fd: int
    before: State


@contextlib.contextmanager
def _locked(path: Path, lock: bool = True) -> Iterator[_Held]:
    """An append (and read) descriptor on `path`, holding an exclusive `flock` on its
    `.lock` file (unless the caller holds it already: `lock=False`; a second flock of this
    process on another descriptor would wait for the first). The file's generation (in the
    `.lock` file) is counted up on the way in, before the holder changes anything, so a
    reader that looked before any change of it sees another state afterwards."""
    lock_fd = os.open(_lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if lock:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        generation = _generation_at(lock_fd)
        before = (generation, signature(path))
        os.pwrite(lock_fd, (generation + 1).to_bytes(8, "big"), 0)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            yield _Held(fd, before)
        finally:
            os.close(fd)
    finally:
        os.close(lock_fd)


def _write_whole(path: Path, data: bytes) -> None:
    """`path` holding `data` (its lock held): written durably beside it and renamed over
    it, so a crash leaves the old file or the new one."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):  # a part written takes room a retry needs
            temporary.unlink()
        raise


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _generation_at(lock_fd: int) -> int:
    return int.from_bytes(os.pread(lock_fd, 8, 0).rjust(8, b"\0"), "big")


def _state(path: Path) -> State:
    """What tells that the file changed since it was last looked at: its generation, which
    every writer of this module counts up under the lock before it changes the file (a
    rewrite's new file can get a freed inode back, with the same size, within the file
    system's timestamp tick), and its signature (a change made while a reader looked, or
    by anything else)."""
    try:
        lock_fd = os.open(_lock_path(path), os.O_RDONLY)
    except FileNotFoundError:
        generation = 0
    else:
        try:
            generation = _generation_at(lock_fd)
        finally:
            os.close(lock_fd)
    return (generation, signature(path))


def _seconds(value: object) -> float | None:
    """A dead record's burial time, None when it has none (buried before they were timed)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
