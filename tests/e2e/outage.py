"""Stop the stack's DataStorage mid-suite and bring it back, still measured by e2ecov.

e2ecov has no "restart a service" command; it does record each service's pid in `run.json`
as soon as the stack is up. So the outage is made the way an operator would make one: SIGTERM
to that pid (DataStorage shuts down gracefully; e2ecov's agent in it saves its coverage), and
later the *same* program is started again with the same command line, working directory and
environment, read from `/proc/<pid>`. The environment includes e2ecov's instrumentation
settings, so the restarted process is measured and announces itself to e2ecov like the first.

e2ecov does not supervise the restarted process (it did not start it), so this object stops
it at the end of the test session, and the kernel stops it if pytest dies first
(PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from e2ecov import protocol
from tests.e2e.stack import Stack

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _process_state(pid: int) -> str | None:
    """The /proc state letter (R, S, Z, ...) or None when the pid is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[0]


def _port_closed(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 0.2):
            return False
    except OSError:
        return True


class DataStorageOutage:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.pid: int = stack.run_record()["services"]["datastorage"]["pid"]
        self.restarted: subprocess.Popen[bytes] | None = None
        self.command: list[str] = []
        self.env: dict[str, str] = {}
        self.cwd = ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the running DataStorage and wait until its port refuses connections."""
        proc = Path(f"/proc/{self.pid}")
        self.command = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        self.env = dict(
            entry.decode().split("=", 1)
            for entry in (proc / "environ").read_bytes().split(b"\0")
            if b"=" in entry
        )
        self.cwd = os.readlink(proc / "cwd")
        protocol.expect_exit(self.pid, "the DataStorage outage scenario")  # not a crash
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _process_state(self.pid) not in (None, "Z") or not _port_closed(
            self.stack.datastorage
        ):
            if time.monotonic() > deadline:
                raise AssertionError(f"DataStorage pid {self.pid} still running after SIGTERM")
            time.sleep(0.05)

    def start(self, context: str, timeout: float = 30.0) -> None:
        """Start DataStorage again as it was; `context` is the e2ecov test context to begin in."""
        log = self.stack.artifacts / "logs" / "datastorage.restarted.log"
        env = {**self.env, protocol.ENV_CONTEXT: context}
        with open(log, "ab") as out:
            self.restarted = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.pid = self.restarted.pid
        deadline = time.monotonic() + timeout
        ops = self.stack.datastorage_ops
        while True:
            if self.restarted.poll() is not None:
                raise AssertionError(
                    f"restarted DataStorage exited with {self.restarted.returncode}; see {log}"
                )
            try:
                if httpx.get(f"{ops}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"restarted DataStorage not ready after {timeout:g}s")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the restarted process (it saves its coverage on the way out)."""
        if self.restarted is None or self.restarted.poll() is not None:
            return
        self.restarted.send_signal(signal.SIGTERM)
        try:
            self.restarted.wait(20)
        except subprocess.TimeoutExpired:
            self.restarted.kill()
            self.restarted.wait()
