"""What e2ecov and the processes it instruments agree on: environment names, the ledger
format and the control-socket commands. Stdlib only: it is imported at service start-up.

The ledger is one append-only JSON-lines file per process (`processes/` in the artifacts).
A process announces itself with a `start` record and writes a `save` record after each save,
so a process killed by SIGKILL still leaves behind what it did; e2ecov reads the ledger to
decide, per pid, whether coverage was saved at the end, only earlier (partial), or never.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_RUN_ID = "E2ECOV_RUN_ID"
ENV_ARTIFACTS = "E2ECOV_ARTIFACTS"
ENV_SERVICE = "E2ECOV_SERVICE"  # set only for instrumented services: activates the agent
ENV_CONTROL_DIR = "E2ECOV_CONTROL_DIR"
ENV_DATA_DIR = "E2ECOV_DATA_DIR"
ENV_LEDGER_DIR = "E2ECOV_LEDGER_DIR"
ENV_SOURCE = "E2ECOV_SOURCE"  # JSON list of directories
ENV_CONTEXTS = "E2ECOV_CONTEXTS"  # "1" or "0"
ENV_CONTEXT = "E2ECOV_CONTEXT"  # the current context, inherited by later workers
ENV_AUTOSAVE = "E2ECOV_AUTOSAVE"  # seconds
ENV_BRANCH = "E2ECOV_BRANCH"
ENV_HOME = "E2ECOV_HOME"  # directory holding the e2ecov package, for foreign interpreters
ENV_STACK_SERVICE = "E2ECOV_STACK_SERVICE"  # in every service's environment: the owner mark
ENV_SOURCE_PKGS = "E2ECOV_SOURCE_PKGS"  # JSON list of package names
ENV_HOOK_DIR = "E2ECOV_HOOK_DIR"  # the start-up hook's directory, kept first on PYTHONPATH
ALL_ENV = (
    ENV_RUN_ID, ENV_ARTIFACTS, ENV_SERVICE, ENV_CONTROL_DIR, ENV_DATA_DIR, ENV_LEDGER_DIR,
    ENV_SOURCE, ENV_CONTEXTS, ENV_CONTEXT, ENV_AUTOSAVE, ENV_BRANCH, ENV_HOME,
    ENV_STACK_SERVICE, ENV_SOURCE_PKGS, ENV_HOOK_DIR,
)  # fmt: skip

IDLE_CONTEXT = "idle"
STARTUP_CONTEXT = "startup"
PARALLEL_MARKER = "parallel-tests"  # file in the control dir: tests ran in parallel
ATTRIBUTION_MARKER = "contexts-switched"  # file in the control dir: the plugin switched contexts
SOCKET_SUFFIX = ".sock"
DATA_PREFIX = "coverage"  # data files: data/coverage.<service>.<pid>.<token>


EXPECTED_EXIT_PREFIX = "expected-exit."  # file in the control dir: a test stops that pid


def expect_exit(pid: int, reason: str, control_dir: str | Path | None = None) -> None:
    """Tell e2ecov that the tests stop this service process on purpose (an outage scenario),
    so its exit during the tests does not fail the run. A no-op outside an e2ecov run."""
    directory = control_dir or os.environ.get(ENV_CONTROL_DIR)
    if directory and os.path.isdir(directory):
        (Path(directory) / f"{EXPECTED_EXIT_PREFIX}{pid}").write_text(reason)


def expected_exit(control_dir: Path, pid: int) -> str | None:
    """The reason a test gave for stopping `pid`, if it did."""
    try:
        return (control_dir / f"{EXPECTED_EXIT_PREFIX}{pid}").read_text()
    except OSError:
        return None


def socket_path(control_dir: str | Path, pid: int) -> Path:
    """Short on purpose: Unix socket paths are limited to about 107 bytes."""
    return Path(control_dir) / f"{pid}{SOCKET_SUFFIX}"


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One JSON line, written with a single O_APPEND write so concurrent writers never mix."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@dataclass
class ProcessRecord:
    """Everything one instrumented process told the ledger."""

    service: str
    pid: int
    ppid: int
    started: float
    data_file: str
    core: str
    python: str
    saves: list[dict[str, Any]] = field(default_factory=list)
    coverage: str = ""  # the process's coverage.py version ("" from an older agent)
    ledger: str = ""
    package_dirs: list[str] = field(default_factory=list)
    # earlier images of this pid that exec'd this one without saving first (a Go service
    # re-executing itself: its runtime writes counters at exit, not at exec)
    unsaved_images: int = 0

    @property
    def last_save(self) -> dict[str, Any] | None:
        return self.saves[-1] if self.saves else None


def announced_pids(ledger_dir: Path) -> set[int]:
    """The pids with a ledger record (`<service>.<pid>.<token>.jsonl`), from the names alone:
    cheap enough to ask many times a second."""
    pids: set[int] = set()
    with contextlib.suppress(OSError):
        for name in os.listdir(ledger_dir):
            parts = name.removesuffix(".jsonl").rsplit(".", 2)
            if len(parts) == 3 and parts[1].isdigit():
                pids.add(int(parts[1]))
    return pids


def read_ledger(ledger_dir: Path) -> list[ProcessRecord]:
    """Every process that announced itself, in start order; torn last lines are skipped."""
    records: list[ProcessRecord] = []
    if not ledger_dir.is_dir():
        return records
    for path in sorted(ledger_dir.glob("*.jsonl")):
        record: ProcessRecord | None = None
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "start":
                unsaved = 0
                if record is not None and record.pid == event["pid"]:  # the same pid, exec'd
                    last = record.last_save
                    unsaved = record.unsaved_images + (
                        0 if last is not None and last.get("reason") == "exec" else 1
                    )
                record = ProcessRecord(
                    service=event["service"],
                    pid=event["pid"],
                    ppid=event["ppid"],
                    started=event["time"],
                    data_file=event["data_file"],
                    core=event.get("core", "?"),
                    python=event.get("python", "?"),
                    coverage=str(event.get("coverage", "")),
                    ledger=str(path),
                    unsaved_images=unsaved,
                )
            elif (
                event.get("event") in ("save", "reset")
                and record is not None
                and event.get("pid", record.pid) == record.pid
            ):
                record.saves.append(event)
                record.package_dirs = sorted({*record.package_dirs, *event.get("package_dirs", [])})
        if record is not None:
            records.append(record)
    return sorted(records, key=lambda r: r.started)


class AgentUnreachable(OSError):
    """The process behind a control socket is gone or not answering."""


def send(path: Path, command: str, timeout: float = 10.0) -> dict[str, Any]:
    """Send one command to one agent and return its JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(command.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise AgentUnreachable(f"{path}: {exc}") from exc
    if not data:
        raise AgentUnreachable(f"{path}: closed without answering")
    answer: dict[str, Any] = json.loads(data)
    return answer


def agent_sockets(control_dir: Path) -> Iterator[Path]:
    """The control sockets currently present (some may belong to processes that just exited)."""
    with contextlib.suppress(OSError):
        yield from sorted(control_dir.glob("*" + SOCKET_SUFFIX))


def broadcast(control_dir: Path, command: str, timeout: float = 10.0) -> dict[int, dict[str, Any]]:
    """Send `command` to every live agent; dead sockets are skipped. Keyed by pid."""
    answers: dict[int, dict[str, Any]] = {}
    for path in agent_sockets(control_dir):
        try:
            answer = send(path, command, timeout)
        except (AgentUnreachable, ValueError):
            continue
        answers[int(answer.get("pid", path.stem))] = answer
    return answers


def now() -> float:
    return time.time()
