"""The artifacts directory: the previous run's files are set aside, then dropped or put back.

A run writes where everything expects it (`<artifacts>/run.json`, `data/`, `logs/`, the
reports, `{artifacts}` and E2ECOV_ARTIFACTS all name the same directory, also while the run is
going on). Before it starts, the previous run's entries are moved aside into
`<artifacts>/.previous/`. At the end the run is published:

- when its tests ran to the end (whatever their verdict), or there were no earlier reports,
  the set-aside files are dropped: this run's files are the artifacts;
- otherwise (the stack did not come up, or the run was interrupted) this run's files move to
  `<artifacts>/failed-run/` and the previous run's come back, so an incomplete run never
  destroys the last complete one's reports.

A run that crashed before publishing (e2ecov itself killed) leaves `.previous/` behind; the
next run restores it first.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from e2ecov import procs, runjson
from e2ecov.errors import UsageError

FAILED_RUN = "failed-run"
PREVIOUS = ".previous"
# the measured source files' SHA-256 when the run's reports were first made (reports.py)
SOURCES_FILE = "sources.json"
ENTRIES = (
    *("data", "processes", "html", "diagnostics", "logs", ".combined", "run.json", "go", "bin"),
    *("e2e-coverage.txt", "e2e-coverage-func.txt", "summary.md"),
    *("coverage.json", "coverage.lcov", "coverage.xml", SOURCES_FILE, FAILED_RUN),
)
REPORT_MARK = "coverage.json"  # present exactly when a run's reports were written
REPORTS = (  # what a report writes: all of it made anew, or none of it left
    *("e2e-coverage.txt", "e2e-coverage-func.txt", "summary.md", "html"),
    *("coverage.json", "coverage.lcov", "coverage.xml"),
)


def clear_reports(artifacts: Path) -> None:
    """The reports of an earlier report removed before new ones are made: a report that then
    fails (the data lost or damaged since) leaves no earlier figures that read as its own."""
    for name in REPORTS:
        path = artifacts / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def refuse_running_stack(artifacts: Path) -> None:
    """The previous run's stack must be stopped before this run starts in the same directory:
    a stack kept by `--keep`, a run still going on, or the stack of a run whose e2ecov was
    killed (nothing stopped it; its files would be set aside under it)."""
    previous = runjson.read(artifacts)
    if not previous:
        return
    run_id = str(previous.get("run_id", ""))
    unfinished = previous.get("exit_code") is None
    if not previous.get("kept") and not unfinished:
        return
    if (owner := runjson.going_on(previous)) is not None:
        raise UsageError(
            f"{artifacts} is in use by another e2ecov run (run {run_id}, pid {owner}); "
            "wait for it to end, or give this run other --artifacts"
        )
    # only processes carrying the run's mark count: the pids in an old run.json (restored
    # from a cache, or from before a reboot) may be anyone's now
    running = procs.marked(run_id) if run_id else set()
    running |= procs.same_processes(previous.get("spawned"))  # recipe servers: Redis has no mark
    running |= procs.same_processes(previous.get("adopted"))  # helpers with no mark
    if not running:
        runjson.remove_recipe_roots(previous)  # a killed run's: nothing else would
        return
    if previous.get("kept"):
        raise UsageError(
            f"{artifacts} holds a kept stack that is still running (run {run_id}); "
            f"stop it first with: e2ecov down --artifacts {artifacts}"
        )
    raise UsageError(
        f"run {run_id} in {artifacts} ended without stopping its stack (its e2ecov process "
        f"was killed or crashed) and {len(running)} of its processes still run; "
        f"stop them first with: e2ecov down --artifacts {artifacts}"
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _move_entries(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for entry in ENTRIES:
        if (source / entry).exists() or (source / entry).is_symlink():
            _remove(target / entry)
            (source / entry).rename(target / entry)


def stage(artifacts: Path) -> None:
    """Set the previous run's files aside and create this run's directories. A directory
    that cannot be made or written is the caller's mistake (exit 2), said in one line."""
    try:
        artifacts.mkdir(parents=True, exist_ok=True)
        if not os.access(artifacts, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "Permission denied")
    except OSError as exc:
        raise UsageError(
            f"cannot use {artifacts} as the artifacts directory: {exc.strerror or exc}"
        ) from exc
    aside = artifacts / PREVIOUS
    if aside.is_dir():  # the last run crashed before publishing: its predecessor stays aside
        for entry in ENTRIES:
            _remove(artifacts / entry)
    else:
        _move_entries(artifacts, aside)
    for sub in ("data", "processes", "logs"):
        (artifacts / sub).mkdir()


def destination(artifacts: Path, complete: bool) -> Path:
    """Where `publish` will leave this run's files: in place, or in failed-run/ when the run
    is incomplete and a previous run's reports are there to come back."""
    if complete or not (artifacts / PREVIOUS / REPORT_MARK).exists():
        return artifacts
    return artifacts / FAILED_RUN


def publish(artifacts: Path, complete: bool) -> Path:
    """Keep this run's files or put the previous run's back; returns where this run's are."""
    aside = artifacts / PREVIOUS
    if destination(artifacts, complete) == artifacts:
        shutil.rmtree(aside, ignore_errors=True)
        return artifacts
    failed = aside / FAILED_RUN  # the previous run's own failed-run, if any, is dropped
    _remove(failed)
    _move_entries(artifacts, failed)
    failed.rename(artifacts / FAILED_RUN)
    _move_entries(aside, artifacts)
    shutil.rmtree(aside)
    return artifacts / FAILED_RUN
