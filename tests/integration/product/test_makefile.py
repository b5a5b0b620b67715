"""`make test` prepares the extra interpreters its tests use: a second Python without
coverage.py gets a throwaway venv with it, and the e2ecov core tests then run on that venv.

These run the real Makefile (`make test-pythons`) with its directory and interpreter list
pointed into a temporary directory, so the repository's own build/ is not touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pythons import REPO, has_coverage, python312


def make(*args: str) -> subprocess.CompletedProcess[str]:
    """The repository's Makefile, as a user runs it (not as a sub-make of `make test`, whose
    MAKEFLAGS would pass its own variables and flags down, nor a `make test VENV=…`, which
    exports the variables given on its command line)."""
    outer = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VENV", "PYTHON", "PYTHONS_DIR", "EXTRA_PYTHONS")
    env = {k: v for k, v in os.environ.items() if k not in outer}
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), *args],
        capture_output=True,
        text=True,
        env=env,
    )


def bare_python(base: str, where: Path) -> Path:
    """A second interpreter without coverage.py: a venv without pip of `base`."""
    subprocess.run([base, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    assert not has_coverage(python), f"{python} unexpectedly has coverage.py"
    return python


@pytest.mark.slow
def test_a_second_python_without_coverage_gets_a_venv_with_it(tmp_path: Path) -> None:
    second = bare_python(sys.executable, tmp_path / "second")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    target = tmp_path / "pythons"
    done = make("test-pythons", f"EXTRA_PYTHONS={second}", f"PYTHONS_DIR={target}")
    assert done.returncode == 0, done.stdout + done.stderr
    venv_python = target / version / "bin" / "python"
    assert f"test-pythons: {target}/{version}, a venv of {second}" in done.stdout
    assert has_coverage(venv_python)
    assert not has_coverage(second), "the interpreter itself must stay untouched"
    again = make("test-pythons", f"EXTRA_PYTHONS={second}", f"PYTHONS_DIR={target}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout == "", "a prepared venv is reused, not rebuilt"


def test_no_second_python_is_said_and_is_not_an_error(tmp_path: Path) -> None:
    broken = tmp_path / "python3.12"  # like a pyenv shim for a version that is not selected
    broken.write_text("#!/bin/sh\necho 'pyenv: python3.12: command not found' >&2\nexit 127\n")
    broken.chmod(0o755)
    done = make("test-pythons", f"EXTRA_PYTHONS={broken}", f"PYTHONS_DIR={tmp_path / 'p'}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"test-pythons: {broken} does not run; passed over" in done.stdout
    assert "no Python 3.12+ found; e2ecov's 3.12+ core tests will be skipped" in done.stdout
    assert not (tmp_path / "p").exists()


def test_make_run_passes_args_to_signalgate_up() -> None:
    plan = make("-n", "run", "ARGS=--host 0.0.0.0 --base-port 9080")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert ".venv/bin/signalgate up --data-dir var --host 0.0.0.0 --base-port 9080" in plan.stdout


def test_make_test_prepares_the_interpreters_before_pytest_and_tells_it_where() -> None:
    plan = make("-n", "test", "PYTHONS_DIR=/tmp/somewhere")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    prepare = plan.stdout.index("-m venv --clear")
    run = plan.stdout.index("-m pytest")
    assert prepare < run
    assert 'SIGNALGATE_TEST_PYTHONS="/tmp/somewhere"' in plan.stdout


BARE_312 = python312()


@pytest.mark.slow
@pytest.mark.skipif(BARE_312 is None, reason="no Python 3.12+ interpreter on this machine")
def test_e2ecov_core_tests_pass_on_a_312_that_had_no_coverage(tmp_path: Path) -> None:
    """The whole chain on a machine whose 3.12 lacks coverage.py: prepare, then run the tests."""
    assert BARE_312 is not None
    second = bare_python(str(BARE_312), tmp_path / "py312")
    target = tmp_path / "pythons"
    done = make("test-pythons", f"EXTRA_PYTHONS={second}", f"PYTHONS_DIR={target}")
    assert done.returncode == 0, done.stdout + done.stderr
    env = {**os.environ, "SIGNALGATE_TEST_PYTHONS": str(target)}
    tests = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "tests/integration/e2ecov/test_e2ecov_paths_and_cores.py",
            "-k",
            "312",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout, tests.stdout
    assert "skipped" not in tests.stdout, tests.stdout
