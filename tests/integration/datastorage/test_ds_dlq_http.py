"""Over HTTP, on both queue backends: an event whose parent waits in the dead-letter queue
(accepted with 202 during a database outage) is accepted too, and stored after its parent."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2ecov.recipes import PostgresServer, RedisServer
from tests.integration.datastorage.dstools import ADMIN_TOKEN, datastorage_process
from tests.support.event_bodies import event_body
from tests.support.services import ServiceProcess

pytestmark = pytest.mark.slow

EVENTS = "/api/v1/audit/events"
BATCH = "/api/v1/audit/events/batch"


@pytest.fixture(params=["file", "redis"])
def datastorage(
    request: pytest.FixtureRequest, tmp_path: Path, private_postgres: PostgresServer
) -> Iterator[ServiceProcess]:
    """DataStorage on its own PostgreSQL; its replay worker polls once an hour (after its
    first pass at start), so queued events stay queued until the test drains them."""
    env = {
        "SIGNALGATE_STORE__DSN": private_postgres.create_database("audit"),
        "SIGNALGATE_STORE__AUTOMIGRATE": "true",
        "SIGNALGATE_STORE__TIMEOUT": "3s",
        "SIGNALGATE_DLQ__BACKOFF": "1h,1h",
        "SIGNALGATE_DLQ__POLLINTERVAL": "1h",
    }
    if request.param == "redis":
        env["SIGNALGATE_DLQ__REDISURL"] = request.getfixturevalue("private_redis").url
    process = datastorage_process(tmp_path / "ds", env=env).start()
    try:
        yield process
    finally:
        process.stop()


def wait_for_database(process: ServiceProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = httpx.get(f"{process.ops_url}/readyz", timeout=5.0)
        if ready.json()["checks"]["database"] == "ok":
            return
        time.sleep(0.2)
    raise AssertionError(f"the database was not back after {timeout}s")


def replay_dlq(process: ServiceProcess) -> str:
    """`signalgate-datastorage replay-dlq` with the server's settings: drain the queue now."""
    result = subprocess.run(
        [sys.executable, "-m", "signalgate.datastorage.cli", "replay-dlq"],
        env=process.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_child_of_a_queued_event_is_accepted_and_stored_after_it(
    datastorage: ServiceProcess, private_postgres: PostgresServer
) -> None:
    cid = f"rr-{uuid.uuid4().hex[:8]}"
    parent = event_body(cid)
    child = event_body(cid, parent_event_id=parent["event_id"])
    grandchild = event_body(cid, parent_event_id=child["event_id"])
    with datastorage.client(ADMIN_TOKEN) as client:
        private_postgres.stop()
        assert client.post(EVENTS, json=parent).status_code == 202
    private_postgres.start()
    wait_for_database(datastorage)
    # a new connection: the old one may pass the server's keep-alive while PostgreSQL starts,
    # and a request sent as the server closes it is reset
    with datastorage.client(ADMIN_TOKEN) as client:
        answer = client.post(EVENTS, json=child)
        assert answer.status_code == 202, answer.text  # was 400: the parent is only queued
        assert answer.json()["count"] == 1
        # the database is up: the answer says why the event waits, not that it is down
        assert answer.json()["message"] == (
            "they wait behind their 1 parent(s) in the dead-letter queue; "
            "events are queued and will be stored"
        )
        # a child in another correlation id is refused now, as once its parent is stored
        # (it was queued with 202, then buried at the replay: never stored)
        stray = event_body(f"rr-{uuid.uuid4().hex[:8]}", parent_event_id=parent["event_id"])
        refused = client.post(EVENTS, json=stray)
        assert refused.status_code == 400, refused.text
        assert "another correlation id" in refused.json()["field_errors"]["parent_event_id"]
        answer = client.post(BATCH, json=[grandchild])  # its parent is a queued child
        assert answer.status_code == 202, answer.text

        bogus = event_body(cid, parent_event_id=str(uuid.uuid4()))
        refused = client.post(EVENTS, json=bogus)
        assert refused.status_code == 400
        assert refused.json()["field_errors"] == {"parent_event_id": "does not exist"}
        refused = client.post(
            BATCH, json=[event_body(cid, parent_event_id=child["event_id"]), bogus]
        )
        assert refused.status_code == 400
        assert refused.json()["field_errors"] == {"1.parent_event_id": "does not exist"}

        assert "replayed 3, rescheduled 0, dead 0, still queued 0" in replay_dlq(datastorage)

        stored = client.get(EVENTS, params={"correlation_id": cid}).json()
        assert [e["event_id"] for e in reversed(stored["data"])] == [
            parent["event_id"],
            child["event_id"],
            grandchild["event_id"],
        ]
        chain = client.get("/api/v1/audit/verify-chain", params={"correlation_id": cid}).json()
        assert chain == {"correlation_id": cid, "events": 3, "valid": True}
        assert client.post(EVENTS, json=child).status_code == 201  # a retry: stored, once
        assert client.get(EVENTS, params={"correlation_id": cid}).json()["pagination"]["total"] == 3
    metrics = httpx.get(f"{datastorage.ops_url}/metrics").text
    assert 'datastorage_audit_writes_total{outcome="dead_lettered"} 3.0' in metrics


def test_unknown_parent_while_the_redis_queue_is_down_is_503_not_400(
    tmp_path: Path, private_postgres: PostgresServer, private_redis: RedisServer
) -> None:
    """The parent may be waiting in a queue that cannot be asked: refusing the event for good
    (400) could lose it, so the answer is retry-later, and it says why."""
    env = {
        "SIGNALGATE_STORE__DSN": private_postgres.create_database("audit"),
        "SIGNALGATE_STORE__AUTOMIGRATE": "true",
        "SIGNALGATE_DLQ__REDISURL": private_redis.url,
    }
    process = datastorage_process(tmp_path / "ds", env=env).start()
    try:
        cid = f"rr-{uuid.uuid4().hex[:8]}"
        child = event_body(cid, parent_event_id=str(uuid.uuid4()))
        with process.client(ADMIN_TOKEN) as client:
            assert client.post(EVENTS, json=child).status_code == 400  # queue up: truly missing
            private_redis.stop()
            answer = client.post(EVENTS, json=child)
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"]
            assert "dead-letter queue" in answer.json()["detail"]
    finally:
        process.stop()


def test_an_outage_logs_its_queued_batches_once_in_a_while_not_each(
    datastorage: ServiceProcess, private_postgres: PostgresServer
) -> None:
    """One warning per queued batch was megabytes of log an hour during an outage (an
    outside soak check): one line per interval, the next saying how many were held back."""
    with datastorage.client(ADMIN_TOKEN) as client:
        private_postgres.stop()
        for _ in range(6):
            event = event_body(f"rr-{uuid.uuid4().hex[:8]}")
            assert client.post(EVENTS, json=event).status_code == 202
    lines = [
        line for line in datastorage.output().splitlines() if "events queued for replay" in line
    ]
    assert len(lines) == 1, lines
