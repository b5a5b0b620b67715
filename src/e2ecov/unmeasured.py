"""Python processes of a measured service that never announced themselves.

The start-up hook rides on the environment: `PYTHONPATH` names it and the run's variables
tell it what to do. A child started with `python -I` (or `-E`, `-S`), or with an environment
of its own (`subprocess.run(..., env={})`), runs without it — measured by nothing, and with
no ledger record that could be judged a loss. e2ecov cannot measure such a process after the
fact, but it can say it ran: while the tests run it looks about once a second at the
processes below each measured Python service, and names every Python interpreter among them
that has run for `SETTLE` seconds without announcing itself. A warning, not a loss: what it
ran may not be the service's code at all. How long a process has run is told by its start
time, not by when a look first saw it: counted from the first sighting, a child had to live
a look and `SETTLE` and the drift of a busy machine's looks, and one of 3.5 s went unnamed
under CPU load. A process that lives less than `SETTLE` is never seen; one that outlives it
by a look always is.

Below a Go service it looks for Go binaries built without `-cover` (a helper the service
runs, built elsewhere): such a process writes no counters however it ends, and nothing else
would say that it ran. A Go binary is judged by its build info, not by an announcement, so
one is named at the first look that sees it, however young.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from e2ecov import procs, protocol
from e2ecov.gocover import built_with_cover

# an interpreter's executable, as /proc/PID/exe resolves it (venv links included)
PYTHON_EXECUTABLE = re.compile(r"^(python|pypy)\d*(\.\d+)*$")
# how long an interpreter may take to start the agent and write its ledger record, counted
# from its start time
SETTLE = 2.0
# how often the tests' wait looks (reading /proc/*/stat of the whole machine each time)
EVERY = 1.0


@dataclass(frozen=True)
class Unmeasured:
    """A Python process of a measured service that the hook never reached."""

    service: str
    pid: int
    command: str
    go_binary: str | None = None  # a Go binary built without -cover, below a Go service

    def message(self) -> str:
        if self.go_binary is not None:
            return (
                f"{self.service}: pid {self.pid} ({self.command[:160]}) ran {self.go_binary}, "
                "a Go binary built without -cover, and was not measured: what it ran is not in "
                "the report (a tool of someone else's, say); to measure it, build it with go "
                "build -cover -covermode=atomic (it writes into the service's GOCOVERDIR, which "
                "it inherits)"
            )
        return (
            f"{self.service}: pid {self.pid} ({self.command[:160]}) ran Python and was not "
            "measured: e2ecov's start-up hook never ran in it (started with python -I, -E or "
            "-S, with an environment of its own, without PYTHONPATH or the run's E2ECOV_* "
            "variables, or with another sitecustomize before e2ecov's on PYTHONPATH); what "
            "it ran is not in the report"
        )


class Watch:
    """Looks for unannounced interpreters below the measured services' main processes."""

    def __init__(self, ledger_dir: Path, go_services: frozenset[str] = frozenset()) -> None:
        self.ledger_dir = ledger_dir
        self.go_services = go_services  # the services whose descendants are judged as Go's
        self.found: dict[tuple[int, int], Unmeasured] = {}  # (pid, start time) → it
        self._judged: set[tuple[int, int]] = set()  # below a Go service, looked at once
        # service → pid → command line: the Go processes built with -cover seen below a Go
        # service's main process (its children), each of which should leave counters
        self.go_children: dict[str, dict[int, str]] = {}
        self._last_look = 0.0

    def look_now_and_then(self, roots: Callable[[], dict[str, int]]) -> None:
        """`look`, at most once every `EVERY` seconds (called from a polling loop: the roots
        are found only when it looks)."""
        now = time.monotonic()
        if now - self._last_look >= EVERY:
            self._last_look = now
            self.look(roots())

    def look(self, roots: dict[str, int]) -> None:
        """One look at the processes below `roots` (service name → its main process)."""
        table = procs.snapshot()
        announced = protocol.announced_pids(self.ledger_dir)
        for service, root in roots.items():
            for pid in procs.descendants([root], table):
                proc = table[pid]
                key = (pid, proc.started)
                if not proc.alive or pid in announced or key in self.found:
                    continue
                if service in self.go_services:
                    if key not in self._judged:
                        self._judged.add(key)
                        self._judge_go(service, pid, key, root)
                    continue
                if procs.running_for(proc.started) < SETTLE or not _is_python(pid):
                    continue
                # the ledger read again: one that announced itself while this look ran is not
                # named (a look reads the whole machine's /proc, slow on a busy machine)
                if pid not in protocol.announced_pids(self.ledger_dir):
                    self.found[key] = Unmeasured(service, pid, procs.command_line(pid))

    def _judge_go(self, service: str, pid: int, key: tuple[int, int], root: int) -> None:
        """A process below a Go service: a Go binary without -cover is unmeasured; one with
        it, other than the main process, is kept to be judged by its counters at the end."""
        try:
            executable = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return
        cover = built_with_cover(Path(executable.removesuffix(" (deleted)")))
        if cover is False:
            self.found[key] = Unmeasured(service, pid, procs.command_line(pid), executable)
        elif cover and pid != root:
            self.go_children.setdefault(service, {})[pid] = procs.command_line(pid)

    def by_service(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for item in self.found.values():
            found.setdefault(item.service, []).append(item.message())
        return found


def _is_python(pid: int) -> bool:
    try:
        executable = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return bool(PYTHON_EXECUTABLE.match(os.path.basename(executable)))
