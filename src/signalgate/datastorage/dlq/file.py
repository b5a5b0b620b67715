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
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from signalgate.common.directories import disk_full, sync_directory
from signalgate.common.file_watch import Signature, signature
from signalgate.datastorage.dlq.base import DEAD_PAGE, Letter, Waiting
from signalgate.datastorage.dlq.index import (
    SKIP_CHUNK,
    Change,
    Entry,
    Scanned,
    dead_file,
    entry_of,
    line_of,
    lines,
    read_event,
    scan,
)
from signalgate.datastorage.errors import DeadLetterQueueFull, DeadLetterUnavailable
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
# how many times `due` reads the letters it chose before it gives up on a file that
# another process changes under each read
READ_TRIES = 3


class FileDeadLetterQueue:
    """JSON lines, appended with fsync; changes (a letter replayed, rescheduled or buried)
    are appended too, as small records (`{"key", "gone"}`, `{"key", "attempts", "due"}`)
    that reading folds into the letters. Once the file's stale lines (letters gone or
    changed, and the records) outnumber its live letters (and `COMPACT_AFTER`), a change
    rewrites it atomically (tmp + rename) as the live letters alone, copied line by line
    from the file; a queue emptied is truncated in place. So each change costs a small
    append, and the rewrites, each of the queue as it stands, add up to a few times the
    queue.

    A rewrite needs room for the whole queue beside it: on a disk too full for that, the
    changes are appended as records instead, and a later rewrite that fits drops them. When
    not even the records fit (the queue filled its own disk), the changes are kept in
    memory, folded into every read and written with the next rewrite or append that fits —
    and once every letter is replayed the file is truncated, which needs no room. So a full
    disk never keeps acknowledged events from being replayed and removed (a crash before
    they are written replays those letters again: each event is stored once).

    `max_bytes` bounds the file (`dlq.maxBytes`): a batch whose letters would take it past
    the bound is refused whole (`DeadLetterQueueFull`: its sender is answered 503 and
    retries), so an outage cannot fill the disk, nor the memory of a process that reads
    the queue at start. Change records are never refused for it: they drain the queue.

    An `fcntl` lock serialises this process's writer with a `replay-dlq` run on the same file.
    A line that reads as no letter (a torn last line from a crash mid-append, a line edited
    by hand) is skipped with a warning, and moved to the dead file by the next rewrite; a
    last line without its newline is ended with one by the next append.

    The file is read only when it changed since this process last read or wrote it
    (`_state`: a generation its writers count up in the lock file, and the file's inode,
    size and change times): the replay worker's polls, the depth gauge and the writer's
    questions are answered from an index of it (`index.Entry`: each letter's key, where
    its line is, its attempts, due, event id and correlation id). Reading the whole file
    on each poll cost CPU and memory in proportion to the queue, every second, even with
    nothing due (an outside check: 24,000 queued events, 60 to 70 % of a core, no traffic).
    The index holds no event: holding them parsed took 4.7 times the file in memory, and
    an outage's queue got the pod OOM-killed at every start. An event is read from its
    line (by offset) only when `due` hands its letter out, or a rewrite copies it. The
    lock file holds a second count, the generation whose change is done: letters missing
    from a read of the file while no writer counted a change are said in an error line
    (the file deleted or truncated by hand). A
    `replay-dlq` run in another process changes the file, and the next look reads it (a
    line found not to be its letter's any more is the same news). Which events wait here
    (`waiting`) is answered from an index of event id → letter kept with it; an id it
    lists is checked against the file before it is answered.
    """

    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        self.path = path
        self.dead_path = dead_file(path)
        self.max_bytes = max_bytes
        self._lock = asyncio.Lock()
        # event id -> the entry of the last letter holding it (a client retry may queue one
        # twice)
        self._queued: dict[str, Entry] = {}
        # changes no record of which fitted on the disk yet (see the class docstring)
        self._unwritten: dict[str, Change | None] = {}
        # the file's letters as last read or written, and the signature it had then
        self._mirror: tuple[State, dict[str, Entry]] | None = None
        # whether the mirror is the file as no writer was changing it: taken by this
        # process's own change (under the lock), or read while the file's last change was
        # over (`_settled`); only then do letters missing from the next read tell a change
        # made behind the writers' back
        self._settled = False
        # the lines of the file the mirror was taken from (live letters and stale lines)
        self._lines = 0
        # where that file's unreadable lines are (offset, length): moved to the dead file
        # before a rewrite leaves them out
        self._unreadable: list[tuple[int, int]] = []
        # the mirror with `_unwritten` folded in, in queue order (None: to be made again)
        self._view: list[Entry] | None = None
        self._earliest = math.inf  # the earliest due of `_view`
        # the file's size when a batch was last refused for `max_bytes`, until the file is
        # smaller or a batch is taken: `ping` says the queue is full meanwhile
        self._full_at: int | None = None

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
        if self._full_at is not None:
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size < self._full_at:
                self._full_at = None  # drained since: a batch may fit again
            else:
                raise self._full(size, 0)

    def _full(self, size: int, adding: int) -> DeadLetterQueueFull:
        assert self.max_bytes is not None
        return DeadLetterQueueFull(
            f"dead-letter file '{self.path}' is full: {size:,} bytes"
            + (f" and {adding:,} more" if adding else "")
            + f" would pass dlq.maxBytes ({self.max_bytes:,} bytes)",
            self.max_bytes,
        )

    async def _call(self, action: str, func: Any, *args: Any) -> Any:
        async with self._lock:
            try:
                return await asyncio.to_thread(func, *args)
            except OSError as exc:
                raise DeadLetterUnavailable(
                    f"dead-letter file '{self.path}' {action} failed: {exc}"
                ) from exc

    async def put(self, events: Sequence[AuditEvent], due: float) -> None:
        await self._call("append", self._enqueue, events, due)

    def _enqueue(self, events: Sequence[AuditEvent], due: float) -> None:
        """`events` appended as letters due at `due`, and their entries added to the mirror.
        Their lines are encoded here, in the queue's thread (a batch of 5 MiB is not
        encoded in the event loop), and dropped once written: the queue keeps the entries."""
        records = [
            {"key": str(uuid.uuid4()), "event": event.fields, "attempts": 0, "due": due}
            for event in events
        ]
        lines = [_line(record) for record in records]
        # each at offset 0 until the append says where the batch begins
        entries = [
            entry_of(record, 0, len(line)) for record, line in zip(records, lines, strict=True)
        ]
        try:
            start, before, after = self._append(self.path, lines, limit=self.max_bytes)
        except DeadLetterQueueFull:
            if not self._made_room(sum(entry.length for entry in entries)):
                raise
            start, before, after = self._append(self.path, lines, limit=self.max_bytes)
        self._full_at = None
        added: list[Entry] = []
        for entry in entries:
            added.append(entry._replace(offset=start))
            start += entry.length
        # in place (the loop's lookups in `waiting` are atomic): a copy per batch was the
        # whole index again, for every batch an outage queued
        self._queued.update((entry.event_id, entry) for entry in added)
        if self._mirror is None or self._mirror[0] != before:
            self._mirror = self._view = None  # changed by another process too: read it again
            return
        self._mirror[1].update((entry.key, entry) for entry in added)
        self._mirror, self._settled = (after, self._mirror[1]), True
        self._lines += len(added)
        if self._view is not None:  # new keys: nothing unwritten applies to them
            self._view.extend(added)
            self._earliest = min(self._earliest, due)

    def _append(
        self,
        path: Path,
        lines: Sequence[bytes],
        lock: bool = True,
        limit: int | None = None,
    ) -> tuple[int, State, State]:
        """Append whole lines durably, or raise with the file as it was: a write the disk
        took only in part (full) is cut off again, so the caller's refusal (a 5xx, and the
        sender retries) never leaves half a letter behind, nor a letter it did not answer
        for. A torn tail from a crash mid-append (never answered) is ended first. `lock=False`:
        the caller holds the file's lock already (a second flock would wait for it).
        `limit`: the size the file may not pass (`DeadLetterQueueFull`, nothing written).
        Returns where the lines begin in the file, and the file's `_state` before and after
        the append, both taken under the lock."""
        data = b"".join(lines)
        with _locked(path, lock) as held:
            end = _whole_lines_end(held.fd)
            if limit is not None and end + len(data) > limit:
                self._full_at = end
                raise self._full(end, len(data))
            _write_at_end(path, held.fd, end, [data])
            return end, held.before, _state(path)

    def _append_chunks(self, path: Path, chunks: Iterable[bytes]) -> None:
        """`chunks`, whole lines together, appended durably to `path` as they come (under
        its lock), or none of them."""
        with _locked(path) as held:
            _write_at_end(path, held.fd, _whole_lines_end(held.fd), chunks)

    def _made_room(self, adding: int) -> bool:
        """Whether the file, at its bound, was rewritten without its stale lines (letters
        replayed since it was last rewritten, change records) to take `adding` bytes more:
        when they fit beside its live letters and the stale lines take an eighth of the
        bound or more. A half-drained queue (its stale lines up to as many as its letters)
        otherwise refused writes with room for them; at an eighth, a rewrite of the queue
        frees an eighth of it at least, so a queue held at its bound writes at most eight
        times what it takes."""
        assert self.max_bytes is not None
        max_bytes = self.max_bytes

        def worth(stale: int, live_bytes: int) -> bool:
            return stale >= max_bytes // 8 and live_bytes + adding <= max_bytes

        return self._compacted(worth)

    def _compacted(self, worth: Callable[[int, int], bool] | None = None) -> bool:
        """Whether the file was rewritten as its live letters alone (the changes kept in
        memory applied), when `worth` it (given the stale and the live bytes; always when
        None); False when not worth it, or the disk has no room even for that."""
        with _locked(self.path) as held:
            if self._mirror is not None and self._mirror[0] == held.before:
                self._mirror, self._settled = (_state(self.path), self._mirror[1]), True
            letters = self._file_letters()
            live = _changed(letters.values(), self._unwritten)
            live_bytes = sum(entry.length for entry in live)
            stale = os.fstat(held.fd).st_size - live_bytes
            if worth is not None and not worth(stale, live_bytes):
                return False
            try:
                kept = self._replace(live)
            except OSError as exc:
                if not disk_full(exc):
                    raise
                return False
            letters.clear()
            letters.update((entry.key, entry) for entry in kept)
            self._lines, self._unwritten = len(kept), {}
            self._mirror, self._view = (_state(self.path), letters), None
            self._settled = True
            return True

    async def due(self, now: float | None, limit: int) -> list[Letter]:
        letters: list[Letter] = await self._call("read", self._due, now, limit)
        return letters

    def _due(self, now: float | None, limit: int) -> list[Letter]:
        """The letters chosen from the index, each event read from its line. A line that is
        not its letter's any more (another process rewrote the file since the index was
        taken) has the index read again, and the choice made again."""
        for _ in range(READ_TRIES):
            entries = self._read()
            if now is None:
                chosen = entries[:limit]
            elif now < self._earliest:
                return []  # the usual poll between retries: no letter looked at
            else:
                # as sorted()[:limit], which is stable (equal dues stay in queue order),
                # without sorting the whole queue at each pass of a long drain
                chosen = heapq.nsmallest(
                    limit, (entry for entry in entries if entry.due <= now), key=_due_of
                )
            letters = self._letters(chosen)
            if letters is not None:
                return letters
            self._mirror = self._view = None
        raise OSError(f"the file changed under each of {READ_TRIES} reads of its letters")

    def _letters(self, entries: Sequence[Entry]) -> list[Letter] | None:
        """`entries` as letters with their events, read from the file; None when a line is
        not its letter's any more."""
        if not entries:
            return []
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            letters = []
            for entry in entries:
                event = read_event(fd, entry)
                if event is None:
                    return None
                letters.append(Letter(entry.key, event, entry.attempts, entry.due))
            return letters
        finally:
            os.close(fd)

    async def waiting(self, event_ids: Collection[str]) -> dict[str, Waiting]:
        if not any(event_id in self._queued for event_id in event_ids):
            return {}  # the usual answer, from memory
        # the index may be behind a `replay-dlq` run in another process (it catches up at the
        # next poll): a "yes" is checked against the file, as the writer acts on it
        await self._call("read", self._read)
        queued = self._queued
        return {
            event_id: Waiting(queued[event_id].due, queued[event_id].correlation_id)
            for event_id in event_ids
            if event_id in queued
        }

    def _read(self) -> list[Entry]:
        """Every letter's entry, in queue order, the changes not written yet folded in; the
        event index is made again whenever this is. The caller must not change the list."""
        letters = self._file_letters()
        if self._view is not None:
            return self._view
        return self._viewing(_changed(letters.values(), self._unwritten))

    def _viewing(self, entries: list[Entry]) -> list[Entry]:
        """`entries` as the queue's view, with what derives from it (the event index, the
        earliest due)."""
        self._view = entries
        self._queued = {entry.event_id: entry for entry in entries if entry.event_id}
        self._earliest = min((entry.due for entry in entries), default=math.inf)
        return entries

    def _file_letters(self) -> dict[str, Entry]:
        """The file's letters: the mirror while the file has the signature it had when this
        process last read or wrote it, else read anew (a signature taken before the read: a
        change made during it shows at the next look)."""
        now = _state(self.path)
        if self._mirror is not None and self._mirror[0] == now:
            return self._mirror[1]
        settled = _settled(self.path, now[0])  # after the generation: see `_settled`
        letters, self._lines, self._unreadable = self._parse()
        if self._mirror is not None and self._settled:
            self._gone_behind_our_back(self._mirror, now, letters)
        self._mirror, self._view = (now, letters), None
        self._settled = settled
        return letters

    def _gone_behind_our_back(
        self, mirror: tuple[State, dict[str, Entry]], now: State, letters: dict[str, Entry]
    ) -> None:
        """An error line when letters the index held left the file while no writer of this
        module changed it (its generation as it was): the file deleted, truncated or edited
        by hand while the service ran. Those letters' events are gone with their lines, and
        the queue read them as an empty or shorter queue without a word (an outside check),
        so an operator learnt of the loss only from the events missing later."""
        (generation, _), held = mirror
        if now[0] != generation:
            return  # a writer of this module (this process, a `replay-dlq` run) changed it
        missing = sum(1 for key in held if key not in letters)
        if missing:
            log.error(
                "dead-letter file changed outside DataStorage: letters it held are gone from "
                "it (deleted, truncated or edited by hand?); their events are not replayed",
                extra={
                    "path": str(self.path),
                    "letters_gone": missing,
                    "exists": now[1] is not None,
                },
            )

    def _parse(self) -> Scanned:
        """The file's letters, in queue order, with the change records appended after them
        folded in (see the class docstring), the number of lines read, and where its
        unreadable lines are."""
        return scan(self.path)

    async def ack(self, letters: Sequence[Letter]) -> None:
        await self._call("rewrite", self._rewrite, {ltr.key: None for ltr in letters}, [])

    async def reschedule(self, letters: Sequence[Letter]) -> None:
        changes = {ltr.key: (ltr.attempts, ltr.due) for ltr in letters}
        await self._call("rewrite", self._rewrite, changes, [])

    async def bury(self, letters: Sequence[Letter], reason: str) -> None:
        now = time.time()
        dead = [
            _line(
                {
                    "key": ltr.key,
                    "event": ltr.fields,
                    "attempts": ltr.attempts,
                    "reason": reason,
                    "buried": now,
                }
            )
            for ltr in letters
        ]
        await self._call("bury", self._rewrite, {ltr.key: None for ltr in letters}, dead)

    def _rewrite(self, changes: dict[str, Change | None], dead: list[bytes]) -> None:
        """`changes` made to the file (None: the letter is gone), in time in proportion to
        them, not to the queue (but for the rare rewrite: see the class docstring)."""
        if dead:
            try:
                self._append(self.dead_path, dead)
            except OSError as exc:
                # the queue filled its own disk, and its replayed letters wait in memory
                # (`_unwritten`) for the room to say so: the file rewritten as the letters
                # left frees it. A letter to bury (a child whose parent never came) kept the
                # disk full for good: its burial had no room, the file never emptied, and
                # the next outage's writes were all refused (500)
                if not disk_full(exc) or not self._compacted():
                    raise
                self._append(self.dead_path, dead)
        with _locked(self.path) as held:
            if self._mirror is not None and self._mirror[0] == held.before:
                # unchanged since this process last looked: only the generation moved
                self._mirror, self._settled = (_state(self.path), self._mirror[1]), True
            letters = self._file_letters()
            pending = {**self._unwritten, **changes}
            if (full := self._recorded(letters, pending)) is None:
                self._unwritten = {}
                # `letters` reads as the file now does (rewritten, or its change records
                # appended)
                self._mirror, self._settled = (_state(self.path), letters), True
            else:
                if not self._unwritten:
                    log.warning(
                        "dead-letter changes kept in memory until the disk has room",
                        extra={"path": str(self.path), "error": str(full)},
                    )
                self._unwritten = pending  # the file, and so the mirror, as it was
            self._view = None  # made again, with what derives from it, at the next read

    def _recorded(
        self, letters: dict[str, Entry], pending: dict[str, Change | None]
    ) -> OSError | None:
        """The file (`letters`, its lock held) made to hold them with the `pending` changes,
        and `letters` made to read as it then does: the changes appended as small records
        while the stale lines stay within bounds (`COMPACT_AFTER`), else the file rewritten
        — or, no room for the queue twice, appended anyway. The disk's refusal when it has
        room for neither (`letters` as they were), else None."""
        gone = sum(1 for key, change in pending.items() if change is None and key in letters)
        live = len(letters) - gone
        lines = self._lines + len(pending)
        if live and lines - live <= max(live, COMPACT_AFTER):
            return self._appended(letters, pending, lines)
        try:
            kept = self._replace(_changed(letters.values(), pending))
        except OSError as exc:
            if not disk_full(exc):
                raise
            return self._appended(letters, pending, lines)
        letters.clear()
        letters.update((entry.key, entry) for entry in kept)
        self._lines = live
        return None

    def _appended(
        self, letters: dict[str, Entry], pending: dict[str, Change | None], lines: int
    ) -> OSError | None:
        """The `pending` changes appended as records (the lock held) and made to `letters`;
        the disk's refusal when it has no room for them, else None."""
        try:
            self._append(self.path, _change_records(pending), lock=False)
        except OSError as exc:
            if not disk_full(exc):
                raise
            return exc
        _apply(letters, pending)
        self._lines = lines
        return None

    def _replace(self, kept: list[Entry]) -> list[Entry]:
        """The file rewritten as `kept` (its lock held): emptied in place when nothing is
        kept (no room needed), else written beside it, each letter's line copied from the
        file (one at a time: never the queue in memory), and renamed over it. Its unreadable
        lines are moved to the dead file once the new file is written, before the rename
        (`_keep_unreadable`). Returns the letters' entries in the new file."""
        source = os.open(self.path, os.O_RDONLY)
        try:
            if not kept:
                self._keep_unreadable(source)
                with open(self.path, "r+b") as handle:
                    handle.truncate(0)
                    os.fsync(handle.fileno())
                return []
            moved: list[Entry] = []

            def copied() -> Iterator[bytes]:
                offset = 0
                for entry in kept:
                    line = os.pread(source, entry.length, entry.offset)
                    if len(line) != entry.length or not line.endswith(b"\n"):
                        raise OSError(f"the line of letter {entry.key} is not where it was")
                    line = line_of(entry, line)
                    moved.append(entry._replace(offset=offset, length=len(line), exact=True))
                    offset += len(line)
                    yield line

            # the new file is written before the unreadable lines are copied: a disk with no
            # room for it refused the rewrite after the copy, and each later rewrite copied
            # them to the dead file again
            _write_whole(self.path, copied(), before_rename=lambda: self._keep_unreadable(source))
        finally:
            os.close(source)
        return moved

    def _keep_unreadable(self, source: int) -> None:
        """The file's unreadable lines (a line edited by hand, a part overwritten: no letter
        and no change record, but maybe an event a person can mend) appended to the dead
        file as they are, before a rewrite leaves them out: `dead-letters` lists them as
        `unreadable line`. Copied in pieces (a line may be far longer than any letter), and
        durably before the queue file loses them, but only once the file replacing it is
        written: a rewrite refused for room copies nothing, and the next one copies them
        once (it copied them at each try). Only a crash between the copy and the rename
        leaves them in both, and the next rewrite copies them again."""
        if not self._unreadable:
            return

        def pieces() -> Iterator[bytes]:
            for offset, length in self._unreadable:
                yield from _pieces(source, offset, length)
                if os.pread(source, 1, offset + length - 1) != b"\n":
                    yield b"\n"  # a last line without its newline: ended in the dead file

        self._append_chunks(self.dead_path, pieces())
        log.warning(
            "moved unreadable dead-letter lines to the dead file, where dead-letters lists them",
            extra={
                "path": str(self.path),
                "dead_path": str(self.dead_path),
                "lines": len(self._unreadable),
            },
        )
        self._unreadable = []

    async def depth(self) -> int:
        return len(await self._call("read", self._read))

    async def dead(self) -> list[Letter]:
        return [letter async for page in self.dead_pages(DEAD_PAGE) for letter in page]

    async def dead_pages(self, size: int) -> AsyncIterator[list[Letter]]:
        """The dead file read line by line, `size` letters at a time, from one descriptor:
        the file as it was when this began (a rewrite of it meanwhile, `forget_dead`, is not
        seen; letters buried meanwhile are). A line longer than any letter is read past in
        pieces, never held whole (see `index.MAX_LINE`), and given as an unreadable line."""

        def opened() -> IO[bytes] | None:
            try:
                return open(self.dead_path, "rb")  # closed by the caller
            except FileNotFoundError:
                return None

        handle: IO[bytes] | None = await self._call("read", opened)
        if handle is None:
            return
        try:
            found = lines(handle)
            while page := await self._call("read", _dead_page, self.dead_path, found, size):
                yield page
        finally:
            handle.close()

    async def forget_dead(self, letters: Sequence[Letter]) -> None:
        await self._call("rewrite", self._forget_dead, {letter.key for letter in letters})

    def _forget_dead(self, keys: set[str]) -> None:
        """The dead file without the letters of `keys` (under its lock), written beside it
        line by line and renamed over it."""
        if not keys:
            return
        with _locked(self.dead_path), open(self.dead_path, "rb") as handle:

            def kept() -> Iterator[bytes]:
                offset = 0
                for line, length, whole in lines(handle):
                    start, offset = offset, offset + length
                    if line is None:  # longer than any letter: kept, copied in pieces
                        yield from _pieces(handle.fileno(), start, length)
                    else:
                        try:
                            if str(orjson.loads(line)["key"]) in keys:
                                continue
                        except (orjson.JSONDecodeError, KeyError, TypeError):
                            pass  # an unreadable line stays for a person to look at
                        yield line
                    if not whole:
                        yield b"\n"

            _write_whole(self.dead_path, kept())


def _dead_page(
    path: Path, found: Iterator[tuple[bytes | None, int, bool]], size: int
) -> list[Letter]:
    """Up to `size` letters of the dead file's lines `found` (`index.lines`)."""
    page = []
    for line, length, _ in found:
        if line is None:
            log.warning(
                "an unreadable dead letter: a line longer than any letter, read past",
                extra={"path": str(path), "bytes": length},
            )
            page.append(_dead_letter(b""))
        else:
            page.append(_dead_letter(line.rstrip(b"\n")))
        if len(page) == size:
            break
    return page


def _dead_letter(line: bytes) -> Letter:
    """A line of the dead file as a letter; one that reads as none is shown, not skipped
    (`dead-letters` left a torn line out silently): no event, so `requeue-dead` counts it
    unreadable, and it stays in the file."""
    try:
        record = orjson.loads(line)
        if not isinstance(record["event"], dict):
            raise TypeError("the event is not an object")
        return Letter(
            str(record["key"]),
            record["event"],
            int(record["attempts"]),
            0,
            reason=str(record.get("reason", "")),
            buried=_seconds(record.get("buried")),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return Letter("", {}, 0, 0, reason=UNREADABLE_LINE)


def _line(record: dict[str, Any]) -> bytes:
    """A record as a line of a file."""
    return orjson.dumps(record) + b"\n"


def _apply(letters: dict[str, Entry], changes: dict[str, Change | None]) -> None:
    """`changes` made to `letters` in place (None: the letter is gone), each letter in its
    place; a change to a letter no longer there is none."""
    for key, change in changes.items():
        if key not in letters:
            continue
        if change is None:
            del letters[key]
        else:
            letters[key] = _changed_entry(letters[key], change)


def _changed(entries: Iterable[Entry], changes: dict[str, Change | None]) -> list[Entry]:
    """`entries` with `changes` applied (None: the letter is gone), in queue order."""
    found = []
    for entry in entries:
        if entry.key not in changes:
            found.append(entry)
        elif (change := changes[entry.key]) is not None:
            found.append(_changed_entry(entry, change))
    return found


def _changed_entry(entry: Entry, change: Change) -> Entry:
    attempts, due = change
    if (attempts, due) == (entry.attempts, entry.due):
        return entry
    return entry._replace(attempts=attempts, due=due, exact=False)


def _due_of(entry: Entry) -> float:
    return entry.due


def _change_records(changes: dict[str, Change | None]) -> list[bytes]:
    return [
        _line({"key": key, "gone": True})
        if change is None
        else _line({"key": key, "attempts": change[0], "due": change[1]})
        for key, change in changes.items()
    ]


def _write_at_end(path: Path, fd: int, end: int, chunks: Iterable[bytes]) -> None:
    """`chunks` written at `end`, the end of the file open at `fd` for appending, and made
    durable; on a failure (a full disk: a short write is continued, or raises) the file is
    cut back to `end`, so nothing of them stays."""
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
        if end == 0:  # maybe a file made by this append: its entry must last too
            sync_directory(path.parent)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, end)
        raise


def _pieces(fd: int, offset: int, length: int) -> Iterator[bytes]:
    """The `length` bytes at `offset` of the file open at `fd`, in pieces of `SKIP_CHUNK`
    (a line far longer than any letter is never held whole)."""
    end = offset + length
    while offset < end:
        piece = os.pread(fd, min(SKIP_CHUNK, end - offset), offset)
        if not piece:
            raise OSError(f"the file ends at {offset:,} bytes, before a line it held")
        offset += len(piece)
        yield piece


def _whole_lines_end(fd: int) -> int:
    """Where the file's lines end (its append descriptor `fd`, its lock held). A last line
    without its newline — a write torn by a crash, never answered for, or a line added by
    hand — is ended with one, so the next line starts a line of its own and it is kept: a
    letter added by hand is replayed, anything else moved to the dead file by the next
    rewrite (`FileDeadLetterQueue._keep_unreadable`). It was cut off, and an operator's
    line with it."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    os.write(fd, b"\n")  # made durable with what the caller appends
    log.warning("ended a dead-letter file's last line, which had no newline")
    return size + 1


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
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                yield _Held(fd, before)
            finally:
                os.close(fd)
        finally:
            if lock:  # the holder counts its change done (an inner append's too) once it is
                with contextlib.suppress(OSError):
                    os.pwrite(lock_fd, os.pread(lock_fd, 8, 0), 8)
    finally:
        os.close(lock_fd)


def _write_whole(
    path: Path, chunks: Iterable[bytes], before_rename: Callable[[], None] | None = None
) -> None:
    """`path` holding `chunks` (its lock held): written durably beside it, as they come,
    and renamed over it, so a crash leaves the old file or the new one. `before_rename`
    runs once the new file is written whole (a failure of it leaves the old file)."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(temporary, path)
        # the rename is durable only once the directory is: a power loss after it brought
        # the old file back, without the letters appended to the new one since (202'd)
        sync_directory(path.parent)
    except OSError:
        with contextlib.suppress(OSError):  # a part written takes room a retry needs
            temporary.unlink()
        raise


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _generation_at(lock_fd: int) -> int:
    return int.from_bytes(os.pread(lock_fd, 8, 0).rjust(8, b"\0"), "big")


def _settled(path: Path, generation: int) -> bool:
    """Whether the change of `generation` was over when this was asked: the `.lock` file's
    second count (the generation whose change its holder finished, written as it lets go)
    has caught up with it. Asked after the generation was read, so a read of the file
    after this sees that change whole. A writer counts its generation up before it changes
    anything: a reader that read the new generation with the old contents (a rewrite
    under way) would otherwise take the next read's missing letters for a change made
    behind the writers' back. An older writer that does not count its changes done
    leaves it behind: never settled, never a false alarm."""
    try:
        lock_fd = os.open(_lock_path(path), os.O_RDONLY)
    except FileNotFoundError:
        return generation == 0
    try:
        done = os.pread(lock_fd, 8, 8)
    finally:
        os.close(lock_fd)
    return len(done) == 8 and int.from_bytes(done, "big") == generation


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
