"""Keys the two services share mean the same: a renamed settings key (the Gateway's
`server.maxBodyBytes`, now `server.maxBodySize` as in DataStorage) is still read from the file
and the environment, with a warning naming both keys logged once logging is set up; `auth`
and `logging` are one model in both."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from signalgate.common.config import load_settings, resolve_settings
from signalgate.common.logging import configure_logging
from signalgate.datastorage.settings import DataStorageSettings
from signalgate.gateway.settings import GatewaySettings


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_old_key_in_the_file_is_read_and_a_warning_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("server:\n  maxBodyBytes: 4KiB\n")
    resolved = resolve_settings(GatewaySettings, config, environ={})
    assert resolved.settings.server.max_body_size == 4096
    configure_logging("info", "json", resolved.notes)
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    [warning] = [line for line in lines if line.get("logger") == "signalgate.config"]
    assert warning["level"] == "warning"
    assert "'server.maxBodyBytes'" in warning["msg"]
    assert "'server.maxBodySize'" in warning["msg"]
    assert str(config) in warning["msg"]
    configure_logging("info", "json")  # said once
    assert "maxBodyBytes" not in capsys.readouterr().err


def test_the_old_key_in_the_environment_is_read_with_a_warning() -> None:
    env = {"SIGNALGATE_SERVER__MAXBODYBYTES": "2048"}
    resolved = resolve_settings(GatewaySettings, environ=env)
    assert resolved.settings.server.max_body_size == 2048
    [note] = resolved.notes
    assert "SIGNALGATE_SERVER__MAXBODYBYTES" in note and "'server.maxBodySize'" in note


def test_the_new_key_wins_over_the_old_and_both_services_share_it(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("server:\n  maxBodyBytes: 4KiB\n  maxBodySize: 8KiB\n")
    resolved = resolve_settings(GatewaySettings, config, environ={})
    assert resolved.settings.server.max_body_size == 8192
    [note] = resolved.notes  # not "deprecated" alone, as if the old value were read
    assert "'server.maxBodyBytes'" in note and "is ignored" in note
    for both in (  # the new name wins in either order of the environment
        {"SIGNALGATE_SERVER__MAXBODYBYTES": "2KiB", "SIGNALGATE_SERVER__MAXBODYSIZE": "5KiB"},
        {"SIGNALGATE_SERVER__MAXBODYSIZE": "5KiB", "SIGNALGATE_SERVER__MAXBODYBYTES": "2KiB"},
    ):
        resolved = resolve_settings(GatewaySettings, environ=both)
        assert resolved.settings.server.max_body_size == 5120
        [note] = resolved.notes
        assert "SIGNALGATE_SERVER__MAXBODYBYTES" in note and "is ignored" in note
    env = {"SIGNALGATE_SERVER__MAXBODYSIZE": "3KiB"}
    assert load_settings(GatewaySettings, environ=env).server.max_body_size == 3072
    assert load_settings(DataStorageSettings, environ=env).server.max_body_size == 3072


def test_both_services_read_auth_and_logging_alike() -> None:
    env = {"SIGNALGATE_LOGGING__LEVEL": "WARNING", "SIGNALGATE_AUTH__MODE": "none"}
    for settings in (
        load_settings(GatewaySettings, environ=env),
        load_settings(DataStorageSettings, environ=env),
    ):
        assert (settings.logging.level, settings.auth.mode) == ("warning", "none")
