"""Helpers for e2ecov's integration tests: sample stack files and running the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).parent / "samples"
APP = SAMPLES / "app"
SOURCE = APP / "sampleapp"
DRIVE = SAMPLES / "e2e" / "drive.py"
PYTEST_TESTS = SAMPLES / "e2e" / "check_endpoints.py"


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def app_service(name: str = "app", *flags: str, timeout: str = "20s", extra: str = "") -> str:
    """A `[services.NAME]` table running the sample app."""
    command = [sys.executable, "-m", "sampleapp.server", "--port", "{port}", *flags]
    return f"""
[services.{name}]
command = {toml_list(command)}
cwd = {json.dumps(str(APP))}
health = {{ url = "http://127.0.0.1:{{port}}/health", timeout = "{timeout}", interval = "0.05s" }}
grace = "5s"
{extra}
"""


def drive(*steps: str) -> list[str]:
    """A test command running the sample driver script."""
    return [sys.executable, str(DRIVE), *steps]


def pytest_command() -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-c",
        str(SAMPLES / "pytest.ini"),
        str(PYTEST_TESTS),
    ]


def write_stack(directory: Path, tests: list[str], services: str, run_extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "stack.toml"
    path.write_text(
        f"""[run]
name = "sample"
artifacts = "out"
tests = {toml_list(tests)}
source = [{json.dumps(str(SOURCE))}]
{run_extra}
{services}"""
    )
    return path


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float
    artifacts: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def run_json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.artifacts / "run.json").read_text())
        return data


def e2ecov(
    *args: str,
    cwd: Path,
    artifacts: Path | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> Outcome:
    """Run the real `e2ecov` CLI in a subprocess.

    E2ECOV_UNDER_TEST=DIR runs the CLI from another source tree's `src` (e.g. an older
    checkout), to see which tests that version fails."""
    started = time.monotonic()
    under_test = os.environ.get("E2ECOV_UNDER_TEST")
    if under_test:
        env = {**(env or os.environ), "PYTHONPATH": under_test}
    done = subprocess.run(
        [sys.executable, "-m", "e2ecov.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Outcome(
        done.returncode,
        done.stdout,
        done.stderr,
        time.monotonic() - started,
        artifacts or cwd / "out",
    )


GOAPP = SAMPLES / "goapp"


def go_service(name: str = "goapp", extra: str = "") -> str:
    """A `[services.NAME]` table that e2ecov builds from the sample Go service (go_build)."""
    return f"""
[services.{name}]
go_build = "."
command = ["{{go_binary}}", "--port", "{{port}}"]
cwd = {json.dumps(str(GOAPP))}
health = {{ url = "http://127.0.0.1:{{port}}/health", timeout = "20s", interval = "0.05s" }}
grace = "5s"
{extra}
"""


def get_script(directory: Path, *calls: tuple[str, str]) -> list[str]:
    """A test command that GETs each (service env var, path) and fails on a non-200 answer."""
    script = directory / "get.py"
    lines = ["import os, sys, urllib.request"]
    for var, path in calls:
        if path == "kill":
            lines.append(
                f"pid = int(urllib.request.urlopen(os.environ[{var!r}] + '/pid').read())\n"
                "os.kill(pid, 9)\nimport time; time.sleep(0.3)"
            )
        else:
            lines.append(
                f"print({path!r}, urllib.request.urlopen(os.environ[{var!r}] + {path!r}).read())"
            )
    script.write_text("\n".join(lines) + "\n")
    return [sys.executable, str(script)]
