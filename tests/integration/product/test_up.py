"""`signalgate up`: both services on embedded defaults, wired together, stopped together."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.services import alert, webhook
from tests.support.up import free_base_port, port_is_free, signalgate_up, wait_ready


def test_up_runs_gateway_and_datastorage_with_one_admin_token(tmp_path: Path) -> None:
    """The console script, started from a directory whose files shadow standard modules:
    the services and their SQLite processes import the real ones (a `struct.py` there
    stopped every service from starting)."""
    base = free_base_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE_")}
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    for shadow in ("struct", "pickle", "socket", "json", "traceback"):
        (workdir / f"{shadow}.py").write_text("raise SystemExit('imported from the cwd')\n")
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "signalgate"),
            "up",
            "--data-dir",
            str(tmp_path / "var"),
            "--base-port",
            str(base),
        ],
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(f"http://127.0.0.1:{base + 1}/readyz", proc, tmp_path / "up.log")
        token = (tmp_path / "var" / "admin.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        created = httpx.post(
            f"http://127.0.0.1:{base}/api/v1/signals/prometheus",
            json=webhook(alert(pod="up-1")),
            headers=headers,
        )
        assert created.status_code == 201, created.text
        rr = created.json()["remediationRequestName"]
        deadline = time.monotonic() + 15
        events: list[str] = []
        while time.monotonic() < deadline and len(events) < 2:
            answer = httpx.get(
                f"http://127.0.0.1:{base + 10}/api/v1/audit/events",
                params={"correlation_id": rr},
                headers=headers,
            )
            events = [e["event_type"] for e in answer.json()["data"]]
            time.sleep(0.3)
        assert sorted(events) == ["gateway.crd.created", "gateway.signal.received"]
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        log.close()
    assert code == 0
    output = (tmp_path / "up.log").read_text()
    assert "signalgate is up" in output and token not in output


def test_up_names_a_taken_port_and_starts_nothing(tmp_path: Path) -> None:
    base = free_base_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 10))
        squatter.listen()
        result = subprocess.run(
            [
                *(sys.executable, "-m", "signalgate.cli", "up"),
                *("--data-dir", str(tmp_path / "var"), "--base-port", str(base)),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{base + 10} (already in use)" in result.stderr
    assert port_is_free(base) and port_is_free(base + 1)


def up_once(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signalgate.cli", "up", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_up_refuses_what_it_cannot_use_in_one_line_before_starting(tmp_path: Path) -> None:
    """A port past the range, a host that is not this machine's, a data directory under a
    file: one line each, nothing started (these were a traceback, "already in use", and a
    traceback)."""
    too_high = up_once("--data-dir", str(tmp_path / "var"), "--base-port", "65530")
    assert too_high.returncode == 2
    assert "argument --base-port: 65530 is not between 1 and 65524" in too_high.stderr
    base = free_base_port()
    elsewhere = up_once(
        "--data-dir", str(tmp_path / "var"), "--base-port", str(base), "--host", "192.0.2.1"
    )
    assert elsewhere.returncode == 1
    assert f"cannot listen on 192.0.2.1:{base + 10} (Cannot assign requested address)" in (
        elsewhere.stderr
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    no_dir = up_once("--data-dir", str(blocker / "var"), "--base-port", str(base))
    assert no_dir.returncode == 2
    (line,) = no_dir.stderr.strip().splitlines()
    assert (
        line.startswith(f"signalgate: --data-dir: '{blocker / 'var'}'")
        and "cannot be written" in line
    )
    assert port_is_free(base) and port_is_free(base + 10)


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whoever reaps it here)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_up_killed_with_sigkill_takes_its_services_along(tmp_path: Path) -> None:
    """Killed with SIGKILL (no chance to stop anything), `up` left both services serving as
    orphans, their ports taken, so the next `up` could not start: each now stops with it."""
    with signalgate_up(tmp_path) as up:
        services = _children(up.proc.pid)
        assert len(services) == 2
        up.proc.kill()
        up.proc.wait(10)
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and any(_running(pid) for pid in services):
            time.sleep(0.2)
        assert not any(_running(pid) for pid in services), "a service outlived `up`"
        assert all(port_is_free(up.base + offset) for offset in (0, 1, 10, 11))
