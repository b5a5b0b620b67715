"""The extra Python interpreters some tests run services on (e2ecov's cores on 3.12+).

`make test-pythons` (a step of `make test`) gives each Python 3.12+ on the machine a
throwaway venv with coverage.py under build/pythons/<version>/ (the Makefile is the one home
of that recipe; `make test` passes the directory as $SIGNALGATE_TEST_PYTHONS). Tests prefer
those venvs, fall back to a bare interpreter (whose missing coverage.py then fails the test
with the command that fixes it), and are skipped only when the machine has no 3.12+ at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PREPARE = "make test-pythons"


def prepared_dir() -> Path:
    """Where `make test-pythons` puts its venvs (the Makefile's PYTHONS_DIR)."""
    return Path(os.environ.get("SIGNALGATE_TEST_PYTHONS") or REPO / "build" / "pythons")


def _runs(python: Path) -> bool:
    probe = subprocess.run([str(python), "-c", "pass"], capture_output=True)
    return probe.returncode == 0


def has_coverage(python: Path) -> bool:
    probe = subprocess.run([str(python), "-c", "import coverage"], capture_output=True)
    return probe.returncode == 0


def pythons312() -> list[Path]:
    """Every prepared Python 3.12+ venv with coverage.py (3.12 and 3.13 differ in
    sys.monitoring), else the one `python312` finds; empty only when there is none."""
    prepared = sorted(prepared_dir().glob("3.1[2-9]*/bin/python"))
    ready = [python for python in prepared if has_coverage(python)]
    if ready:
        return ready
    one = python312()
    return [one] if one is not None else []


def python312() -> Path | None:
    """A Python 3.12+ for the tests, prepared venvs first; None only when there is none."""
    prepared = sorted(prepared_dir().glob("3.1[2-9]*/bin/python"))
    for python in prepared:
        if has_coverage(python):
            return python
    bare = sorted(Path.home().glob(".pyenv/versions/3.1[2-9]*/bin/python"))
    bare += [Path(p) for n in ("python3.13", "python3.12") if (p := shutil.which(n))]
    return next((python for python in bare if _runs(python)), None)


def missing_coverage(python: Path) -> str | None:
    """Why `python` cannot run a measured service, with the fix; None when it can."""
    if has_coverage(python):
        return None
    return f"{python} lacks coverage.py: run `{PREPARE}` (`make test` does) to get a venv with it"
