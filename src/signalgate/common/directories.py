"""The directories a service writes to, checked once at start-up.

A data directory that cannot be written fails late and far from its cause: the first journal
append, the first generated token, a traceback from `mkdir`. Containers make it common (a
read-only root filesystem, a volume owned by another user), so each directory a service will
write is created and probed before anything is served, and a failure is one line naming the
setting, the path and what lives there.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import tempfile
from pathlib import Path
from stat import S_ISLNK

from signalgate.common.config import ConfigError
from signalgate.common.credential_files import trusted_owner

log = logging.getLogger(__name__)

# a write refused for want of room (blocks or inodes) or for a quota
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

# a setting's dotted name (`dataDir`, `dlq.path`), as opposed to how a user gave it
_SETTING = re.compile(r"[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*")


def sync_directory(path: Path) -> None:
    """fsync a directory: a file created or renamed into it survives a power loss only once
    its entry does (the file's own fsync does not write the directory's)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def disk_full(exc: OSError) -> bool:
    """Whether `exc` says the disk (or the user's quota) has no room: a condition that ends
    by itself as the services deliver and delete, unlike a read-only or missing path."""
    return exc.errno in DISK_FULL


def writable_directory(path: Path, key: str, holds: str) -> Path:
    """Create `path` if needed and prove it writable (a file made and removed), or raise a
    `ConfigError` naming `key` (a setting, or a `--flag`) and saying what the directory
    `holds`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        _private(path)
        descriptor, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(descriptor)
        with contextlib.suppress(OSError):
            os.unlink(probe)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        if isinstance(exc, OSError) and disk_full(exc) and path.is_dir():
            # writable, only full (no inode for the probe): what lives there (a journal
            # with undelivered events) must start, and frees its disk as it delivers
            return path
        reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        raise _unwritable(path, key, holds, reason) from exc
    return path


def check_directory(path: Path, key: str, holds: str) -> None:
    """What `writable_directory` would refuse that can be seen without writing: `path`, or
    the nearest of its parents that exists, not a directory or not writable by this user.
    A `ConfigError` in the same words; for `check-config`, which makes nothing."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    reason = None
    if not existing.is_dir():
        reason = "Not a directory" if existing == path else f"'{existing}' is not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        why = "Read-only file system" if _read_only(existing) else "Permission denied"
        reason = why if existing == path else f"'{existing}': {why}"
    if reason is not None:
        raise _unwritable(path, key, holds, reason)


def _read_only(path: Path) -> bool:
    """Whether `path` is on a file system mounted read-only (a container's root file system):
    said as such, not as a permission a `chmod` would mend."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _unwritable(path: Path, key: str, holds: str, reason: str) -> ConfigError:
    """The refusal of a directory `key` names, which `holds` what the service writes there.
    `key` is a setting's dotted name, or how the user gave it (`Resolved.named`: a `--flag`,
    an environment variable, a key in a file), which is quoted as it is."""
    setting, _, where = key.partition(" in ")  # `dataDir in ds.yaml`
    if _SETTING.fullmatch(setting):
        setting = f"config key {setting!r}" + (f" in {where}" if where else "")
    else:
        setting = key
    named = repr(str(path))
    if path != path.absolute():
        named += f" ({str(path.absolute())!r})"
    return ConfigError(
        f"{setting}: {named} cannot be written "
        f"({reason}); it holds {holds}: give a writable directory (in Kubernetes, a volume "
        "such as an emptyDir mounted there)"
    )


def _private(path: Path) -> None:
    """The directory closed to other users: one an older release made (0755) holds files
    readable by anyone (0644), and SQLite gives a database's new `-wal` its file's mode.
    Left as it is where this user may not change it (a volume someone else owns).

    Closing it is the moment an older release's tree is met, so what it holds is made the
    user's alone too (once: a closed directory is not walked again), and a backup copied
    out of it later keeps no mode that lets others read an alert's payload or a token."""
    found = path.stat()
    if not trusted_owner(found.st_uid):
        log.warning(
            "the data directory belongs to another user, who can change what is stored there",
            extra={"path": str(path), "owner_uid": found.st_uid, "uid": os.geteuid()},
        )
    mode = found.st_mode & 0o777
    if mode & 0o077:
        with contextlib.suppress(PermissionError):
            path.chmod(mode & 0o700)
            _private_tree(path)


def _private_tree(top: Path) -> None:
    """Drop the group's and others' bits from everything below `top` this user owns (a
    symbolic link is not followed)."""
    user = os.geteuid()
    for root, directories, files in os.walk(top):
        for name in directories + files:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                status = os.lstat(path)
                if status.st_uid == user and status.st_mode & 0o077 and not S_ISLNK(status.st_mode):
                    os.chmod(path, status.st_mode & 0o700)


def space_hint(path: Path) -> str:
    """Why a file may not be made in `path` when its file system is out of room, for an
    error line ("; the disk under it is full"), else "": SQLite says only "unable to open
    database file" when no inode is left for its `-wal`."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return ""
    if stats.f_files and stats.f_favail == 0:
        return "; its file system has no free inodes"
    if stats.f_bavail == 0:
        return "; the disk under it is full"
    return ""
