"""`server.workers: 2`: two Gateway processes on one API listener (common/workers.py).

Both processes serve signals (each worker's own series on the supervisor's `/metrics`), one
store counts every signal exactly once across them, readiness covers every worker, and
SIGTERM drains and stops them all.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from pathlib import Path

import httpx
import pytest

from e2ecov.recipes import PostgresServer
from tests.support.services import ADMIN_TOKEN, ServiceProcess, alert, gateway_process, webhook

PROM = "/api/v1/signals/prometheus"
pytestmark = pytest.mark.slow
RECEIVED = re.compile(
    r'^gateway_signals_received_total\{[^}]*worker="(\d+)"[^}]*\} ([\d.]+)$', re.MULTILINE
)


def received_by_worker(service: ServiceProcess) -> dict[str, float]:
    text = httpx.get(f"{service.ops_url}/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for worker, value in RECEIVED.findall(text):
        totals[worker] = totals.get(worker, 0.0) + float(value)
    return totals


async def send_identical(service: ServiceProcess, count: int, pod: str) -> list[int]:
    """`count` identical signals at once, each on its own connection (so the kernel hands
    them to either worker)."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Connection": "close"}
    body = webhook(alert(pod=pod))
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        answers = await asyncio.gather(
            *(client.post(service.api_url + PROM, json=body) for _ in range(count))
        )
    return [a.status_code for a in answers]


def worker_pids(service: ServiceProcess) -> list[int]:
    assert service.proc is not None
    children = Path(f"/proc/{service.proc.pid}/task/{service.proc.pid}/children")
    return [int(pid) for pid in children.read_text().split()]


@pytest.fixture(params=["sqlite", "postgres"])
def store_env(request: pytest.FixtureRequest, postgres_server: PostgresServer) -> dict[str, str]:
    if request.param == "sqlite":
        return {}
    dsn = postgres_server.create_database(f"workers_{uuid.uuid4().hex[:10]}")
    return {"SIGNALGATE_STORE__DSN": dsn}


def test_two_workers_share_the_listener_and_count_every_signal_once(
    tmp_path: Path, store_env: dict[str, str]
) -> None:
    env = {**store_env, "SIGNALGATE_SERVER__WORKERS": "2"}
    service = gateway_process(tmp_path, env=env).start()
    try:
        pids = worker_pids(service)
        assert len(pids) == 2

        ready = httpx.get(f"{service.ops_url}/readyz", timeout=10)
        assert ready.status_code == 200
        assert set(ready.json()["checks"]) == {"worker-0", "worker-1"}

        # 200 identical signals; more rounds of 200 only if one worker took every connection
        sent: list[int] = []
        for _ in range(5):
            sent += asyncio.run(send_identical(service, 200, "hot-pod"))
            if len(received_by_worker(service)) == 2:
                break
        assert set(sent) <= {201, 202}, sorted(set(sent))
        assert sent.count(201) == 1

        by_worker = received_by_worker(service)
        assert set(by_worker) == {"0", "1"}, by_worker
        assert all(value > 0 for value in by_worker.values())
        assert sum(by_worker.values()) == len(sent)

        with service.client() as client:
            items = client.get("/api/v1/remediation-requests").json()["items"]
        assert len(items) == 1
        assert items[0]["status"]["deduplication"]["occurrenceCount"] == len(sent)
    finally:
        code = service.stop()
    assert code == 0
    # the supervisor waited for (and reaped) both before it exited
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def test_a_worker_that_dies_stops_the_service_with_an_error(tmp_path: Path) -> None:
    service = gateway_process(tmp_path, env={"SIGNALGATE_SERVER__WORKERS": "2"}).start()
    try:
        first, _ = worker_pids(service)
        os.kill(first, 9)
        assert service.proc is not None
        assert service.proc.wait(60) != 0
    finally:
        service.stop()
    assert "a worker exited on its own" in service.output()


def test_readiness_is_every_workers_and_names_the_one_not_ready(
    tmp_path: Path, private_postgres: PostgresServer
) -> None:
    env = {"SIGNALGATE_STORE__DSN": private_postgres.url, "SIGNALGATE_SERVER__WORKERS": "2"}
    service = gateway_process(tmp_path, env=env).start()
    readyz = f"{service.ops_url}/readyz"
    try:
        assert httpx.get(readyz, timeout=10).status_code == 200
        private_postgres.stop()
        deadline = time.monotonic() + 30
        while (answer := httpx.get(readyz, timeout=10)).status_code == 200:
            assert time.monotonic() < deadline, "still ready with the store down"
            time.sleep(0.2)
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "5"
        problem = answer.json()
        assert problem["type"] == "https://kubernaut.ai/problems/service-unavailable"
        assert problem["detail"].startswith("worker-0: ")
        assert set(problem["checks"]) == {"worker-0", "worker-1"}
        assert problem["checks"]["worker-0"]["store"] == "unavailable"
        # alive, only not ready: both workers still run
        assert httpx.get(f"{service.ops_url}/healthz", timeout=10).status_code == 200

        private_postgres.start()
        deadline = time.monotonic() + 30
        while httpx.get(readyz, timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "not ready again after the store came back"
            time.sleep(0.2)
    finally:
        service.stop()
