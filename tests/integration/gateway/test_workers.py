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

from e2ecov.recipes import PostgresServer, free_port
from tests.integration.datastorage.dstools import (
    WRITER_TOKEN,
    datastorage_process,
    gateway_events_stored,
)
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
    metrics_url = f"http://127.0.0.1:{free_port()}"
    env = {
        **store_env,
        "SIGNALGATE_SERVER__WORKERS": "2",
        # the supervisor answers the ops routes on this second address too
        "SIGNALGATE_SERVER__METRICSLISTEN": metrics_url.removeprefix("http://"),
    }
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
        scraped = httpx.get(f"{metrics_url}/metrics", timeout=10).text
        assert sorted(RECEIVED.findall(scraped)) == sorted(
            RECEIVED.findall(httpx.get(f"{service.ops_url}/metrics", timeout=10).text)
        )
        assert httpx.get(f"{metrics_url}/readyz", timeout=10).status_code == 200
        # the supervisor's ops routes are a worker's: Kubernaut's probe paths, and 404/405
        # as problem documents (they were Starlette's plain text)
        assert httpx.get(f"{service.ops_url}/health/ready", timeout=10).status_code == 200
        for base in (service.ops_url, metrics_url):
            missing = httpx.get(f"{base}/nope", timeout=10)
            assert missing.status_code == 404
            assert missing.headers["content-type"].startswith("application/problem+json")
            assert httpx.post(f"{base}/healthz", timeout=10).json()["status"] == 405

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


def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL to the supervisor: its workers get SIGTERM from the kernel, drain and stop, so
    the port is free for the next start (found from outside: they kept serving as orphans,
    with no ops listener, and a restart failed on the port)."""
    service = gateway_process(tmp_path / "gw", env={"SIGNALGATE_SERVER__WORKERS": "2"}).start()
    assert service.proc is not None
    with httpx.Client(
        base_url=service.api_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as c:
        assert c.post(PROM, json=webhook(alert(pod="orphan-1"))).status_code == 201
    pids = worker_pids(service)
    os.kill(service.proc.pid, 9)
    service.proc.wait(10)
    deadline = time.monotonic() + 30
    while [pid for pid in pids if Path(f"/proc/{pid}").exists()] and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    for pid in left:  # not to leave them to the next test
        os.kill(pid, 9)
    assert left == [], "workers outlived their supervisor"
    service.start()  # the same ports and data directory: the port is free again
    try:
        with httpx.Client(
            base_url=service.api_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as c:
            answer = c.post(PROM, json=webhook(alert(pod="orphan-1")))
            assert answer.status_code == 202, answer.text  # the same RR, counted twice
    finally:
        service.stop()


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


def journaled_events(directory: Path) -> int:
    """Lines in a journal's segments (all undelivered: DataStorage never answered)."""
    return sum(path.read_bytes().count(b"\n") for path in directory.glob("segment-*.jsonl"))


def stranded_shown(service: ServiceProcess) -> object:
    """What the Gateway's /readyz says of stranded journals (None: nothing)."""
    return (
        httpx.get(f"{service.ops_url}/readyz", timeout=10).json()["checks"]["audit"].get("stranded")
    )


def spooled_metric(service: ServiceProcess) -> float:
    metrics = httpx.get(f"{service.ops_url}/metrics", timeout=10).text
    [value] = [
        line.split()[-1]
        for line in metrics.splitlines()
        if line.startswith("audit_events_spooled ")
    ]
    return float(value)


def test_a_journal_left_by_a_worker_is_delivered_when_fewer_workers_run(tmp_path: Path) -> None:
    """Two workers journal signals while DataStorage is away; the Gateway comes back as one
    process: the second worker's journal is delivered too, every event once, then removed;
    until then /readyz shows its backlog."""
    data_dir = tmp_path / "gw"
    token_file = tmp_path / "ds.token"
    token_file.write_text(WRITER_TOKEN)
    delivery = {
        "SIGNALGATE_DATASTORAGE__TOKENFILE": str(token_file),
        "SIGNALGATE_DATASTORAGE__FLUSHINTERVAL": "200ms",
    }
    away = f"http://127.0.0.1:{free_port()}"
    env = {**delivery, "SIGNALGATE_DATASTORAGE__URL": away, "SIGNALGATE_SERVER__WORKERS": "2"}
    service = gateway_process(data_dir, env=env).start()
    try:
        for round_ in range(5):  # until both workers have taken signals
            asyncio.run(send_identical(service, 100, f"stranded-{round_}"))
            if len(received_by_worker(service)) == 2:
                break
    finally:
        assert service.stop() == 0
    second = data_dir / "audit-journal-worker-1"
    expected = journaled_events(data_dir / "audit-journal") + journaled_events(second)
    assert journaled_events(second) > 0

    datastorage = datastorage_process(tmp_path / "ds")  # its ports are taken; not started
    one = gateway_process(
        data_dir, env={**delivery, "SIGNALGATE_DATASTORAGE__URL": datastorage.api_url}
    )
    one.start()
    try:
        # while DataStorage is away, /readyz shows the stranded journal and (once it is
        # opened, in the background) its backlog
        backlog = {
            "journals": 1,
            "spooled": journaled_events(second),
            "journalBytes": sum(p.stat().st_size for p in second.glob("segment-*.jsonl")),
        }
        deadline = time.monotonic() + 10
        while (shown := stranded_shown(one)) != backlog:
            assert time.monotonic() < deadline, shown
            time.sleep(0.1)
        # the spooled gauge counts them too (an alert on DataStorage falling behind)
        own = journaled_events(data_dir / "audit-journal")
        assert spooled_metric(one) == own + journaled_events(second)
        datastorage.start()
        deadline = time.monotonic() + 60
        while gateway_events_stored(datastorage) < expected or second.exists():
            assert time.monotonic() < deadline, (gateway_events_stored(datastorage), expected)
            time.sleep(0.3)
        time.sleep(1)  # a second delivery of anything would show as a higher total
        assert gateway_events_stored(datastorage) == expected
        assert stranded_shown(one) is None
    finally:
        one.stop()
        datastorage.stop()
