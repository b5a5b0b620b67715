"""The files of credentials a service makes for itself in its data directory: the admin token
and the tokens file generated on a first start (and `signalgate up`'s).

A data directory is not always made by the service: an operator may point it at one that
exists, and on a shared machine another user may have made it first. An outside check
planted `admin.token` (mode 0666) in such a directory before root started `signalgate up`:
the planted token became the admin token of both services, and a planted `tokens` symlink
had root overwrite a file of its choosing. So such files are written by replacing the name
(a symbolic link is replaced, never followed), and one that exists is trusted only when this
user (or root) owns it and no other user may write it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from signalgate.common.config import ConfigError


def write_private(path: Path, text: str) -> None:
    """`text` as the whole of `path`, mode 0600: written beside it and renamed over it, so
    a symbolic link (or a file another user made) at `path` is replaced, not written
    through."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def trusted_owner(uid: int) -> bool:
    """Whether a file or directory of `uid` may be taken as this service's: its user's or
    root's (who could change anything anyway)."""
    return uid in (os.geteuid(), 0)


def read_own(path: Path, what: str) -> str | None:
    """The text of `path`, a credential this service made (None when nothing is there yet):
    refused (`ConfigError`, naming `what` and the path) when it is a symbolic link, owned by
    another user than this one or root, or writable by other users. Readable by others (an
    older release's 0644) it is made 0600 first."""
    try:
        found = path.lstat()
    except FileNotFoundError:
        return None  # nothing there yet: the caller makes it
    except OSError as exc:
        raise ConfigError(f"{what} '{path}' cannot be read ({exc.strerror})") from None
    if stat.S_ISLNK(found.st_mode):
        raise _untrusted(what, path, "is a symbolic link")
    if not trusted_owner(found.st_uid):
        raise _untrusted(what, path, f"is owned by uid {found.st_uid}, not this user")
    if found.st_mode & 0o022:
        raise _untrusted(
            what, path, f"may be written by other users (mode {found.st_mode & 0o777:o})"
        )
    if found.st_mode & 0o044 and found.st_uid == os.geteuid():
        path.chmod(0o600)
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} '{path}' cannot be read ({exc})") from None


def _untrusted(what: str, path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"{what} '{path}' {why}: another user may have put it there, so it is not used; "
        "remove it (a new one is made) or give the data directory to this user alone"
    )
