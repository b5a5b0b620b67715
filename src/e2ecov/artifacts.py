"""The artifacts directory: each run writes aside, then swaps its files in.

A run writes everything (data, ledger, logs, reports, diagnostics, run.json) into
`<artifacts>/.run-<run id>/`. At the end it is published: its entries replace the previous
run's when its tests ran to the end (whatever their verdict) or when there is nothing to keep.
A run that never finished its tests (the stack did not come up, or it was interrupted) next to
the reports of an earlier run goes to `<artifacts>/failed-run/` instead, so an incomplete run
never destroys the last complete one's reports.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from e2ecov import procs
from e2ecov.errors import UsageError

FAILED_RUN = "failed-run"
STAGE_PREFIX = ".run-"
ENTRIES = (
    *("data", "processes", "html", "diagnostics", "logs", ".combined", "run.json", "go"),
    *("e2e-coverage.txt", "e2e-coverage-func.txt", "summary.md"),
    *("coverage.json", "coverage.lcov", "coverage.xml", "go-coverage.html", FAILED_RUN),
)
REPORT_MARK = "coverage.json"  # present exactly when a run's reports were written


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def refuse_kept_stack(artifacts: Path) -> None:
    """A stack kept by `--keep` in this directory must be stopped before the next run."""
    previous = _read_json(artifacts / "run.json")
    if not previous or not previous.get("kept"):
        return
    run_id = str(previous.get("run_id", ""))
    pgids = [s["pgid"] for s in previous.get("services", {}).values() if s.get("pgid")]
    if any(procs.alive(p) for p in pgids) or (run_id and procs.marked(run_id)):
        raise UsageError(
            f"{artifacts} holds a kept stack that is still running (run {run_id}); "
            f"stop it first with: e2ecov down --artifacts {artifacts}"
        )


def stage(artifacts: Path, run_id: str) -> Path:
    """Create this run's private directory (and remove stages that crashed runs left)."""
    artifacts.mkdir(parents=True, exist_ok=True)
    for old in artifacts.glob(STAGE_PREFIX + "*"):
        shutil.rmtree(old, ignore_errors=True)
    directory = artifacts / f"{STAGE_PREFIX}{run_id}"
    for sub in ("data", "processes", "logs"):
        (directory / sub).mkdir(parents=True)
    return directory


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def publish(artifacts: Path, directory: Path, complete: bool) -> Path:
    """Move the run's files into place; returns where they ended up (see the docstring)."""
    if complete or not (artifacts / REPORT_MARK).exists():
        for entry in ENTRIES:
            _remove(artifacts / entry)
        for child in sorted(directory.iterdir()):
            child.rename(artifacts / child.name)
        directory.rmdir()
        return artifacts
    target = artifacts / FAILED_RUN
    _remove(target)
    directory.rename(target)
    return target
