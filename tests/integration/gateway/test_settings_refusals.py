"""Settings both services must refuse at start (exit 2, one line naming the key), and
`check-config` with them: what a user who follows the docs literally can write by mistake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SERVICES = ("signalgate.gateway.cli", "signalgate.datastorage.cli")


def run(
    module: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE_")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("module", SERVICES)
def test_a_key_given_twice_in_the_file_is_refused_naming_it_and_both_lines(
    module: str, tmp_path: Path
) -> None:
    config = tmp_path / "dup.yaml"
    config.write_text(
        "server:\n"
        "  listen: 127.0.0.1:21100\n"
        "logging:\n"
        "  level: info\n"
        "server:\n"
        "  opsListen: 127.0.0.1:21101\n"
    )
    done = run(module, "check-config", str(config))
    assert done.returncode == 2, done.stdout
    assert done.stderr.strip().splitlines() == [
        f"error: config key 'server' (config file '{config}'): given twice, on line 1 and "
        "line 5; keep one (YAML would silently drop the first)"
    ]
    config.write_text("logging:\n  level: info\n  format: json\n  level: debug\n")
    nested = run(module, "check-config", str(config))
    assert nested.returncode == 2, nested.stdout
    assert "config key 'logging.level'" in nested.stderr and "line 2 and line 4" in nested.stderr
