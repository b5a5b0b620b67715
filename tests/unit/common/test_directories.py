"""`writable_directory`: a directory a service will write, proven writable at start-up."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from signalgate.common.config import ConfigError
from signalgate.common.directories import space_hint, writable_directory


def test_a_missing_directory_is_made_and_left_empty(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    assert writable_directory(target, "dataDir", "the journal") == target
    assert target.is_dir() and not list(target.iterdir())  # the probe file is gone


@pytest.mark.parametrize("name", ["under-a-file", "nul"])
def test_an_unusable_path_is_one_line_naming_the_key(tmp_path: Path, name: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = blocker / "data" if name == "under-a-file" else tmp_path / "a\x00b"
    with pytest.raises(ConfigError) as caught:
        writable_directory(path, "dataDir", "the audit journal")
    message = str(caught.value)
    assert message.startswith(f"config key 'dataDir': {str(path)!r}")
    assert "cannot be written" in message and "it holds the audit journal" in message
    assert "\n" not in message and "\x00" not in message


def test_a_directory_only_full_is_let_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No inode left for the probe file: the directory is writable, only full, and what
    lives there (a journal with undelivered events) must start to free it. Was refused at
    every start until someone freed inodes."""
    full = OSError(errno.ENOSPC, "No space left on device")

    def no_inode(*args: object, **kwargs: object) -> tuple[int, str]:
        raise full

    monkeypatch.setattr("signalgate.common.directories.tempfile.mkstemp", no_inode)
    assert writable_directory(tmp_path, "dataDir", "the journal") == tmp_path


def test_a_directory_an_older_release_left_open_is_closed(tmp_path: Path) -> None:
    """Its files were 0644 in a 0755 directory (and SQLite gives a new -wal its database's
    mode): the directory is closed and what it holds made the user's alone."""
    old = tmp_path / "data"
    old.mkdir(mode=0o755)
    old.chmod(0o755)
    (old / "gateway.db").write_text("rows")
    (old / "gateway.db").chmod(0o644)
    (old / "audit-journal").mkdir(mode=0o755)
    (old / "audit-journal").chmod(0o755)
    (old / "audit-journal" / "segment-0").write_text("{}\n")
    (old / "audit-journal" / "segment-0").chmod(0o664)
    elsewhere = tmp_path / "shared.txt"
    elsewhere.write_text("not the service's")
    elsewhere.chmod(0o644)
    (old / "link").symlink_to(elsewhere)
    assert writable_directory(old, "dataDir", "the journal") == old
    assert old.stat().st_mode & 0o777 == 0o700
    assert (old / "gateway.db").stat().st_mode & 0o777 == 0o600
    assert (old / "audit-journal").stat().st_mode & 0o777 == 0o700
    assert (old / "audit-journal" / "segment-0").stat().st_mode & 0o777 == 0o600
    assert elsewhere.stat().st_mode & 0o777 == 0o644  # a link's target is not the service's


def _statvfs(bavail: int, favail: int) -> os.statvfs_result:
    # f_bsize, f_frsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree, f_favail, f_flag,
    # f_namemax
    return os.statvfs_result((4096, 4096, 100, bavail, bavail, 40, favail, favail, 0, 255))


@pytest.mark.parametrize(
    ("bavail", "favail", "hint"),
    [
        (10, 0, "; its file system has no free inodes"),
        (0, 5, "; the disk under it is full"),
        (10, 5, ""),
    ],
)
def test_an_open_that_fails_for_room_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bavail: int, favail: int, hint: str
) -> None:
    """SQLite says only "unable to open database file" when no inode is left for its -wal
    (a clean stop removed it): the stores' error lines add why."""
    monkeypatch.setattr(
        "signalgate.common.directories.os.statvfs", lambda path: _statvfs(bavail, favail)
    )
    assert space_hint(tmp_path) == hint


def test_an_absolute_path_is_named_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal gave the path, then its absolute form in brackets: the same text twice
    for an absolute path ('/proc/x' ('/proc/x')). A relative one still gets both."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as caught:
        writable_directory(blocker / "data", "dataDir", "the audit journal")
    assert str(caught.value).count(str(blocker / "data")) == 1
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as relative:
        writable_directory(Path("a-file/data"), "dataDir", "the audit journal")
    assert f"'a-file/data' ({str(blocker / 'data')!r})" in str(relative.value)
