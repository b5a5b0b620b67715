"""A bounded on-disk FIFO of audit events: where the delivery client puts what its memory
buffer cannot hold, and what it replays when DataStorage is back.

JSON lines appended to one file; a sidecar file holds the read offset of the first event not
yet delivered, so a restart resumes where delivery stopped. The file is compacted once most
of it has been delivered. Appends are small unsynced writes (no fsync per event: emitting
must not block the caller); `sync()` makes them durable at shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

_COMPACT_AFTER = 1024 * 1024


class Spool:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._offset_path = path.with_name(path.name + ".offset")
        self._offset = 0
        self._size = 0
        self._count = 0
        self._file: Any = None

    def open(self) -> None:
        """Resume an existing spool (dropping a torn last line) or start an empty one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError, ValueError):
            self._offset = int(self._offset_path.read_text().strip() or 0)
        data = self.path.read_bytes() if self.path.exists() else b""
        end = data.rfind(b"\n") + 1
        if end != len(data):
            log.warning("audit spool: dropping a torn last line", extra={"path": str(self.path)})
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
        self._offset = min(self._offset, end)
        self._size = end
        self._count = data[self._offset : end].count(b"\n")
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open for appends

    def close(self) -> None:
        if self._file is not None:
            self.sync()
            self._file.close()
            self._file = None

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
        """Spool one event; False when that would exceed `max_bytes` (the caller drops it)."""
        line = orjson.dumps(event) + b"\n"
        if self.pending_bytes + len(line) > self.max_bytes:
            return False
        self._file.write(line)
        self._file.flush()
        self._size += len(line)
        self._count += 1
        return True

    def sync(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def peek(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Up to `limit` events from the read offset, and the offset just after them."""
        events: list[dict[str, Any]] = []
        offset = self._offset
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            while len(events) < limit and offset < self._size:
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
        """Mark events up to `offset` as delivered (or dropped)."""
        self._offset = offset
        self._count = max(0, self._count - delivered)
        if self._offset >= self._size:
            self._reset()
        elif self._offset > _COMPACT_AFTER and self._offset > self._size // 2:
            self._compact()
        else:
            self._offset_path.write_text(str(self._offset))

    def _reset(self) -> None:
        self._file.truncate(0)
        self._file.seek(0)
        self._offset = self._size = self._count = 0
        self._offset_path.write_text("0")

    def _compact(self) -> None:
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            rest = handle.read(self._size - self._offset)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_bytes(rest)
        # offset first: a crash in between replays delivered events (stored once by id)
        # rather than skipping undelivered ones
        self._offset_path.write_text("0")
        self._file.close()
        os.replace(temporary, self.path)
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = len(rest)
        self._offset = 0
