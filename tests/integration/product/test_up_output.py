"""`signalgate up` on one terminal: every service line says whose it is, lifecycle lines are
said once per service, and the Gateway's audit deliveries do not log a line per request."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.support.services import alert, webhook
from tests.support.up import Up, signalgate_up

PREFIXES = ("datastorage | ", "gateway     | ")
BANNER = ("signalgate is up", "  datastorage  API", "  gateway      API", "  admin token  ")


def _audit_arrived(up: Up, rr: str) -> bool:
    """Poll DataStorage until the Gateway's audit batch for `rr` is stored (15 s at most)."""
    headers = {"Authorization": f"Bearer {up.token}"}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        answer = httpx.get(
            f"http://127.0.0.1:{up.base + 10}/api/v1/audit/events",
            params={"correlation_id": rr},
            headers=headers,
        )
        if answer.json()["data"]:
            return True
        time.sleep(0.2)
    return False


def test_each_line_names_its_service_and_lifecycle_lines_appear_once(tmp_path: Path) -> None:
    with signalgate_up(tmp_path) as up:
        created = httpx.post(
            f"http://127.0.0.1:{up.base}/api/v1/signals/prometheus",
            json=webhook(alert(pod="up-out-1")),
            headers={"Authorization": f"Bearer {up.token}"},
        )
        assert created.status_code == 201, created.text
        assert _audit_arrived(up, created.json()["remediationRequestName"]), up.output()
    assert up.exit_code == 0, up.output()
    lines = [line for line in up.output().splitlines() if line.strip()]
    unprefixed = [ln for ln in lines if not ln.startswith(PREFIXES + BANNER)]
    assert unprefixed == [], "\n".join(lines)
    for service in ("datastorage", "gateway"):
        own = [ln for ln in lines if ln.startswith(f"{service:<11} | ")]
        for said_once in ("Started server process", "Shutting down", "Finished server process"):
            count = sum(said_once in ln for ln in own)
            assert count == 1, f"{service}: {said_once!r} {count} times\n" + "\n".join(own)
        assert any("stopped" in ln for ln in own), "\n".join(own)
    # httpx's INFO line per request ("HTTP Request: POST …/audit/events/batch …") is off
    assert not [ln for ln in lines if "HTTP Request:" in ln], "\n".join(lines)
