"""What the kernel says about processes and listening ports, read from /proc.

e2ecov needs three answers no subprocess handle gives: which processes belong to a service
(its process group is not enough: a helper started in a new session leaves it), which
process holds a TCP port (a stale server from an earlier run must not pass for the new one),
and whether such a process is still running. Without cgroups (no containers, often no
systemd), the most reliable owner mark on Linux is the environment: every process a service
starts inherits `E2ECOV_RUN_ID` and `E2ECOV_STACK_SERVICE` unless it scrubs its environment
(the test command and what it starts, `E2ECOV_RUN_ID` alone), and root can read every
process's environment. The parent chain adds processes that did scrub
it, as long as their parent is still there to be seen.

Stdlib only; every function degrades to "unknown" (empty answers) where /proc is not readable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from e2ecov.protocol import ENV_RUN_ID, ENV_STACK_SERVICE

PROC = Path("/proc")
_LISTEN = "0A"
_TICKS = os.sysconf("SC_CLK_TCK")  # the unit of a process's start time


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    pgid: int
    state: str
    started: int  # clock ticks since boot: with the pid, it names one process for good

    @property
    def alive(self) -> bool:
        """Zombies and dead processes cannot do anything any more (nor save coverage)."""
        return self.state not in ("Z", "X")


def _stat(pid: int) -> Process | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    return Process(pid, int(fields[1]), int(fields[2]), fields[0], int(fields[19]))


def below(pid: int) -> dict[int, int]:
    """Every process below `pid` (children, theirs, ...) with its start time, read from each
    thread's `children` list: a few small reads, cheap enough for every poll (a whole
    `snapshot` is not)."""
    found: dict[int, int] = {}
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = list((PROC / str(parent) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                proc = _stat(child)
                if proc is not None and child not in found:
                    found[child] = proc.started
                    pending.append(child)
    return found


def snapshot() -> dict[int, Process]:
    """Every process visible now, by pid."""
    found: dict[int, Process] = {}
    with contextlib.suppress(OSError):
        for entry in PROC.iterdir():
            if entry.name.isdigit():
                proc = _stat(int(entry.name))
                if proc is not None:
                    found[proc.pid] = proc
    return found


def alive(pid: int) -> bool:
    proc = _stat(pid)
    return proc is not None and proc.alive


def still_running(owner: dict[str, object]) -> bool:
    """Whether the process a run.json names as its e2ecov (`{"pid", "started"}`) is the same
    process and still there (a reused pid has another start time)."""
    pid, started = owner.get("pid"), owner.get("started")
    if not isinstance(pid, int) or started is None:
        return False
    # a killed e2ecov its parent has not reaped yet is a zombie: ended, not running
    proc = _stat(pid)
    return proc is not None and proc.alive and start_time(pid) == started


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot): with its pid, it names one process
    even after the pid is reused."""
    proc = _stat(pid)
    return None if proc is None else proc.started


def running_for(started: int) -> float:
    """Seconds since a process started, from its start time (`Process.started`): the kernel's
    own clock since boot, which no late look or slow poll of e2ecov's can shift."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started / _TICKS


def same_processes(recorded: object) -> set[int]:
    """The recorded `[pid, start time]` pairs (or `[pid, start time, owner]`) whose process
    still runs: the same start time, so a pid reused by another program since is not one of
    them."""
    return {pid for pid, _ in _recorded(recorded)}


def recorded_owners(recorded: object) -> dict[int, str]:
    """Of the recorded `[pid, start time, owner]` entries whose process still runs (as
    `same_processes`), each pid's owner (a recipe server's service)."""
    return {pid: owner for pid, owner in _recorded(recorded) if owner is not None}


def _recorded(recorded: object) -> list[tuple[int, str | None]]:
    found = []
    for entry in recorded if isinstance(recorded, list) else []:
        if isinstance(entry, list) and len(entry) in (2, 3) and isinstance(entry[0], int):
            pid, started = entry[0], entry[1]
            owner = str(entry[2]) if len(entry) == 3 and entry[2] is not None else None
            if started is not None and alive(pid) and start_time(pid) == started:
                found.append((pid, owner))
    return found


def descendants(roots: Iterable[int], table: dict[int, Process] | None = None) -> set[int]:
    """The roots and every process below them (by parent pid), as far as the table shows."""
    table = snapshot() if table is None else table
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found: set[int] = set()
    stack = [r for r in roots if r in table]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, []))
    return found


def environ(pid: int) -> dict[str, str]:
    """A process's environment (empty when unreadable: another user's, or already gone)."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def marked(run_id: str, service: str | None = None) -> set[int]:
    """Live processes carrying this run's owner mark: of one service (`E2ECOV_STACK_SERVICE`
    names it), or, with no service, every process of the run, the test command and what it
    started among them (they carry `E2ECOV_RUN_ID` alone). Counting only the services', a
    test command left running by a killed e2ecov was neither stopped by `e2ecov down` nor a
    reason for the next run to refuse, and its tests went on against the next run's services
    on the same ports."""
    found: set[int] = set()
    me = os.getpid()
    for proc in snapshot().values():
        if proc.pid == me or not proc.alive:
            continue
        env = environ(proc.pid)
        if env.get(ENV_RUN_ID) != run_id:
            continue
        if service is None or env.get(ENV_STACK_SERVICE) == service:
            found.add(proc.pid)
    return found


def group_marked(pgid: int, run_id: str) -> bool:
    """Whether the process group holds a live process carrying this run's owner mark: a
    group id recorded in an old run.json may belong to anyone now (pids are reused)."""
    return any(
        proc.alive and proc.pgid == pgid and environ(proc.pid).get(ENV_RUN_ID) == run_id
        for proc in snapshot().values()
    )


def command_line(pid: int) -> str:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part) or "?"


def describe(pid: int) -> str:
    """'pid 1234 (python -m app --port 8080)' for messages."""
    line = command_line(pid)
    return f"pid {pid} ({line[:160]})"


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def port_holders(port: int) -> set[int] | None:
    """Pids holding a listening socket on `port` (any address).

    None when nobody listens; an empty set when someone does but /proc does not say who
    (another user's process, or another network namespace's socket)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    holders: set[int] = set()
    with contextlib.suppress(OSError):
        for entry in PROC.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fds = list((entry / "fd").iterdir())
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(fd) in targets:
                        holders.add(int(entry.name))
                        break
                except OSError:
                    continue
    return holders


def kill(pids: Iterable[int], signum: int = signal.SIGTERM) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def become_subreaper() -> bool:
    """Make this process the one orphans of its descendants are re-parented to (Linux
    PR_SET_CHILD_SUBREAPER), so a helper that left its service's session *and* scrubbed its
    environment, whose parent then exited, is still found: as a child of e2ecov."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def orphans(known: Iterable[int]) -> set[int]:
    """Live children of this process (adopted orphans among them) that are not `known`,
    with their descendants."""
    table = snapshot()
    me = os.getpid()
    roots = {p.pid for p in table.values() if p.ppid == me and p.alive} - set(known)
    return {pid for pid in descendants(roots, table) if table[pid].alive}


def reap(pids: Iterable[int]) -> None:
    """Collect adopted children that exited (no Popen object waits for them); only these
    pids, so no Popen loses its child's exit status."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
