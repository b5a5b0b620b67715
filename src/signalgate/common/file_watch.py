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

from pathlib import Path

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
