"""The watch for Python processes e2ecov's start-up hook never reached (`e2ecov.unmeasured`),
on real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2ecov import procs
from e2ecov.unmeasured import SETTLE, Watch

SLEEPER = [sys.executable, "-I", "-c", "import time; time.sleep(120)"]


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def _wait_until_running_for(pid: int, seconds: float) -> None:
    """Until the process has run `seconds` by its own start time (a generous deadline: a busy
    machine may be slow to start it at all)."""
    deadline = time.monotonic() + 60
    while True:
        started = procs.start_time(pid)
        assert started is not None, f"pid {pid} is gone"
        if procs.running_for(started) >= seconds:
            return
        assert time.monotonic() < deadline, f"pid {pid} never ran {seconds}s"
        time.sleep(0.05)


def test_a_child_that_ran_the_settle_time_unannounced_is_named_at_the_first_look(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    """An unannounced interpreter was named only once e2ecov had *seen* it for SETTLE
    seconds: first seen up to a look late, it had to live a look and SETTLE and the drift of
    a busy machine's looks; a child of 3.5 s went unnamed (the e2ecov tests under CPU load).
    How long it has run is its start time's to say, at any look."""
    ledger = tmp_path / "processes"
    ledger.mkdir()
    announced = subprocess.Popen(SLEEPER)
    unannounced = subprocess.Popen(SLEEPER)
    sleepers += [announced, unannounced]
    (ledger / f"app.{announced.pid}.0a1b2c3d.jsonl").write_text("{}\n")
    for proc in sleepers:
        _wait_until_running_for(proc.pid, SETTLE)
    watch = Watch(ledger)
    watch.look({"app": announced.pid, "worker": unannounced.pid})
    found = list(watch.found.values())
    assert [(u.service, u.pid) for u in found] == [("worker", unannounced.pid)], found
    assert "-I -c import time" in found[0].message()
