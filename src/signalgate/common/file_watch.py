"""Files a running service reads again when they change: the tokens file, the TLS pair (and
DataStorage's dead-letter file, read again only when another process changed it).

Both come from files an operator edits or Kubernetes updates (a mounted Secret), and both
must be taken without a restart that would refuse signals meanwhile. A change is taken only
once it has held for one look: an editor or `cat >` truncates a file first, and the empty
file read then (an outside check: the tokens file read empty refused a valid token 4,706
times) must not replace what works. A SIGHUP says the files are written: the next look takes
them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

Signature = tuple[int, int, int, int] | None

# how often, at most, a watched file is looked at for a change (seconds)
RELOAD_CHECK = 1.0


def signature(path: Path) -> Signature:
    """What tells a changed file: its inode, size and change times (None: unreadable).
    A mounted Secret's update swaps a symlink, which `stat` follows."""
    try:
        found = path.stat()
    except OSError:
        return None
    return (found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)


def not_a_regular_file(*paths: Path) -> Path | None:
    """The first of `paths` that exists and is not a regular file (a FIFO, a device, a
    directory), else None. Opening a FIFO waits for a writer: a tokens file replaced by one
    hung every request (an outside check), so such a file is never opened."""
    for path in paths:
        with contextlib.suppress(OSError):
            if not stat.S_ISREG(os.stat(path).st_mode):
                return path
    return None


async def look_aside(func: Callable[..., T], *args: object) -> T:
    """`func(*args)` in a daemon thread of its own. A look at a file can block for good (a
    hung network mount, a FIFO swapped in between the check and the open): in the loop's
    default executor such a thread kept the process from exiting at shutdown, which waits
    for that executor's threads; a daemon thread is left behind instead."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(lambda: None if done.done() else outcome())

    def run() -> None:
        try:
            result = func(*args)
        except BaseException as exc:  # handed to the awaiting task
            error = exc  # `exc` is unbound when the except clause ends
            settle(lambda: done.set_exception(error))
        else:
            settle(lambda: done.set_result(result))

    threading.Thread(target=run, name="file-look", daemon=True).start()
    return await done


class FileWatch:
    """Whether `paths` changed since they were last taken, and the change has held for a
    look. Blocking (`stat`): called off the event loop."""

    def __init__(self, *paths: Path) -> None:
        self.paths = paths
        self._taken = self._now()
        self._settling: object = None  # a changed signature seen once, not yet taken

    def _now(self) -> tuple[Signature, ...]:
        return tuple(signature(path) for path in self.paths)

    def changed(self, forced: bool = False) -> bool:
        """True once per change to take: seen the same at two looks in a row, or at one
        look when `forced` (a SIGHUP). A change taken is not reported again, even when
        what it holds is refused: the next edit is."""
        now = self._now()
        if now == self._taken:
            self._settling = None
            return False
        if now != self._settling and not forced:
            self._settling = now  # taken if it still looks so at the next look
            return False
        self._taken, self._settling = now, None
        return True
