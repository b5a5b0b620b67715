"""An append-only, fsync'd journal of audit events: durable before a signal is acknowledged.

Why a journal: a signal may be answered 2xx only once its audit events would survive a
`kill -9`, whatever the RR store (SQLite, PostgreSQL, or the Kubernetes API, which has no
transaction an outbox row could share). So the pipeline stages its events here and the HTTP
layer awaits `commit()` before answering.

Group commit: staged lines wait in memory for the one writer; while it writes and fsyncs a
group, newer lines gather into the next group, so many concurrent requests share one fsync.
A request waits at most `audit.commitTimeout`, then is answered 503 (its events are still
written when the disk answers; the retried signal deduplicates). The bound is kept per group,
not per request: one timer from the group's first event, so a request that joined late may
give up a little sooner, never later (a per-request timer and shield cost more than the
rest of staging and committing an event together).

Layout: JSON lines in segment files `segment-<seq>.jsonl` in one directory, and a `cursor`
file naming the first line DataStorage has not confirmed. The relay reads from the cursor,
delivers, then moves the cursor and deletes whole segments behind it, which is all the
truncation the journal needs (no rewriting). A crash may replay confirmed lines (DataStorage
stores an event id once) but never skips one; a torn last group (a write cut by the crash,
never acknowledged) is cut off on open. The active segment is zeroed ahead of its data (up to
`ZEROED_AHEAD`), so that a group's write overwrites blocks the file already has and puts its
data alone on disk, not the file's size too: the data ends at the first NUL byte, which no
line holds; the zeros are cut when the segment is left, closed or recovered.

A full disk: a write it refuses fails its group (503, the sender retries) and moves the
journal on to a new segment, so that once the relay has delivered the old one it can be
deleted even when the disk is smaller than a segment; the cursor is then rewritten in
place (a new file needs space a full disk does not have); a segment that could not be made
is tried again at the next write. So the journal frees its own disk as DataStorage takes its
events, with nobody freeing space by hand.

Memory: the newest durable lines (up to `RECENT_BYTES`) are also kept in memory, with the
two fields the relay decides on (event type and time), so a relay that keeps up sends them
as they were written, without reading the disk or parsing them again; a relay that fell
behind (or a restart) reads the segments from the cursor until it reaches them.

Threads: the writer thread does every append, group after group, taking staged lines under
a lock; the segment is opened `O_DSYNC`, so one `write` puts a group on disk (a write and an
`fdatasync` were two system calls, each a wait for the GIL on a busy Gateway). The reader
thread does reads, cursor writes and deletions. Counters and segment sizes live on the
event loop and are only touched there.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import math
import os
import re
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from signalgate.common.directories import disk_full, sync_directory

log = logging.getLogger("signalgate.audit")

_SEGMENT_RE = re.compile(r"^segment-(\d{16})\.jsonl$")
# the newest durable lines the journal keeps in memory for the relay (bytes)
RECENT_BYTES = 8 * 1024 * 1024
# after a write failed (disk full, I/O error, a commit overdue), signals are refused this long
# before a write is tried again: each refused signal touches nothing, where each one let
# through is decided in the store first and then answered 503 by the failing journal
FAILURE_HOLD = 1.0
# the Retry-After of an answer refused for a failing journal: when its hold is over
FAILURE_RETRY_AFTER = math.ceil(FAILURE_HOLD)
# the cursor file's size: written whole, padded, so it can be rewritten in place
_CURSOR_BYTES = 64
# how far ahead of its data the active segment is zeroed (`Journal._write`)
ZEROED_AHEAD = 1024 * 1024
# the file in the journal's directory its process holds locked (flock) while it is open
LOCK_NAME = "lock"
# how long `open` waits for another process to let go of the journal: a Gateway stopping
# (`server.shutdownGrace`, 30 s by default, then up to 10 s of delivery), when one was
# started before its predecessor had finished, e.g. workers draining after their supervisor
# was killed
HELD_WAIT = 45.0


def worker_journal(base: Path, index: int) -> Path:
    """The journal directory of worker `index` of a service run as several processes
    (`server.workers`): worker 0 keeps `base`, so going back to one process keeps its
    backlog where it was; the others use `<base>-worker-<index>`."""
    return base if index == 0 else base.with_name(f"{base.name}-worker-{index}")


def stranded_journals(base: Path, workers: int) -> list[Path]:
    """The journals of workers a run with more processes left behind: `<base>-worker-<i>`
    for i ≥ `workers`. No process writes them any more, so the one owning `base` delivers
    them (`JournalAuditSink`), then removes them."""
    pattern = re.compile(re.escape(base.name) + r"-worker-(\d+)")
    if not base.parent.is_dir():
        return []
    return sorted(
        path
        for path in base.parent.iterdir()
        if (match := pattern.fullmatch(path.name))
        and int(match.group(1)) >= workers
        and path.is_dir()
    )


class JournalUnavailable(Exception):
    """The journal could not make events durable in time (disk error or slow disk)."""


class JournalHeld(OSError):
    """Another live process has the journal's directory open (its `lock` file locked)."""


class Position(NamedTuple):
    """A place in the journal; ordered as the journal is (segment, then offset)."""

    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One journaled event as written (its JSON, no newline), with what the relay decides on."""

    line: bytes
    event_type: str
    timestamp: str

    @classmethod
    def of(cls, event: dict[str, Any], line: bytes) -> Entry:
        return cls(line, str(event.get("event_type")), str(event.get("event_timestamp")))

    @property
    def size(self) -> int:
        """Bytes in the segment: the line and its newline."""
        return len(self.line) + 1

    def event(self) -> dict[str, Any]:
        """The event as a dict (parsed on demand: only logging and tests need it)."""
        parsed: dict[str, Any] = orjson.loads(self.line)
        return parsed


@dataclass
class Slice:
    """Lines read from the cursor on: the entries, and where the cursor goes once settled."""

    entries: list[Entry]
    end: Position
    size: int  # bytes between the cursor and `end`
    lines: int  # lines between the cursor and `end` (unreadable ones included)


class _Group:
    """Events staged together and written by one `write`, and the requests waiting for it."""

    __slots__ = ("failure", "timer", "waiters")

    def __init__(self) -> None:
        self.waiters: list[asyncio.Future[None]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.failure: JournalUnavailable | None = None  # set once it is overdue or failed

    def settle(self, failure: JournalUnavailable | None) -> None:
        """Answer every waiter (a cancelled one is skipped: only its own future is done)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.failure = failure
        for waiter in self.waiters:
            if not waiter.done():
                if failure is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(failure)
        self.waiters.clear()


class Journal:
    """Stage on the event loop, `commit()` to wait for durability, `read`/`confirm` to relay."""

    def __init__(
        self,
        directory: Path,
        segment_bytes: int,
        legacy_spool: Path | None = None,
        commit_timeout: float = 5.0,
        held_wait: float = HELD_WAIT,
    ) -> None:
        self.directory = directory
        self.held_wait = held_wait
        self._lock_fd: int | None = None  # the directory's `lock` file, flock'd while open
        self.segment_bytes = segment_bytes
        self.legacy_spool = legacy_spool
        self.commit_timeout = commit_timeout
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._fd: int | None = None  # the active segment, O_DSYNC (writer thread only)
        self._active = 1  # segment being appended to (writer thread owns the file)
        self._active_size = 0
        self._zeroed = 0  # the active segment's size: its data, then zeros written ahead
        # loop-side state
        self._sizes: dict[int, int] = {}  # durable size of each live segment
        self._cursor = Position(1, 0)
        self._pending: list[Entry] = []
        # the newest durable lines, in order, each with the position where it ends
        self._recent: deque[tuple[Position, Entry]] = deque()
        self._recent_bytes = 0
        self._pending_bytes = 0
        self._gathering: _Group | None = None  # the group `_pending` belongs to
        self._settling: set[asyncio.Future[None]] = set()  # see `_segment_started`
        self._cursor_unsaved = False  # reader thread: the last cursor write failed
        self._writing: _Group | None = None  # the group the writer thread is writing
        # the staged lines and the two groups are shared with the writer thread
        self._lock = threading.Lock()
        self._wake_writer = threading.Condition(self._lock)
        self._appended = asyncio.Event()
        # the backlog the relay waits for (`wait_appended`): a relay gathering a batch is
        # woken once it is full, not by every group written (hundreds a second under load)
        self._wanted = 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Future[None] | None = None  # the writer thread's loop
        self._closing = False
        self.backlog_bytes = 0  # durable and not yet confirmed
        self.backlog_events = 0
        # loop time of the last failed write, and why; cleared by the next write that succeeds
        self._failed_at: float | None = None
        self.last_failure = ""
        # groups whose write failed so far: a request that staged events over several groups
        # (a webhook's alerts, decided one after another) holds `mark()` against it, since
        # waiting for its newest group says nothing of an older one that failed
        self._failed_groups = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-journal-w")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-journal-r")
        loop = asyncio.get_running_loop()
        try:
            await self._take_lock(loop)
            cursor, sizes, events = await loop.run_in_executor(self._writer, self._recover)
        except BaseException:
            self._release()
            raise
        self._recent.clear()
        self._recent_bytes = 0
        self._cursor, self._sizes = cursor, sizes
        self.backlog_bytes = sum(sizes.values()) - cursor.offset
        self.backlog_events = events
        self._closing = False
        self._loop = loop
        self._task = loop.run_in_executor(self._writer, self._write_loop)
        if events:
            log.info("audit journal has events to deliver", extra={"events": events})
            self._appended.set()

    async def close(self) -> None:
        """Write what is staged, then release the files."""
        with self._lock:
            self._closing = True
            self._wake_writer.notify()
        if self._task is not None:
            await self._task
            self._task = None
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        loop = asyncio.get_running_loop()
        if self._writer is not None:
            await loop.run_in_executor(self._writer, self._close_active)
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._reader is not None:
            self._reader.shutdown(wait=True)
            self._reader = None
        self._release()

    async def _take_lock(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hold the directory for this process: two processes on one journal write their
        groups over each other's at the same offsets and delete each other's segments (an
        outside check lost acknowledged events so). Another holder is waited for up to
        `held_wait` (one still stopping lets go), then `JournalHeld`."""
        assert self._writer is not None
        deadline = loop.time() + self.held_wait
        told = False
        while True:
            holder = await loop.run_in_executor(self._writer, self._try_lock)
            if holder is None:
                return
            if loop.time() >= deadline:
                raise JournalHeld(
                    f"the audit journal {self.directory} is held by another process"
                    f" ({holder}); two processes must not share one journal"
                    " (datastorage.spoolPath)"
                )
            if not told:
                log.warning(
                    "audit journal held by another process; waiting for it to let go",
                    extra={"path": str(self.directory), "holder": holder},
                )
                told = True
            await asyncio.sleep(0.2)

    def _try_lock(self) -> str | None:
        """Lock the directory's `lock` file; None once held, else who holds it."""
        if self.directory.is_file():  # spoolPath still names an old spool file: park it
            os.replace(self.directory, _parked(self.directory))
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            return holder or "a process"
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        return None

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- staging and group commit (event loop) ----------------------------------------------

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    @property
    def pending_events(self) -> int:
        return len(self._pending)

    def stage(self, event: dict[str, Any]) -> None:
        """Queue one event for the next group write; returns at once."""
        if self._task is None or self._closing:
            raise JournalUnavailable("the audit journal is not open")
        entry = Entry.of(event, orjson.dumps(event))
        with self._lock:
            self._pending.append(entry)
            self._pending_bytes += entry.size
            if self._gathering is None:  # a new group: the writer may be waiting for one
                group = self._gathering = _Group()
                group.timer = asyncio.get_running_loop().call_later(
                    self.commit_timeout, self._overdue, group
                )
                self._wake_writer.notify()  # (pure Python and not free: once per group)

    def mark(self) -> int:
        """A token for `commit(since=...)`: taken before a request stages its first event."""
        return self._failed_groups

    async def commit(self, since: int | None = None) -> None:
        """Return once every event staged so far is on disk (fsync'd); raise
        `JournalUnavailable` when the write failed or took longer than `commit_timeout`.

        Groups are written one after another, so waiting for the newest group (the one still
        gathering, else the one being written) covers everything staged before this call
        that was written: a group that failed before it is not written at all. So a caller
        that staged events over several groups passes the `mark()` it took before the first:
        when any group failed since, its events may be among the lost, and it is refused
        too (a failure elsewhere costs it a retry, never an event).
        """
        with self._lock:
            group = self._gathering or self._writing
        if group is not None:
            await self._wait_for(group)
        if since is not None and self._failed_groups != since:
            raise JournalUnavailable(
                "audit journal write failed while the request's events were staged: "
                + self.last_failure
            )

    async def _wait_for(self, group: _Group) -> None:
        loop = asyncio.get_running_loop()
        if group.failure is not None:
            # joined a group that has already kept others waiting too long: a fresh bound
            # (a group whose write failed is never found here: it is settled off the loop's
            # `_writing` first)
            group.failure = None
            group.timer = loop.call_later(self.commit_timeout, self._overdue, group)
        waiter = loop.create_future()
        group.waiters.append(waiter)
        await waiter

    def _overdue(self, group: _Group) -> None:
        failure = (
            f"the audit journal did not confirm an fsync within {self.commit_timeout:g}s "
            "(audit.commitTimeout); the disk under it is too slow or stuck"
        )
        self._failed(failure)
        group.settle(JournalUnavailable(failure))

    def failing(self) -> bool:
        """True for FAILURE_HOLD after a write failed; then writes are tried again."""
        if self._failed_at is None or self._loop is None:
            return False
        return self._loop.time() - self._failed_at < FAILURE_HOLD

    def _failed(self, why: str) -> None:
        if self._loop is not None:
            self._failed_at = self._loop.time()
        self.last_failure = why

    def _write_loop(self) -> None:
        """The writer thread: write and fsync group after group, without waiting for the
        event loop in between (a busy loop would otherwise delay every next group)."""
        loop = self._loop
        assert loop is not None
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    self._wake_writer.wait()
                if not self._pending:
                    return  # closing, and everything staged is written
                entries, group = self._pending, self._gathering
                self._pending, self._gathering, self._pending_bytes = [], None, 0
                self._writing = group
            assert group is not None
            data = b"\n".join([entry.line for entry in entries]) + b"\n"
            try:
                segment, size = self._write(data)
            except OSError as exc:
                loop.call_soon_threadsafe(self._group_failed, group, exc, len(entries))
            except Exception as exc:  # a bug must fail this group, not end the writer thread
                log.exception("audit journal: unexpected error writing a group")
                failure = OSError(f"unexpected {type(exc).__name__}: {exc}")
                loop.call_soon_threadsafe(self._group_failed, group, failure, len(entries))
            else:
                loop.call_soon_threadsafe(
                    self._group_written, group, segment, size, len(data), entries
                )

    def _group_written(
        self, group: _Group, segment: int, size: int, data: int, entries: list[Entry]
    ) -> None:
        """On the event loop, in write order: the group is durable."""
        self._failed_at = None
        self._sizes[segment] = size
        self.backlog_bytes += data
        self.backlog_events += len(entries)
        self._settled(group)
        group.settle(None)
        self._remember(segment, size - data, entries)
        if self.backlog_events >= self._wanted:
            self._appended.set()

    def _remember(self, segment: int, offset: int, entries: list[Entry]) -> None:
        """Keep durable lines in memory for the relay, dropping the oldest beyond
        RECENT_BYTES (the relay reads those from the segment, as after a restart)."""
        recent = self._recent
        for entry in entries:
            offset += entry.size
            recent.append((Position(segment, offset), entry))
            self._recent_bytes += entry.size
        while self._recent_bytes > RECENT_BYTES:
            self._recent_bytes -= recent.popleft()[1].size

    def _segment_started(self, segment: int) -> None:
        """On the event loop: the writer moved on to `segment` (before any line is in it).
        A segment left delivered whole is deleted now: the relay, with nothing to deliver,
        would not confirm anything that moves the cursor past it (a full disk stayed full)."""
        self._sizes.setdefault(segment, 0)
        cursor = self._cursor
        if segment > cursor.segment and cursor.offset >= self._sizes.get(cursor.segment, 0):
            task = asyncio.ensure_future(self._settle_left_segment())
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    async def _settle_left_segment(self) -> None:
        if self._reader is None or self._closing:
            return
        try:
            await self.confirm(Slice([], self._cursor, 0, 0))
        except OSError as exc:  # the relay's next confirmation tries again
            log.warning("audit journal: a delivered segment not deleted", extra={"error": str(exc)})

    def _group_failed(self, group: _Group, exc: OSError, lines: int) -> None:
        log.error(
            "audit journal write failed; the requests waiting for it get 503",
            extra={"error": str(exc), "events": lines},
        )
        self._settled(group)
        self._failed_groups += 1
        failure = f"audit journal write failed: {exc}"
        self._failed(failure)
        group.settle(JournalUnavailable(failure))

    def _settled(self, group: _Group) -> None:
        with self._lock:
            if self._writing is group:
                self._writing = None

    # -- relay side (event loop) -------------------------------------------------------------

    async def wait_appended(self, timeout: float, backlog: int = 1) -> None:  # noqa: ASYNC109
        """Wait until a group was written since the last call that leaves at least `backlog`
        events to deliver (or `timeout`)."""
        self._wanted = backlog
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the event is set, and stop() relies on cancelling the relay
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._appended.wait()
        finally:
            self._wanted = 1
        self._appended.clear()

    async def read(self, limit: int) -> Slice:
        """Up to `limit` durable events from the cursor on: from memory when the newest lines
        kept there start at the cursor, else from the segments."""
        held = self._read_recent(limit)
        if held is not None:
            return held
        assert self._reader is not None
        loop = asyncio.get_running_loop()
        sizes = dict(self._sizes)
        return await loop.run_in_executor(self._reader, self._read, self._cursor, sizes, limit)

    def _read_recent(self, limit: int) -> Slice | None:
        """The lines from the cursor on out of memory, or None when memory does not hold
        the line at the cursor (the relay is behind, or the journal was just opened)."""
        recent, cursor = self._recent, self._cursor
        while recent and recent[0][0] <= cursor:
            self._recent_bytes -= recent.popleft()[1].size  # confirmed already
        if not recent:
            return None
        end, entry = recent[0]
        start = Position(end.segment, end.offset - entry.size)
        # the first line held starts at the cursor, or the cursor ends its (full) segment
        # and the line opens the next one
        at_cursor = start == cursor or (
            start == (cursor.segment + 1, 0) and cursor.offset == self._sizes.get(cursor.segment)
        )
        if not at_cursor:
            return None
        taken = list(itertools.islice(recent, limit))
        entries = [entry for _, entry in taken]
        return Slice(entries, taken[-1][0], sum(entry.size for entry in entries), len(entries))

    async def confirm(self, piece: Slice) -> None:
        """DataStorage settled `piece`: move the cursor past it, delete finished segments."""
        assert self._reader is not None
        loop = asyncio.get_running_loop()
        end = max(piece.end, self._cursor)  # never back (a settle and the relay may cross)
        later = [s for s in self._sizes if s > end.segment]
        if later and end.offset >= self._sizes.get(end.segment, 0):
            end = Position(min(later), 0)  # read to the end of a segment the writer has left
        finished = [s for s in self._sizes if s < end.segment]
        await loop.run_in_executor(self._reader, self._advance, end, finished)
        for segment in finished:
            self._sizes.pop(segment, None)
        self._cursor = end
        self.backlog_bytes = max(0, self.backlog_bytes - piece.size)
        self.backlog_events = max(0, self.backlog_events - piece.lines)

    # -- file work (worker threads) ----------------------------------------------------------

    def _segment_path(self, segment: int) -> Path:
        return self.directory / f"segment-{segment:016d}.jsonl"

    def _recover(self) -> tuple[Position, dict[int, int], int]:
        """Find the segments and the cursor, cut a torn tail, open the last segment."""
        if self.directory.is_file():  # spoolPath still names an old spool file: park it
            os.replace(self.directory, _parked(self.directory))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._adopt_legacy_spools([p for p in (self.legacy_spool, self.directory) if p])
        segments = sorted(
            int(m.group(1)) for p in self.directory.iterdir() if (m := _SEGMENT_RE.match(p.name))
        )
        cursor = self._read_cursor(segments)
        # a cursor write a crash (or an older version on a full disk) left unfinished
        (self.directory / "cursor.tmp").unlink(missing_ok=True)
        for segment in [s for s in segments if s < cursor.segment]:
            self._segment_path(segment).unlink(missing_ok=True)
        segments = [s for s in segments if s >= cursor.segment] or [cursor.segment]
        sizes: dict[int, int] = {}
        events = 0
        for segment in segments:
            path = self._segment_path(segment)
            data = path.read_bytes() if path.exists() else b""
            end = _whole_end(data)
            if end != len(data):
                if data.rstrip(b"\0") != data[:end]:
                    log.warning(
                        "audit journal: cutting a torn last group", extra={"path": str(path)}
                    )
                with open(path, "r+b") as torn:  # and the zeros written ahead (`_write`)
                    torn.truncate(end)
                    os.fsync(torn.fileno())
            start = cursor.offset if segment == cursor.segment else 0
            events += data[min(start, end) : end].count(b"\n")
            sizes[segment] = end
        if cursor.offset > sizes[cursor.segment]:
            cursor = Position(cursor.segment, 0)  # a cursor past the data: replay, never skip
        if cursor.offset == sizes[cursor.segment] and len(segments) > 1:
            # delivered to the end of a segment the writer had left: on to the next, and the
            # delivered one goes (on a full disk, nothing else would delete it)
            cursor = Position(segments[1], 0)
            self._advance(cursor, [segments[0]])
            del sizes[segments[0]]
            segments = segments[1:]
        self._active = segments[-1]
        self._open_active()
        return cursor, sizes, events

    def _adopt_legacy_spools(self, spools: list[Path]) -> None:
        """Take over the undelivered events of the spool file earlier versions kept.

        A spool is first renamed aside (so this runs to the end even after a crash), its
        undelivered lines are added to segment 0 (sorted before any other, so delivered
        first), and only then is it deleted. A crash in between repeats the copy: same
        events, same ids, stored once.

        Segment 0 may hold events already: an earlier take-over, then (an old version run
        again on the same directory) a second spool. They stay, and the spool's lines go
        after them; replacing the segment lost them (an outside check: 30 acknowledged
        events). Once some of the journal's own segments are delivered, the spool's lines go
        into a segment after the last instead: nothing delivered is sent again (deleting the
        cursor did), the old events last.
        """
        data = b""
        taken = []
        for spool in spools:
            parked = _parked(spool)
            if spool.is_file():
                os.replace(spool, parked)
            if not parked.exists():
                continue
            offset_file = spool.with_name(spool.name + ".offset")
            try:
                offset = int(offset_file.read_text().strip() or 0)
            except (OSError, ValueError):
                offset = 0  # replay all: DataStorage stores an event id once
            raw = parked.read_bytes()
            data += raw[min(offset, len(raw)) : raw.rfind(b"\n") + 1]
            taken += [parked, offset_file]
        if data:
            self._add_legacy_lines(data)
        for path in taken:
            path.unlink(missing_ok=True)

    def _add_legacy_lines(self, data: bytes) -> None:
        """Add a spool's undelivered lines to segment 0, or after the last segment once the
        journal delivered some of its own (`_adopt_legacy_spools`).

        A crash after the copy and before the spool was deleted copies it again: lines
        already in the target or the last segment (where an earlier copy went) are not added
        twice, since DataStorage refuses a whole batch holding one event twice.
        """
        segments = sorted(
            int(m.group(1)) for p in self.directory.iterdir() if (m := _SEGMENT_RE.match(p.name))
        )
        cursor = self._read_cursor(segments)
        untouched = not segments or cursor == Position(segments[0], 0)
        target = 0 if cursor.segment == 0 or untouched else segments[-1] + 1
        kept = self._whole_lines(target)
        there = set(kept.splitlines(keepends=True))
        if segments and segments[-1] != target:
            there.update(self._whole_lines(segments[-1]).splitlines(keepends=True))
        added = b"".join(line for line in data.splitlines(keepends=True) if line not in there)
        if not added:
            return
        temporary = self.directory / "segment-legacy.tmp"
        with open(temporary, "wb") as handle:
            handle.write(kept + added)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._segment_path(target))
        if target == 0 and cursor.segment != 0:  # nothing delivered yet: start at 0
            (self.directory / "cursor").unlink(missing_ok=True)
        self._sync_directory()
        log.warning(
            "audit journal: took over the old spool's undelivered events",
            extra={"events": added.count(b"\n")},
        )

    def _whole_lines(self, segment: int) -> bytes:
        """A segment's bytes up to its last newline (a torn last line cut); none if absent."""
        path = self._segment_path(segment)
        data = path.read_bytes() if path.exists() else b""
        return data[: _whole_end(data)]

    def _read_cursor(self, segments: list[int]) -> Position:
        first = Position(segments[0] if segments else 1, 0)
        try:
            raw = orjson.loads((self.directory / "cursor").read_bytes())
            cursor = Position(int(raw["segment"]), int(raw["offset"]))
        except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return first
        if segments and cursor.segment not in segments:
            return first if cursor.segment < segments[0] else Position(segments[-1], 0)
        return cursor

    def _open_active(self) -> None:
        path = self._segment_path(self._active)
        created = not path.exists()
        # O_DSYNC: each write returns once its data is on disk, one system call per group
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DSYNC, 0o644)
        # (a segment is opened after `_recover` cut its zeros, or new: its size is its data)
        self._active_size = self._zeroed = os.fstat(self._fd).st_size
        if created:
            self._sync_directory()

    def _sync_directory(self) -> None:
        sync_directory(self.directory)

    def _write(self, data: bytes) -> tuple[int, int]:
        """Append one group, durably; start a new segment when this one is full, or when
        the disk is (see the module's docstring)."""
        if self._fd is not None and self._active_size >= self.segment_bytes:
            self._next_segment()
        if self._fd is None:  # a segment that could not be made (a full disk): again
            self._start_segment()
        fd = self._fd
        assert fd is not None
        before = self._active_size
        end = before + len(data)
        try:
            if end > self._zeroed:
                # zeros ahead, durable, so that a group overwrites blocks the file already
                # has: its O_DSYNC write then puts its data alone on disk, where an append
                # wrote the file's size too (half the system time and half the wait, here)
                ahead = max(end, min(self._zeroed + ZEROED_AHEAD, self.segment_bytes))
                try:
                    _write_at(fd, bytes(ahead - self._zeroed), self._zeroed)
                    self._zeroed = ahead
                except OSError as exc:
                    if not disk_full(exc) or ahead == end:
                        raise
                    # no room for the zeros ahead, maybe for the group itself: it is
                    # appended as before the zeros, so a disk is full when the data fills
                    # it, not up to ZEROED_AHEAD sooner
                    os.ftruncate(fd, self._zeroed)
            _write_at(fd, data, before)
            self._zeroed = max(self._zeroed, end)
        except OSError as exc:
            with contextlib.suppress(OSError):  # leave no half group for a later group to follow
                os.ftruncate(fd, before)
                self._zeroed = before
            if disk_full(exc) and before > 0:
                # a new segment, so the delivered part of this one can be deleted: a disk
                # smaller than a segment fills with delivered lines otherwise
                self._next_segment()
                with contextlib.suppress(OSError):  # else made at the next write
                    self._start_segment()
            raise
        self._active_size = before + len(data)
        return self._active, self._active_size

    def _next_segment(self) -> None:
        """Leave the active segment: the next write goes to a new one. Also when its zeros
        could not be cut (an I/O error): opened again, their size was taken for data and the
        next groups went after them, where a restart cuts (`_whole_end`); left, its zeros
        are cut by the next recovery and its data is read up to its known size."""
        try:
            self._close_active()
        finally:
            self._active += 1
            self._active_size = 0

    def _start_segment(self) -> None:
        """Open the active segment and tell the event loop the writer is on it, so that the
        relay, once at the end of the one before, moves the cursor on and that one can be
        deleted."""
        self._open_active()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._segment_started, self._active)

    def _close_active(self) -> None:
        """Close the active segment, without the zeros written ahead of its data (a
        segment left behind holds its lines alone, as `_recover` leaves one after a crash)."""
        if self._fd is not None:
            try:
                if self._zeroed > self._active_size:
                    os.ftruncate(self._fd, self._active_size)
            finally:
                os.close(self._fd)
                self._fd = None

    def _read(self, cursor: Position, sizes: dict[int, int], limit: int) -> Slice:
        entries: list[Entry] = []
        segment, offset = cursor.segment, cursor.offset
        size = lines = 0
        while len(entries) < limit:
            end = sizes.get(segment)
            if end is None:
                break
            if offset >= end:
                if segment + 1 in sizes:
                    segment, offset = segment + 1, 0
                    continue
                break
            with open(self._segment_path(segment), "rb") as handle:
                handle.seek(offset)
                while len(entries) < limit and offset < end:
                    line = handle.readline()
                    if not line.endswith(b"\n"):
                        break
                    offset += len(line)
                    size += len(line)
                    lines += 1
                    try:
                        event = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        event = None
                    if not isinstance(event, dict):
                        log.error("audit journal: skipping an unreadable line")
                        continue
                    entries.append(Entry.of(event, line[:-1]))
        return Slice(entries, Position(segment, offset), size, lines)

    def _advance(self, cursor: Position, finished: list[int]) -> None:
        """Save the cursor, then delete the finished segments. A cursor that cannot be saved
        (a full disk, and no cursor file yet to rewrite in place) does not stop the deletion:
        a restart then starts from the cursor saved before or, where its segment is gone,
        from the first segment left — it replays confirmed lines (stored once), never skips,
        and deleting is what frees the disk."""
        try:
            self._write_cursor(cursor)
        except OSError as exc:
            if not self._cursor_unsaved:
                log.warning(
                    "audit journal: cursor not saved; a restart replays from the one before",
                    extra={"error": str(exc)},
                )
            self._cursor_unsaved = True
        else:
            self._cursor_unsaved = False
        for segment in finished:
            self._segment_path(segment).unlink(missing_ok=True)

    def _write_cursor(self, cursor: Position) -> None:
        data = orjson.dumps({"segment": cursor.segment, "offset": cursor.offset})
        data = data.ljust(_CURSOR_BYTES)
        path = self.directory / "cursor"
        temporary = self.directory / "cursor.tmp"
        try:
            temporary.write_bytes(data)
            os.replace(temporary, path)
        except OSError as exc:
            # a full disk makes the new file and refuses its bytes: an empty `cursor.tmp`
            # was left in the directory when there was no cursor file yet to fall back to
            with contextlib.suppress(OSError):
                temporary.unlink()
            if not disk_full(exc) or not path.exists():
                raise
            # a full disk has no room for a new file: the cursor is rewritten where it is
            # (one write, whole or not at all for a crash of this process; a cursor that
            # cannot be read replays from the first segment, never skips)
            with open(path, "r+b") as handle:
                handle.write(data)


def _whole_end(data: bytes) -> int:
    """Where a segment's whole lines end: at its last newline before the first NUL byte.
    Lines never hold a NUL (JSON escapes it), so one marks the zeros written ahead of the
    data (`Journal._write`); a group a crash cut leaves part of its bytes there, possibly
    after a run of zeros its write did not reach, and is cut with all after it."""
    first_zero = data.find(b"\0")
    return data.rfind(b"\n", 0, len(data) if first_zero < 0 else first_zero) + 1


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:  # a regular file takes it all at once; a short write is continued
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _parked(spool: Path) -> Path:
    return spool.with_name(spool.name + ".legacy")
