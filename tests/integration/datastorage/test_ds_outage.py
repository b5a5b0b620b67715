"""DataStorage keeps every event through a PostgreSQL outage: Redis takes them, replay
stores them once, and every chain still verifies."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis

from e2ecov.recipes import PostgresServer, RedisServer
from tests.integration.datastorage.dstools import ADMIN_TOKEN, datastorage_process
from tests.support.event_bodies import event_body
from tests.support.polling import wait_for
from tests.support.services import ServiceProcess

pytestmark = pytest.mark.slow

BATCH = "/api/v1/audit/events/batch"


def started_on(
    tmp_path: Path, postgres: PostgresServer, redis_server: RedisServer, **env: str
) -> ServiceProcess:
    """DataStorage on a new database of `postgres`, queueing in `redis_server`."""
    return datastorage_process(
        tmp_path / "ds",
        env={
            "SIGNALGATE_STORE__DSN": postgres.create_database(f"a{uuid.uuid4().hex[:8]}"),
            "SIGNALGATE_STORE__AUTOMIGRATE": "true",
            "SIGNALGATE_STORE__TIMEOUT": "3s",
            "SIGNALGATE_DLQ__REDISURL": redis_server.url,
            "SIGNALGATE_DLQ__POLLINTERVAL": "200ms",
            **env,
        },
    ).start()


@pytest.fixture
def pg_datastorage(
    tmp_path: Path, private_postgres: PostgresServer, private_redis: RedisServer
) -> Iterator[ServiceProcess]:
    process = started_on(
        tmp_path,
        private_postgres,
        private_redis,
        SIGNALGATE_DLQ__BACKOFF="0.5s,1s,1s,2s,2s,4s,8s,15s",
    )
    try:
        yield process
    finally:
        process.stop()


def chain_report(client: httpx.Client, correlation_id: str) -> dict[str, object]:
    answer = client.get("/api/v1/audit/verify-chain", params={"correlation_id": correlation_id})
    answer.raise_for_status()
    report: dict[str, object] = answer.json()
    return report


def all_events(client: httpx.Client) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    offset = 0
    while True:
        page = client.get("/api/v1/audit/events", params={"limit": 1000, "offset": offset})
        page.raise_for_status()
        found.extend(page.json()["data"])
        if not page.json()["pagination"]["has_more"]:
            return found
        offset += 1000


def test_postgres_outage_loses_nothing_and_stores_nothing_twice(
    pg_datastorage: ServiceProcess,
    private_postgres: PostgresServer,
    private_redis: RedisServer,
) -> None:
    correlation_ids = [f"rr-{uuid.uuid4().hex[:8]}" for _ in range(10)]
    batches = [
        [event_body(correlation_ids[(b * 50 + i) % 10]) for i in range(50)] for b in range(20)
    ]
    statuses: list[int] = []
    queue = redis.Redis.from_url(private_redis.url)
    with pg_datastorage.client(ADMIN_TOKEN) as client:
        for number, batch in enumerate(batches):
            if number == 6:
                private_postgres.stop()
            if number == 10:
                ready = httpx.get(f"{pg_datastorage.ops_url}/readyz")
                assert ready.status_code == 200  # writes still land in the queue
                assert ready.json()["checks"]["database"].startswith("unavailable")
            if number == 14:
                private_postgres.start()
            answer = client.post(BATCH, json=batch)
            assert answer.status_code in (201, 202), answer.text
            if answer.status_code == 202:
                assert answer.json() == {
                    "status": "accepted",
                    "message": answer.json()["message"],
                    "count": 50,
                }
            statuses.append(answer.status_code)
        assert statuses[:6] == [201] * 6
        assert statuses[6:14] == [202] * 8, statuses

        wait_for(lambda: queue.xlen("audit:dlq") == 0, 60, "the dead-letter queue to drain")
        assert queue.xlen("audit:dlq:dead") == 0
        stored = all_events(client)
        sent = {event["event_id"] for batch in batches for event in batch}
        stored_ids = [event["event_id"] for event in stored]
        assert len(stored_ids) == 1000
        assert set(stored_ids) == sent
        for correlation_id in correlation_ids:
            report = chain_report(client, correlation_id)
            assert report == {"correlation_id": correlation_id, "events": 100, "valid": True}
        metrics = httpx.get(f"{pg_datastorage.ops_url}/metrics").text
        assert 'datastorage_audit_writes_total{outcome="dead_lettered"} 400.0' in metrics
        assert "audit_dlq_replayed_total 400.0" in metrics
    queue.close()


def test_database_and_queue_both_down_is_500_naming_the_loss(
    pg_datastorage: ServiceProcess,
    private_postgres: PostgresServer,
    private_redis: RedisServer,
) -> None:
    private_postgres.stop()
    private_redis.stop()
    with pg_datastorage.client(ADMIN_TOKEN) as client:
        answer = client.post(BATCH, json=[event_body("rr-lost") for _ in range(7)])
    assert answer.status_code == 500
    assert answer.json()["type"] == "https://kubernaut.ai/problems/internal-error"
    assert "7 event(s) were not stored" in answer.json()["detail"]
    ready = httpx.get(f"{pg_datastorage.ops_url}/readyz")
    assert ready.status_code == 503


def test_a_database_that_refuses_the_write_for_lack_of_privilege_queues_it(
    tmp_path: Path, private_postgres: PostgresServer, private_redis: RedisServer
) -> None:
    """The database answers, but its role lost INSERT (an operator's grant gone wrong): the
    batch was a 500 with a traceback per request, and a writer that gives up on a 500 lost
    it (an outside check). It is an outage like a read-only standby: queued (202), stored
    once the grant is back, with no restart."""
    private_postgres.execute("CREATE ROLE ds_owner LOGIN")
    private_postgres.execute('CREATE DATABASE "audit_priv" OWNER ds_owner')
    dsn = private_postgres.dsn("audit_priv").replace(f"{private_postgres.user}@", "ds_owner@")
    process = datastorage_process(
        tmp_path / "ds",
        env={
            "SIGNALGATE_STORE__DSN": dsn,
            "SIGNALGATE_STORE__AUTOMIGRATE": "true",
            "SIGNALGATE_DLQ__REDISURL": private_redis.url,
            "SIGNALGATE_DLQ__BACKOFF": "0.5s",
            "SIGNALGATE_DLQ__POLLINTERVAL": "200ms",
        },
    ).start()

    def as_owner(sql: str) -> None:
        async def run() -> None:
            connection = await asyncpg.connect(dsn)
            try:
                await connection.execute(sql)
            finally:
                await connection.close()

        asyncio.run(run())

    correlation_id = f"rr-{uuid.uuid4().hex[:8]}"
    try:
        with process.client(ADMIN_TOKEN) as client:
            assert client.post(BATCH, json=[event_body(correlation_id)]).status_code == 201
            as_owner("REVOKE INSERT ON ALL TABLES IN SCHEMA public FROM ds_owner")
            refused = client.post(BATCH, json=[event_body(correlation_id) for _ in range(5)])
            assert refused.status_code == 202, refused.text

            def replay() -> str:
                ready = httpx.get(f"{process.ops_url}/readyz", timeout=10)
                assert ready.status_code == 200  # the queue takes the writes meanwhile
                return str(ready.json()["checks"].get("replay", ""))

            # a queue that stopped draining is named (the depth alone told)
            wait_for(lambda: replay().startswith("refused:"), 30, "named refusals")
            as_owner("GRANT INSERT ON ALL TABLES IN SCHEMA public TO ds_owner")
            wait_for(lambda: len(all_events(client)) == 6, 30, "the queued events to be replayed")
            assert replay() == ""
            # the API's /readyz is the database's alone: ready (the refusal kept it 503)
            wait_for(lambda: client.get("/readyz").status_code == 200, 10, "the API ready")
            report = chain_report(client, correlation_id)
            assert report == {"correlation_id": correlation_id, "events": 6, "valid": True}
    finally:
        process.stop()


def test_readiness_reports_writes_failing_where_pings_still_answer(tmp_path: Path) -> None:
    """A ping can answer while every write fails (a full disk; here the database locked by
    another process and the dead-letter file's path a directory): /readyz said ready while
    each batch was answered 500. The last write decides, for a while after it."""
    data_dir = tmp_path / "ds"
    blocked_queue = tmp_path / "dlq-is-a-directory"
    blocked_queue.mkdir()
    process = datastorage_process(
        data_dir,
        env={"SIGNALGATE_STORE__TIMEOUT": "0.5s", "SIGNALGATE_DLQ__PATH": str(blocked_queue)},
    ).start()
    locker = sqlite3.connect(data_dir / "audit.db", isolation_level=None)
    try:
        assert httpx.get(f"{process.ops_url}/readyz", timeout=10).status_code == 200
        locker.execute("BEGIN IMMEDIATE")  # writers wait, readers (the ping) do not
        with process.client(ADMIN_TOKEN) as client:
            refused = client.post(BATCH, json=[event_body(f"rr-{uuid.uuid4().hex[:6]}")])
        assert refused.status_code >= 500, refused.text
        ready = httpx.get(f"{process.ops_url}/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        checks = ready.json()["checks"]
        assert checks["database"].startswith("writes failing: "), checks
        assert checks["dead_letter_queue"].startswith("writes failing: "), checks
        api_ready = httpx.get(f"{process.api_url}/readyz", timeout=10)
        assert api_ready.status_code == 503  # where Kubernaut's services probe
        locker.execute("ROLLBACK")
        with process.client(ADMIN_TOKEN) as client:
            stored = client.post(BATCH, json=[event_body(f"rr-{uuid.uuid4().hex[:6]}")])
        assert stored.status_code == 201, stored.text
        assert (
            httpx.get(f"{process.ops_url}/readyz", timeout=10).json()["checks"]["database"] == "ok"
        )
    finally:
        locker.close()
        process.stop()


def test_write_bodies_being_decided_are_bounded_together(tmp_path: Path) -> None:
    """At most `BODIES_AT_ONCE` full bodies are decided at once; the next is a 503 with
    Retry-After before any parsing, and the others are stored. Unbounded, sixteen 5 MiB
    batches at once held the event loop for seconds: other writers got 408 for bodies they
    had sent in time (an outside check). The writes are held in flight here by a lock on the
    SQLite database, released once the refusal came."""
    from signalgate.datastorage.app import BODIES_AT_ONCE

    data_dir = tmp_path / "ds"
    limit = 64 * 1024
    process = datastorage_process(
        data_dir,
        env={"SIGNALGATE_SERVER__MAXBODYSIZE": str(limit), "SIGNALGATE_STORE__TIMEOUT": "20s"},
    ).start()
    locker = sqlite3.connect(data_dir / "audit.db", isolation_level=None)

    def full_batch() -> list[dict[str, object]]:
        body = event_body(f"rr-{uuid.uuid4().hex[:6]}")
        body["event_data"] = {"blob": "x" * (limit - 2048)}
        return [body]

    async def send_all() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(base_url=process.api_url, headers=headers, timeout=30) as c:
            held = [asyncio.create_task(c.post(BATCH, json=full_batch())) for _ in range(4)]
            await asyncio.sleep(1.0)  # the four are read and wait for the database
            refused = await c.post(BATCH, json=full_batch())
            locker.execute("ROLLBACK")
            return [refused, *await asyncio.gather(*held)]

    try:
        assert BODIES_AT_ONCE == 4
        locker.execute("BEGIN IMMEDIATE")
        refused, *stored = asyncio.run(send_all())
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert "bytes of audit events being written" in refused.json()["detail"]
        assert [answer.status_code for answer in stored] == [201] * 4
    finally:
        locker.close()
        process.stop()


def test_a_stopped_sqlite_process_queues_writes_instead_of_holding_them(tmp_path: Path) -> None:
    """The SQLite store's process stops answering (SIGSTOP, as on a hung disk): a write is
    queued (202) once the store's call deadline passes, instead of waiting for ever, and
    `/readyz` answers; once the process runs again, the queued batch is stored once."""
    import os
    import signal

    service = datastorage_process(
        tmp_path / "ds",
        env={"SIGNALGATE_STORE__TIMEOUT": "0.5s", "SIGNALGATE_DLQ__POLLINTERVAL": "200ms"},
    ).start()
    assert service.proc is not None
    children = Path(f"/proc/{service.proc.pid}/task/{service.proc.pid}/children")
    (child,) = [int(pid) for pid in children.read_text().split()]
    assert "audit-sqlite" in Path(f"/proc/{child}/cmdline").read_text()
    rr = f"rr-{uuid.uuid4().hex[:8]}"
    try:
        with service.client(ADMIN_TOKEN) as client:
            assert client.post(BATCH, json=[event_body(rr)]).status_code == 201
            os.kill(child, signal.SIGSTOP)
            try:
                started = time.monotonic()
                queued = client.post(BATCH, json=[event_body(rr), event_body(rr)])
                assert queued.status_code == 202, queued.text
                assert time.monotonic() - started < 10
                ready = httpx.get(f"{service.ops_url}/readyz", timeout=10)
                assert "no answer in 2s" in ready.json()["checks"]["database"], ready.text
            finally:
                os.kill(child, signal.SIGCONT)
            wait_for(lambda: len(all_events(client)) == 3, 30, "the queued batch stored")
            report = client.get("/api/v1/audit/verify-chain", params={"correlation_id": rr})
            assert report.json() == {"correlation_id": rr, "events": 3, "valid": True}
    finally:
        service.stop()


def test_events_queued_during_a_blip_are_stored_as_soon_as_the_database_answers(
    tmp_path: Path, private_postgres: PostgresServer, private_redis: RedisServer
) -> None:
    """With the default schedule (its first step a minute): events answered 202 while the
    database was down were queued due after that first step, so after a blip of seconds
    they stayed out of queries and chains for a minute (an outside check). They are due at
    once now, and stored as soon as the database answers again."""
    process = started_on(tmp_path, private_postgres, private_redis)  # the default schedule
    queue = redis.Redis.from_url(private_redis.url)
    correlation_id = f"rr-{uuid.uuid4().hex[:8]}"
    try:
        with process.client(ADMIN_TOKEN) as client:
            private_postgres.stop()
            answer = client.post(BATCH, json=[event_body(correlation_id) for _ in range(20)])
            assert answer.status_code == 202, answer.text
            private_postgres.start()
            back = time.monotonic()
            wait_for(lambda: queue.xlen("audit:dlq") == 0, 45, "the queue to drain")
            assert time.monotonic() - back < 45  # the schedule's first step is 60 s
            report = chain_report(client, correlation_id)
            assert report == {"correlation_id": correlation_id, "events": 20, "valid": True}
    finally:
        queue.close()
        process.stop()
