"""`writable_directory`: a directory a service will write, proven writable at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from signalgate.common.config import ConfigError
from signalgate.common.directories import writable_directory


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
