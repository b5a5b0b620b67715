"""`check-config` reads its settings file the same way in both services: as its one argument
or as `--config FILE` (the form `serve` takes), and refuses two different files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", ["signalgate-gateway", "signalgate-datastorage"])
@pytest.mark.parametrize("form", [["FILE"], ["--config", "FILE"], ["FILE", "--config", "FILE"]])
def test_either_form_reads_the_file(tmp_path: Path, command: str, form: list[str]) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("server:\n  listen: 127.0.0.1:46123\n")
    argv = [str(config) if part == "FILE" else part for part in form]
    done = subprocess.run(
        [str(BIN / command), "check-config", *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["server"]["listen"] == "127.0.0.1:46123"


@pytest.mark.parametrize("command", ["signalgate-gateway", "signalgate-datastorage"])
def test_two_different_files_are_refused(tmp_path: Path, command: str) -> None:
    one, other = tmp_path / "one.yaml", tmp_path / "other.yaml"
    one.write_text("{}\n")
    other.write_text("{}\n")
    done = subprocess.run(
        [str(BIN / command), "check-config", str(one), "--config", str(other)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "two settings files given" in done.stderr
