"""`signalgate up` as a user runs it: a real supervisor process on a free block of ports."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from signalgate.common.listeners import bind_problem


def port_is_free(port: int) -> bool:
    return bind_problem("127.0.0.1", port) is None


def free_base_port() -> int:
    """A base port whose four ports are free, below the kernel's ephemeral range.

    Ports the tests' own servers and client connections get from the kernel come from the
    ephemeral range (32768 and up), so a block chosen below it cannot collide with them.
    """
    for _ in range(200):
        base = random.randrange(20000, 32000, 20)
        if all(port_is_free(base + offset) for offset in (0, 1, 10, 11)):
            return base
    raise AssertionError("no free block of ports for signalgate up")


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"signalgate up exited early:\n{log.read_text()}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready:\n{log.read_text()}")


@dataclass
class Up:
    base: int
    cwd: Path
    log: Path
    proc: subprocess.Popen[bytes]
    exit_code: int | None = None

    @property
    def token(self) -> str:
        return (self.cwd / "var" / "admin.token").read_text().strip()

    def output(self) -> str:
        return self.log.read_text()


@contextmanager
def signalgate_up(cwd: Path) -> Iterator[Up]:
    """`signalgate up --data-dir var` run in `cwd`, ready on entry, stopped by SIGINT on exit
    (its exit code and whole output are on the `Up` afterwards)."""
    base = free_base_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE_")}
    log_path = cwd / "up.log"
    command = [sys.executable, "-m", "signalgate.cli", "up", "--data-dir", "var"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*command, "--base-port", str(base)],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        up = Up(base, cwd, log_path, proc)
        try:
            wait_ready(f"http://127.0.0.1:{base + 1}/readyz", proc, log_path)
            yield up
        finally:
            proc.send_signal(signal.SIGINT)
            up.exit_code = proc.wait(60)
