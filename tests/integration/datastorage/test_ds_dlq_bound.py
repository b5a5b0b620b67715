"""A DataStorage whose PostgreSQL is down queues writes in its dead-letter file up to
`dlq.maxBytes`, then refuses them (503 with Retry-After, naming the setting) without
acknowledging or storing any of them; once the database is back the queue is stored whole
and the refused writes, sent again, are stored too.

Unbounded, an outage under a Gateway's load filled the disk, and the queue, read whole at
start, the pod's memory: it was OOM-killed at every restart."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from e2ecov.recipes import PostgresServer
from tests.integration.datastorage.dstools import ADMIN_TOKEN, datastorage_process
from tests.support.event_bodies import event_body
from tests.support.polling import wait_for

pytestmark = pytest.mark.slow

BATCH = "/api/v1/audit/events/batch"
EVENTS = "/api/v1/audit/events"
MAX_BYTES = 16 * 1024


def stored(client: httpx.Client, correlation_id: str) -> int:
    page = client.get(EVENTS, params={"correlation_id": correlation_id, "limit": 1})
    return int(page.json()["pagination"]["total"]) if page.status_code == 200 else -1


def test_a_full_queue_refuses_with_503_and_loses_nothing(
    tmp_path: Path, private_postgres: PostgresServer
) -> None:
    queue = tmp_path / "dlq.jsonl"
    process = datastorage_process(
        tmp_path / "ds",
        env={
            "SIGNALGATE_STORE__DSN": private_postgres.create_database("audit"),
            "SIGNALGATE_STORE__AUTOMIGRATE": "true",
            "SIGNALGATE_STORE__TIMEOUT": "3s",
            "SIGNALGATE_DLQ__PATH": str(queue),
            "SIGNALGATE_DLQ__MAXBYTES": "16KiB",
            "SIGNALGATE_DLQ__POLLINTERVAL": "200ms",
        },
    ).start(timeout=30)
    accepted = f"rr-{uuid.uuid4().hex[:8]}"  # the batches answered 202
    refused_id = f"rr-{uuid.uuid4().hex[:8]}"  # the batch answered 503
    try:
        with process.client(ADMIN_TOKEN) as client:
            assert client.post(BATCH, json=[event_body(accepted)]).status_code == 201
            private_postgres.stop()
            queued = 0
            for _ in range(100):  # about 500 bytes a line: the bound is met within 40 events
                answer = client.post(BATCH, json=[event_body(accepted) for _ in range(5)])
                if answer.status_code != 202:
                    break
                queued += 5
            else:
                raise AssertionError("the queue took 500 events in 16 KiB")
            assert queued > 0 and queue.stat().st_size <= MAX_BYTES
            refused_batch = [event_body(refused_id) for _ in range(5)]
            refusal = client.post(BATCH, json=refused_batch)
            for refused in (answer, refusal):
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"] == "30"
                problem = refused.json()
                assert problem["type"].endswith("/service-unavailable"), problem
                assert "the audit database is unavailable" in problem["detail"]
                assert "dead-letter queue is full (dlq.maxBytes: 16,384 bytes)" in problem["detail"]
                assert "5 event(s) were not stored nor queued" in problem["detail"]
            # single events fill the rest, then are refused too
            for _ in range(10):
                last = event_body(accepted)
                single = client.post(EVENTS, json=last)
                if single.status_code != 202:
                    break
                queued += 1
            assert single.status_code == 503, single.text
            assert "1 event(s) were not stored nor queued" in single.json()["detail"]
            assert refused_id.encode() not in queue.read_bytes()  # no byte of them written
            assert last["event_id"].encode() not in queue.read_bytes()

            ready = httpx.get(f"{process.ops_url}/readyz", timeout=10)
            assert ready.status_code == 503, ready.text  # no write can land anywhere
            assert ready.json()["checks"]["dead_letter_queue"].startswith("full: ")
            assert "dead-letter queue is full" in ready.text
            metrics = httpx.get(f"{process.ops_url}/metrics", timeout=10).text
            assert 'datastorage_audit_writes_total{outcome="queue_full"} 11.0' in metrics
            assert 'datastorage_audit_writes_total{outcome="lost"}' not in metrics
            assert process.output().count("dead-letter queue full") == 1  # once a period

            private_postgres.start()
            wait_for(lambda: stored(client, accepted) == 1 + queued, 60, "the queue replayed")
            assert stored(client, refused_id) == 0  # nothing refused was stored
            wait_for(lambda: queue.stat().st_size == 0, 10, "the queue emptied")
            # the sender's retry: stored now
            again = client.post(BATCH, json=refused_batch)
            assert again.status_code == 201, again.text
            assert stored(client, refused_id) == 5
            assert client.post(EVENTS, json=last).status_code == 201
            chain = client.get("/api/v1/audit/verify-chain", params={"correlation_id": accepted})
            assert chain.json() == {"correlation_id": accepted, "events": 2 + queued, "valid": True}
        checks = httpx.get(f"{process.ops_url}/readyz", timeout=10).json()["checks"]
        assert checks == {"database": "ok", "dead_letter_queue": "ok"}
    finally:
        process.stop()
