"""The dead-letter queue in a local append-only file: needs nothing else running."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from signalgate.common.directories import disk_full
from signalgate.datastorage.dlq.base import Letter
from signalgate.datastorage.errors import DeadLetterUnavailable
from signalgate.datastorage.events import AuditEvent

log = logging.getLogger(__name__)


class FileDeadLetterQueue:
    """JSON lines, appended with fsync; changes rewrite the file atomically (tmp + rename).

    A rewrite needs room for the whole queue beside it: on a disk too full for that, the
    changes are appended instead, as small records (`{"key", "gone"}`, `{"key", "attempts",
    "due"}`) that reading folds into the letters, and the next rewrite that fits drops them.
    A queue emptied is truncated in place. When not even the records fit (the queue filled
    its own disk), the changes are kept in memory, folded into every read and written with
    the next rewrite or append that fits — and once every letter is replayed the file is
    truncated, which needs no room. So a full disk never keeps acknowledged events from being
    replayed and removed (a crash before they are written replays those letters again: each
    event is stored once).

    An `fcntl` lock serialises this process's writer with a `replay-dlq` run on the same file;
    a torn last line (crash mid-append) is skipped with a warning.

    Which events wait here (`waiting`) is answered from memory: an index of event id → due,
    built on `open()`, extended by our appends and rebuilt from every full read (each poll of
    the replay worker), so changes made by a `replay-dlq` run in another process show up
    within a poll; an id the index lists is checked against the file before it is answered.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dead_path = path.with_name(path.name + ".dead")
        self._lock = asyncio.Lock()
        self._queued: dict[str, float] = {}
        # changes no record of which fitted on the disk yet (see the class docstring)
        self._unwritten: dict[str, Letter | None] = {}

    async def open(self) -> None:
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        try:
            await self._call("read", self._load)
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
        lines = [
            {"key": str(uuid.uuid4()), "event": event.fields, "attempts": 0, "due": due}
            for event in events
        ]
        await self._call("append", self._enqueue, lines, due)

    def _enqueue(self, records: Sequence[dict[str, Any]], due: float) -> None:
        self._append(self.path, records)
        self._queued = self._queued | {str(r["event"]["event_id"]): due for r in records}

    @staticmethod
    def _append(path: Path, records: Sequence[dict[str, Any]], lock: bool = True) -> None:
        """Append whole lines durably, or raise with the file as it was: a write the disk
        took only in part (full) is cut off again, so the caller's refusal (a 5xx, and the
        sender retries) never leaves half a letter behind, nor a letter it did not answer
        for. A torn tail from a crash mid-append (never answered) is cut first. `lock=False`:
        the caller holds the file's lock already (a second flock would wait for it)."""
        data = b"".join(orjson.dumps(record) + b"\n" for record in records)
        with _locked(path, lock) as fd:
            end = _whole_lines_end(fd)
            try:
                view = memoryview(data)
                while view:  # a short write (the disk filling up) is continued, or raises
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, end)
                raise

    async def due(self, now: float | None, limit: int) -> list[Letter]:
        letters: list[Letter] = await self._call("read", self._load)
        if now is not None:
            # sorted() is stable: equal dues stay in file (queue) order
            letters = sorted((ltr for ltr in letters if ltr.due <= now), key=lambda ltr: ltr.due)
        return letters[:limit]

    async def waiting(self, event_ids: Collection[str]) -> dict[str, float]:
        if not any(event_id in self._queued for event_id in event_ids):
            return {}  # the usual answer, from memory
        # the index may be behind a `replay-dlq` run in another process (it catches up at the
        # next poll): a "yes" is checked against the file, as the writer acts on it
        await self._call("read", self._load)
        queued = self._queued
        return {event_id: queued[event_id] for event_id in event_ids if event_id in queued}

    def _load(self) -> list[Letter]:
        """Every letter in the file; the event index is rebuilt from what is there."""
        letters = self._read()
        self._queued = _event_index(letters)
        return letters

    def _read(self) -> list[Letter]:
        """The letters, in queue order, with the change records appended after them folded
        in (see the class docstring)."""
        if not self.path.exists():
            return []
        letters: dict[str, Letter] = {}
        for number, line in enumerate(self.path.read_bytes().splitlines(), start=1):
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
        return _changed(letters.values(), self._unwritten)

    async def ack(self, letters: Sequence[Letter]) -> None:
        await self._call("rewrite", self._rewrite, {ltr.key: None for ltr in letters}, [])

    async def reschedule(self, letters: Sequence[Letter]) -> None:
        await self._call("rewrite", self._rewrite, {ltr.key: ltr for ltr in letters}, [])

    async def bury(self, letters: Sequence[Letter], reason: str) -> None:
        dead = [
            {"key": ltr.key, "event": ltr.fields, "attempts": ltr.attempts, "reason": reason}
            for ltr in letters
        ]
        await self._call("bury", self._rewrite, {ltr.key: None for ltr in letters}, dead)

    def _rewrite(self, changes: dict[str, Letter | None], dead: list[dict[str, Any]]) -> None:
        if dead:
            self._append(self.dead_path, dead)
        with _locked(self.path):
            kept = _changed(self._read(), changes)  # the unwritten changes folded in already
            pending = {**self._unwritten, **changes}
            if (full := self._recorded(kept, pending)) is None:
                self._unwritten = {}
            else:
                if not self._unwritten:
                    log.warning(
                        "dead-letter changes kept in memory until the disk has room",
                        extra={"path": str(self.path), "error": str(full)},
                    )
                self._unwritten = pending
            self._queued = _event_index(kept)

    def _recorded(self, kept: list[Letter], pending: dict[str, Letter | None]) -> OSError | None:
        """The file made to hold `kept` (its lock held): rewritten, else — no room for the
        queue twice — the `pending` changes appended as small records. The disk's refusal
        when it has room for neither, else None."""
        try:
            self._replace(kept)
            return None
        except OSError as exc:
            if not disk_full(exc):
                raise
        try:
            self._append(self.path, _change_records(pending), lock=False)
            return None
        except OSError as exc:
            if not disk_full(exc):
                raise
            return exc

    def _replace(self, kept: list[Letter]) -> None:
        """The file rewritten as `kept` (its lock held): emptied in place when nothing is
        kept (no room needed), else written beside it and renamed over it."""
        if not kept:
            with open(self.path, "r+b") as handle:
                handle.truncate(0)
                os.fsync(handle.fileno())
            return
        records = [
            {"key": ltr.key, "event": ltr.fields, "attempts": ltr.attempts, "due": ltr.due}
            for ltr in kept
        ]
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(b"".join(orjson.dumps(record) + b"\n" for record in records))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError:
            with contextlib.suppress(OSError):  # a part written takes room a retry needs
                temporary.unlink()
            raise

    async def depth(self) -> int:
        return len(await self._call("read", self._load))

    async def dead(self) -> list[Letter]:
        def read() -> list[Letter]:
            if not self.dead_path.exists():
                return []
            found = []
            for line in self.dead_path.read_bytes().splitlines():
                with contextlib.suppress(orjson.JSONDecodeError, KeyError):
                    record = orjson.loads(line)
                    found.append(Letter(record["key"], record["event"], record["attempts"], 0))
            return found

        result: list[Letter] = await self._call("read", read)
        return result


def _changed(letters: Iterable[Letter], changes: dict[str, Letter | None]) -> list[Letter]:
    """`letters` with `changes` applied (None: the letter is gone), in queue order."""
    found = []
    for letter in letters:
        changed = changes.get(letter.key, letter)
        if changed is not None:
            found.append(changed)
    return found


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


def _event_index(letters: Sequence[Letter]) -> dict[str, float]:
    """event id → due of the last letter holding it (a client retry may queue one twice)."""
    return {ltr.event_id: ltr.due for ltr in letters if ltr.event_id}


@contextlib.contextmanager
def _locked(path: Path, lock: bool = True) -> Iterator[int]:
    """An append (and read) descriptor on `path`, holding an exclusive `flock` on its
    `.lock` file (unless the caller holds it already: `lock=False`; a second flock of this
    process on another descriptor would wait for the first)."""
    lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if lock:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            yield fd
        finally:
            os.close(fd)
    finally:
        os.close(lock_fd)
