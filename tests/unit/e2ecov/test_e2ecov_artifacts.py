"""The artifacts directory: the previous run's files set aside, then dropped or put back."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2ecov import artifacts, procs
from e2ecov.errors import ExitCode, UsageError


def _run(root: Path, label: str, reports: bool) -> None:
    (root / "run.json").write_text(label)
    (root / "logs" / "tests.log").write_text(label)
    if reports:
        (root / "coverage.json").write_text(label)
        (root / "sources.json").write_text(label)  # what a later `e2ecov report` compares


def test_complete_run_replaces_incomplete_one_goes_aside(tmp_path: Path) -> None:
    artifacts.stage(tmp_path)
    _run(tmp_path, "good", reports=True)
    assert artifacts.publish(tmp_path, complete=True) == tmp_path
    artifacts.stage(tmp_path)
    assert not (tmp_path / "coverage.json").exists(), "this run starts empty"
    # the last run's source digests: kept, a later run warned its edits were 'changed since'
    assert not (tmp_path / "sources.json").exists()
    assert (tmp_path / ".previous" / "coverage.json").read_text() == "good"
    _run(tmp_path, "bad", reports=False)
    # what the run tells before it ends is where publish puts it
    assert artifacts.destination(tmp_path, complete=True) == tmp_path
    assert artifacts.destination(tmp_path, complete=False) == tmp_path / "failed-run"
    where = artifacts.publish(tmp_path, complete=False)
    assert where == tmp_path / "failed-run"
    assert (tmp_path / "coverage.json").read_text() == "good"
    assert (tmp_path / "sources.json").read_text() == "good"
    assert (tmp_path / "run.json").read_text() == "good"
    assert (where / "run.json").read_text() == "bad"
    assert (where / "logs" / "tests.log").read_text() == "bad"
    assert not (tmp_path / ".previous").exists()
    artifacts.stage(tmp_path)
    _run(tmp_path, "next", reports=True)
    artifacts.publish(tmp_path, complete=True)
    assert (tmp_path / "coverage.json").read_text() == "next"
    assert not (tmp_path / "failed-run").exists()


def test_first_run_is_published_even_when_incomplete(tmp_path: Path) -> None:
    artifacts.stage(tmp_path)
    _run(tmp_path, "bad", reports=False)
    assert artifacts.destination(tmp_path, complete=False) == tmp_path
    assert artifacts.publish(tmp_path, complete=False) == tmp_path
    assert (tmp_path / "run.json").read_text() == "bad"


def test_a_crashed_run_gives_the_previous_files_back(tmp_path: Path) -> None:
    artifacts.stage(tmp_path)
    _run(tmp_path, "good", reports=True)
    artifacts.publish(tmp_path, complete=True)
    artifacts.stage(tmp_path)
    _run(tmp_path, "crashed", reports=False)  # e2ecov killed: never published
    artifacts.stage(tmp_path)
    assert (tmp_path / ".previous" / "coverage.json").read_text() == "good"
    assert (tmp_path / ".previous" / "run.json").read_text() == "good"


def test_pids_of_an_old_run_json_that_are_someone_elses_now_are_left_alone(
    tmp_path: Path,
) -> None:
    """A run.json restored from a cache (or from before a reboot) names pids that unrelated
    programs may hold now: the next run is not refused for them, and `down` does not stop
    them."""
    import json
    import subprocess

    from e2ecov import down as down_module
    from e2ecov.artifacts import refuse_running_stack

    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (tmp_path / "run.json").write_text(
            json.dumps(
                {
                    "run_id": "old-run",
                    "exit_code": None,
                    "kept": False,
                    "e2ecov": {"pid": 999_999_999, "started": 1},
                    "services": {"svc": {"pid": stranger.pid, "pgid": stranger.pid}},
                }
            )
        )
        refuse_running_stack(tmp_path)  # nothing of that run is running: no refusal
        result = down_module.down(tmp_path)
        assert result.stopped == [] and result.already_gone == ["svc"]
        assert stranger.poll() is None, "down stopped a process that was not the run's"
    finally:
        stranger.kill()
        stranger.wait()


def test_an_artifacts_directory_that_cannot_be_made_is_a_usage_error(tmp_path: Path) -> None:
    """Under a regular file: one line and exit 2 before anything starts (it was a
    traceback and exit 1, which says the tests failed)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UsageError, match=r"cannot use .* as the artifacts directory: Not a"):
        artifacts.stage(blocker / "build")
    assert UsageError.exit_code == ExitCode.INVALID


def test_an_e2ecov_killed_and_not_yet_reaped_is_not_running(tmp_path: Path) -> None:
    """A zombie (killed, its parent not waiting yet) blocked `down` and the next run."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner: dict[str, object] = {"pid": child.pid, "started": procs.start_time(child.pid)}
        assert procs.still_running(owner)
        child.kill()
        deadline = time.monotonic() + 10
        while procs.alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Path(f"/proc/{child.pid}").exists(), "a zombie until reaped"
        assert not procs.still_running(owner)
    finally:
        child.kill()
        child.wait()
