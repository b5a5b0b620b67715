"""Credential files a service makes in its data directory are neither written through a
link nor taken from another user (an outside check planted both before root ran
`signalgate up`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from signalgate.cli import up
from signalgate.common.auth import ADMIN_TOKEN_FILE, TOKENS_FILE, ensure_admin_token
from signalgate.common.config import ConfigError
from signalgate.common.credential_files import read_own, write_private

NOBODY = 65534

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="making a file of another user takes root (CI runs as root)"
)


def test_a_link_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("not the service's")
    victim.chmod(0o600)
    planted = tmp_path / "tokens"
    planted.symlink_to(victim)
    write_private(planted, "abc scopes\n")
    assert victim.read_text() == "not the service's"
    assert not planted.is_symlink() and planted.read_text() == "abc scopes\n"
    assert planted.stat().st_mode & 0o777 == 0o600


@needs_root
def test_up_refuses_an_admin_token_another_user_planted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "shared"
    data_dir.mkdir()
    planted = data_dir / ADMIN_TOKEN_FILE
    planted.write_text("attacker-known-token\n")
    planted.chmod(0o666)
    os.chown(planted, NOBODY, NOBODY)
    assert up(data_dir, "127.0.0.1", 47950) == 2  # refused before anything starts
    error = capsys.readouterr().err
    assert f"is owned by uid {NOBODY}, not this user" in error and str(planted) in error


@needs_root
def test_a_generated_tokens_file_of_another_user_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / TOKENS_FILE
    planted.write_text(f"{'0' * 64} signals:write\n")
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match="not this user"):
        ensure_admin_token(tmp_path, ["signals:write"])


@pytest.mark.parametrize(
    ("mode", "refused"), [(0o600, None), (0o644, None), (0o620, "other users"), (0o666, "other")]
)
def test_an_own_file_is_trusted_unless_others_may_write_it(
    tmp_path: Path, mode: int, refused: str | None
) -> None:
    token = tmp_path / ADMIN_TOKEN_FILE
    token.write_text("t\n")
    token.chmod(mode)
    if refused:
        with pytest.raises(ConfigError, match=refused):
            read_own(token, "the admin token")
        return
    assert read_own(token, "the admin token") == "t\n"
    assert token.stat().st_mode & 0o777 == 0o600  # an older release's 0644 closed


def test_a_link_where_the_admin_token_should_be_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("t\n")
    (tmp_path / ADMIN_TOKEN_FILE).symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="symbolic link"):
        read_own(tmp_path / ADMIN_TOKEN_FILE, "the admin token")
