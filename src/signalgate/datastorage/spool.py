"""A bounded on-disk FIFO of audit events: where the delivery client puts what its memory
buffer cannot hold, and what it replays when DataStorage is back.

JSON lines appended to one file; a sidecar file holds the read offset of the first event not
yet delivered, so a restart resumes where delivery stopped. The file is compacted once most
of it has been delivered. Appends are small unsynced writes (no fsync per event: emitting
must not block the caller); `sync()` makes them durable at shutdown.

Threads: `append` is meant for the event loop (one buffered write and flush to a file that
is already open, under a lock nobody holds for long); everything else (`open`, `peek`,
`commit` with its compaction, `sync`, `close`) does real file I/O and is meant for a worker
thread. Those run one at a time (`_maintenance`), while appends go on beside them: a
compaction copies the file without the append lock and takes it only to copy the last few
appended lines and swap the files.

Crash safety: a crash may replay events that were delivered (DataStorage stores an event id
once) but never skips one that was not; a torn last line is dropped on open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import Any, BinaryIO

import orjson

log = logging.getLogger(__name__)

_COMPACT_AFTER = 1024 * 1024
_COPY_CHUNK = 1024 * 1024
# what a compaction may still copy while holding the append lock (emit waits meanwhile)
_COPY_UNDER_LOCK = 64 * 1024
# unlocked passes over what was appended during the copy; whatever still arrives after
# them is copied under the lock (bounded by max_bytes, and only if appends outrun a disk)
_CATCH_UP_ROUNDS = 8


class Spool:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._offset_path = path.with_name(path.name + ".offset")
        self._offset = 0
        self._size = 0
        self._count = 0
        self._file: BinaryIO | None = None
        # `_lock` guards the counters and the append handle, held briefly (it is taken on
        # the event loop); `_maintenance` makes the worker-side operations take turns
        self._lock = threading.Lock()
        self._maintenance = threading.Lock()

    def open(self) -> None:
        """Resume an existing spool (dropping a torn last line) or start an empty one."""
        with self._maintenance:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            offset = 0
            with contextlib.suppress(FileNotFoundError, ValueError):
                offset = int(self._offset_path.read_text().strip() or 0)
            data = self.path.read_bytes() if self.path.exists() else b""
            end = data.rfind(b"\n") + 1
            if end != len(data):
                log.warning(
                    "audit spool: dropping a torn last line", extra={"path": str(self.path)}
                )
                with open(self.path, "r+b") as torn:
                    torn.truncate(end)
            offset = min(offset, end)
            appends = open(self.path, "ab")  # noqa: SIM115 - held open for appends
            with self._lock:
                self._offset = offset
                self._size = end
                self._count = data[offset:end].count(b"\n")
                self._file = appends

    def close(self) -> None:
        """Make the spool durable and release the file; `count` keeps its last value."""
        with self._maintenance:
            self._sync()
            with self._lock:
                handle, self._file = self._file, None
            if handle is not None:
                handle.close()

    @property
    def is_open(self) -> bool:
        return self._file is not None

    @property
    def count(self) -> int:
        """Events spooled and not yet delivered."""
        return self._count

    @property
    def pending_bytes(self) -> int:
        return self._size - self._offset

    def append(self, event: dict[str, Any]) -> bool:
        """Spool one event; False when that would exceed `max_bytes` or the spool is closed
        (the caller drops it). Cheap enough for the event loop: no fsync, no file opened."""
        line = orjson.dumps(event) + b"\n"
        with self._lock:
            if self._file is None or self._size - self._offset + len(line) > self.max_bytes:
                return False
            self._file.write(line)
            self._file.flush()
            self._size += len(line)
            self._count += 1
        return True

    def sync(self) -> None:
        with self._maintenance:
            self._sync()

    def _sync(self) -> None:
        with self._lock:
            if self._file is None:
                return
            self._file.flush()
            descriptor = self._file.fileno()
        # outside the lock: appends may continue while the disk catches up; the handle
        # cannot be closed or swapped meanwhile, since that needs `_maintenance`
        os.fsync(descriptor)

    def peek(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Up to `limit` events from the read offset, and the offset just after them."""
        with self._maintenance:
            with self._lock:
                offset, end = self._offset, self._size
            events: list[dict[str, Any]] = []
            # lines before `end` are complete and stay put: only appends (after `end`)
            # happen until the next commit
            with open(self.path, "rb") as handle:
                handle.seek(offset)
                while len(events) < limit and offset < end:
                    line = handle.readline()
                    if not line.endswith(b"\n"):
                        break
                    offset += len(line)
                    try:
                        events.append(orjson.loads(line))
                    except orjson.JSONDecodeError:
                        log.warning("audit spool: skipping an unreadable line")
            return events, offset

    def commit(self, offset: int, delivered: int) -> None:
        """Mark events up to `offset` as delivered (or dropped).

        Rewrites the file when everything, or most of it and at least `_COMPACT_AFTER`
        bytes, has been delivered; if that rewrite fails the file stays as it is and only
        the offset is recorded, so the spool keeps working (just larger).
        """
        with self._maintenance:
            with self._lock:
                if self._file is None:
                    raise RuntimeError(f"audit spool {self.path} is closed: open() it first")
                self._offset = offset
                self._count = max(0, self._count - delivered)
                rewrite = offset >= self._size or (
                    offset > _COMPACT_AFTER and offset > self._size // 2
                )
            if rewrite:
                try:
                    self._compact()
                    return
                except OSError as exc:
                    log.warning(
                        "audit spool: compaction failed; keeping the file as it is",
                        extra={"path": str(self.path), "error": str(exc)},
                    )
            self._write_offset(offset)

    def _compact(self) -> None:
        """Replace the file by its undelivered part while appends go on.

        Copies without the append lock first, catches up (still unlocked) with what was
        appended meanwhile, and takes the lock only for the last few lines and the swap.
        Runs with `_maintenance` held, so the offset does not move.
        """
        with self._lock:
            start = copied = self._offset
            end = self._size
        temporary = self.path.with_name(self.path.name + ".tmp")
        target = open(temporary, "wb")  # noqa: SIM115 - becomes the append handle
        try:
            with open(self.path, "rb") as source:
                source.seek(start)
                _copy(source, target, end - copied)
                copied = end
                for _ in range(_CATCH_UP_ROUNDS):
                    with self._lock:
                        end = self._size
                    if end - copied <= _COPY_UNDER_LOCK:
                        break
                    _copy(source, target, end - copied)
                    copied = end
                # events that were durable before the swap stay durable after it
                target.flush()
                os.fsync(target.fileno())
                # offset first: a crash from here on replays delivered events (stored
                # once by id) rather than skipping undelivered ones
                self._write_offset(0, durable=True)
                with self._lock:
                    _copy(source, target, self._size - copied)
                    target.flush()
                    os.replace(temporary, self.path)
                    old, self._file = self._file, target
                    self._size -= start
                    self._offset = 0
                    if self._size == 0:
                        self._count = 0  # settles any drift from unreadable lines
        except BaseException:
            target.close()
            temporary.unlink(missing_ok=True)
            raise
        if old is not None:
            old.close()

    def _write_offset(self, offset: int, *, durable: bool = False) -> None:
        with open(self._offset_path, "w") as handle:
            handle.write(str(offset))
            if durable:
                handle.flush()
                os.fsync(handle.fileno())


def _copy(source: BinaryIO, target: BinaryIO, length: int) -> None:
    """Copy `length` bytes in chunks; a file shorter than its recorded size is an error."""
    while length > 0:
        chunk = source.read(min(length, _COPY_CHUNK))
        if not chunk:
            raise OSError(f"audit spool ended {length} bytes early while compacting")
        target.write(chunk)
        length -= len(chunk)
