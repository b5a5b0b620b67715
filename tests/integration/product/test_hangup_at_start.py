"""A SIGHUP right after a command starts does not end it.

Python's default for SIGHUP ends a process (exit 129), and a command imports its whole
service before its `main` runs. The entry points (`signalgate/__main__.py`) ignore SIGHUP
before that import; this watches a real console script from outside (`/proc`) and checks
that SIGHUP was ignored before the service's libraries were loaded, then sends one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
# loaded by every service's import (its settings are pydantic models)
SERVICE_LIBRARY = "pydantic_core"


def _hangup_ignored(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


@pytest.mark.parametrize(
    "command",
    [
        ["signalgate-gateway", "check-config"],
        ["signalgate-datastorage", "check-config"],
    ],
)
def test_sighup_is_ignored_before_the_service_is_imported(
    tmp_path: Path, command: list[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("logging:\n  level: info\n")
    process = subprocess.Popen(
        [str(BIN / command[0]), *command[1:], str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        loaded_before = ""
        while time.monotonic() < deadline:
            # the libraries loaded, read *before* the disposition: if SIGHUP is ignored now,
            # it was ignored no later than this read of the libraries
            maps = Path(f"/proc/{process.pid}/maps").read_text()
            if _hangup_ignored(process.pid):
                loaded_before = maps
                break
            time.sleep(0.0002)
        assert loaded_before, "SIGHUP was never ignored"
        assert SERVICE_LIBRARY not in loaded_before
        os.kill(process.pid, signal.SIGHUP)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, output
    assert '"listen": "127.0.0.1:' in output, output  # the settings it checked
