"""e2ecov installed on its own: a fresh virtualenv with only `pip install ./e2ecov` (and
pytest for the example's tests) runs the README's minimal example.

The project is built from a copy of e2ecov/ and src/e2ecov (same layout), so the build leaves
nothing in the working tree (an egg-info next to the shared source would register the pytest
plugin twice in the project's own venv).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
IGNORE = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")


@pytest.mark.slow
def test_fresh_venv_with_only_e2ecov_runs_the_minimal_example(tmp_path: Path) -> None:
    shutil.copytree(REPO / "e2ecov", tmp_path / "e2ecov", ignore=IGNORE)
    shutil.copytree(REPO / "src" / "e2ecov", tmp_path / "src" / "e2ecov", ignore=IGNORE)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip, str(tmp_path / "e2ecov"), "pytest"], check=True, timeout=600)
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"e2ecov", "coverage", "pytest"} <= names
    assert not names & {"signalgate", "httpx", "starlette", "asyncpg"}, names
    example = tmp_path / "e2ecov" / "examples" / "minimal"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E2ECOV_", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        [str(venv / "bin" / "e2ecov"), "run"],
        cwd=example, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    assert "per-test attribution: on" in done.stdout
    report = json.loads((example / "build" / "e2e" / "coverage.json").read_text())
    hello = report["files"]["app/hello.py"]
    assert hello["functions"]["greet"]["summary"]["percent_covered"] == 100.0
    assert hello["functions"]["farewell"]["summary"]["percent_covered"] == 0.0
    greet_lines = hello["functions"]["greet"]["executed_lines"]
    contexts = {c for line in greet_lines for c in hello["contexts"][str(line)]}
    assert (
        contexts
        <= {
            "tests/test_hello.py::test_hello_with_a_name",
            "tests/test_hello.py::test_hello_without_a_name",
        }
        and len(contexts) == 2
    )
    assert (example / "build" / "e2e" / "html" / "index.html").is_file()
