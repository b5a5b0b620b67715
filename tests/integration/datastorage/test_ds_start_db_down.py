"""DataStorage started while its PostgreSQL is down: it serves (writes queued with 202, queries
503), connects once the database is back, and the replay stores every event, with no restart.
A configuration that can never work still stops start-up at once, or, found only once the
database answers, stops the service as it would have at start."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from e2ecov.recipes import PostgresServer, RedisServer
from signalgate.datastorage.errors import StoreOutage, StoreUnavailable
from signalgate.datastorage.postgres import _MIGRATION_LOCK, PostgresAuditStore
from tests.integration.datastorage.dstools import ADMIN_TOKEN, datastorage_process
from tests.support.event_bodies import event_body
from tests.support.polling import wait_for
from tests.support.services import ServiceProcess

pytestmark = pytest.mark.slow

BATCH = "/api/v1/audit/events/batch"
EVENTS = "/api/v1/audit/events"


def exit_code(process: ServiceProcess, timeout: float = 30.0) -> int:
    assert process.proc is not None
    try:
        return process.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        process.stop()
        raise AssertionError(
            f"still running after {timeout}s:\n{process.output()[-3000:]}"
        ) from None


def stored_total(client: httpx.Client, correlation_id: str) -> int:
    page = client.get(EVENTS, params={"correlation_id": correlation_id, "limit": 1})
    return int(page.json()["pagination"]["total"]) if page.status_code == 200 else -1


@pytest.mark.parametrize("auto_migrate", [True, False], ids=["autoMigrate", "migrated-first"])
def test_starts_with_its_database_down_and_stores_the_queue_once_it_is_back(
    tmp_path: Path,
    private_postgres: PostgresServer,
    private_redis: RedisServer,
    auto_migrate: bool,
) -> None:
    dsn = private_postgres.create_database("audit")
    env = {
        "SIGNALGATE_STORE__DSN": dsn,
        "SIGNALGATE_STORE__AUTOMIGRATE": str(auto_migrate).lower(),
        "SIGNALGATE_STORE__TIMEOUT": "3s",
        "SIGNALGATE_DLQ__BACKOFF": "0.5s,1s,2s",
        "SIGNALGATE_DLQ__POLLINTERVAL": "200ms",
    }
    if auto_migrate:  # the file queue, and the schema made once the database is back
        env["SIGNALGATE_DLQ__PATH"] = str(tmp_path / "dlq.jsonl")
    else:  # Redis, and a schema migrated ahead (the manifests' init container)
        env["SIGNALGATE_DLQ__REDISURL"] = private_redis.url
        asyncio.run(PostgresAuditStore(dsn).migrate())
    private_postgres.stop()

    process = datastorage_process(tmp_path / "ds", env=env).start(timeout=30)
    try:
        pid = process.proc.pid if process.proc else None
        correlation_id = f"rr-{uuid.uuid4().hex[:8]}"
        first = event_body(correlation_id)
        batch = [event_body(correlation_id) for _ in range(30)]
        with process.client(ADMIN_TOKEN) as client:
            single = client.post(EVENTS, json=first)
            assert single.status_code == 202, single.text
            queued = client.post(BATCH, json=batch)
            assert queued.status_code == 202, queued.text
            assert queued.json()["count"] == 30
            child = client.post(  # its parent waits in the queue: the child waits behind it
                EVENTS, json=event_body(correlation_id, parent_event_id=first["event_id"])
            )
            assert child.status_code == 202, child.text

            query = client.get(EVENTS, params={"correlation_id": correlation_id})
            assert query.status_code == 503, query.text
            assert query.headers["retry-after"]
            ops_ready = httpx.get(f"{process.ops_url}/readyz", timeout=10)
            assert ops_ready.status_code == 200, ops_ready.text  # the queue absorbs it
            assert ops_ready.json()["checks"]["database"].startswith("unavailable")
            assert ops_ready.json()["checks"]["dead_letter_queue"] == "ok"
            api_ready = httpx.get(f"{process.api_url}/readyz", timeout=10)
            assert api_ready.status_code == 503  # where Kubernaut's services probe the database

            time.sleep(2)  # several connection attempts while the database stays down
            private_postgres.start()
            wait_for(lambda: stored_total(client, correlation_id) == 32, 30, "the replay")
            report = client.get(
                "/api/v1/audit/verify-chain", params={"correlation_id": correlation_id}
            ).json()
            assert report == {"correlation_id": correlation_id, "events": 32, "valid": True}
            stored = client.post(BATCH, json=[event_body(correlation_id)])
            assert stored.status_code == 201, stored.text
        assert httpx.get(f"{process.ops_url}/readyz", timeout=10).json()["checks"] == {
            "database": "ok",
            "dead_letter_queue": "ok",
        }
        assert process.proc is not None and process.proc.poll() is None
        assert process.proc.pid == pid  # the same process: no restart
        log = process.output()
        assert log.count("the audit database is unreachable") == 1, log[-3000:]
        assert log.count("connected to the audit database") == 1, log[-3000:]
    finally:
        process.stop()


def test_a_database_that_does_not_exist_or_refuses_the_role_stops_start_up(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """No outage to wait out: the server answers and refuses. Exit 1 at once, one line."""
    for name, dsn in (
        ("no-database", postgres_server.dsn(f"missing_{uuid.uuid4().hex[:8]}")),
        ("no-role", postgres_server.url.replace("postgresql://postgres@", "postgresql://nobody@")),
    ):
        process = datastorage_process(
            tmp_path / name, env={"SIGNALGATE_STORE__DSN": dsn, "SIGNALGATE_STORE__TIMEOUT": "3s"}
        ).start(wait=False)
        assert exit_code(process, 20) == 1, process.output()[-3000:]
        errors = [line for line in process.output().splitlines() if line.startswith("error:")]
        assert len(errors) == 1, process.output()[-3000:]
        assert "does not exist" in errors[0]


def test_a_role_without_privileges_on_the_schema_stops_start_up(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """The server answers and refuses the role its tables (no grants): waited out as an
    outage, the service answered 202 and reported ready for good while nothing could ever be
    stored (an outside check). Exit 1 at once, one line naming the privilege."""
    _, _, dsn = _migrated_and_a_second_role(tmp_path, postgres_server)
    process = datastorage_process(
        tmp_path / "unprivileged",
        env={"SIGNALGATE_STORE__DSN": dsn, "SIGNALGATE_STORE__TIMEOUT": "3s"},
    ).start(wait=False)
    assert exit_code(process, 20) == 1, process.output()[-3000:]
    errors = [line for line in process.output().splitlines() if line.startswith("error:")]
    assert len(errors) == 1, process.output()[-3000:]
    assert "InsufficientPrivilegeError" in errors[0], errors[0]


def test_a_role_that_cannot_create_a_missing_month_starts_and_keeps_writing(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """A least-privilege role (reads and writes the tables, owns none) whose coming month's
    partition is missing — the owner's `maintain` CronJob lapsed — was refused at start, a
    DataStorage outage for want of a table nothing needed yet. It now starts, says which
    command to run as the owner, and stores events (a month not made yet lands in the
    default partition, which the owner's `maintain` moves into the month's own)."""
    owner_dsn, role, dsn = _migrated_and_a_second_role(tmp_path, postgres_server)
    last = asyncio.run(_grant_and_drop_the_last_month(owner_dsn, role))
    process = datastorage_process(
        tmp_path / "app",
        env={"SIGNALGATE_STORE__DSN": dsn, "SIGNALGATE_STORE__TIMEOUT": "3s"},
    ).start(timeout=30)
    try:
        with process.client(ADMIN_TOKEN) as client:
            assert client.post(BATCH, json=[event_body("rr-lapsed")]).status_code == 201
            stored = client.get("/api/v1/audit/events", params={"correlation_id": "rr-lapsed"})
            assert stored.json()["pagination"]["total"] == 1
        warned = [line for line in process.output().splitlines() if "maintain" in line]
        assert any(last.removeprefix("audit_events_") in line for line in warned), warned
    finally:
        process.stop()


def _migrated_and_a_second_role(
    tmp_path: Path, postgres_server: PostgresServer
) -> tuple[str, str, str]:
    """A database migrated by its owner, and a login role with no grants on it: the owner's
    DSN, the role, and the role's DSN."""
    owner_dsn = postgres_server.create_database(f"owned_{uuid.uuid4().hex[:8]}")
    migrated = datastorage_process(
        tmp_path / "owner",
        env={"SIGNALGATE_STORE__DSN": owner_dsn, "SIGNALGATE_STORE__AUTOMIGRATE": "true"},
    ).start()
    migrated.stop()
    role = f"ds_{uuid.uuid4().hex[:8]}"
    postgres_server.execute(f"CREATE ROLE {role} LOGIN")
    return owner_dsn, role, owner_dsn.replace(f"{postgres_server.user}@", f"{role}@")


async def _grant_and_drop_the_last_month(owner_dsn: str, role: str) -> str:
    """As the owner: `role` may read and write every table; the furthest month ahead is
    dropped, as if `maintain` had not run. Its table name."""
    import asyncpg

    conn = await asyncpg.connect(owner_dsn)
    try:
        names = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'audit_events'::regclass AND c.relname ~ '_[0-9]{4}_[0-9]{2}$'"
        )
        last = str(max(row["relname"] for row in names))
        await conn.execute(f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {role}")
        await conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
        await conn.execute(f"DROP TABLE {last}")
    finally:
        await conn.close()
    return last


def test_a_schema_behind_found_once_the_database_is_back_stops_the_service(
    tmp_path: Path, private_postgres: PostgresServer
) -> None:
    """Without `store.autoMigrate` a database that comes back unmigrated is refused as it is
    at start (exit 1 naming `migrate`); the events it had queued stay in the queue."""
    dsn = private_postgres.create_database("audit")
    private_postgres.stop()
    queue = tmp_path / "dlq.jsonl"
    process = datastorage_process(
        tmp_path / "ds",
        env={
            "SIGNALGATE_STORE__DSN": dsn,
            "SIGNALGATE_STORE__TIMEOUT": "3s",
            "SIGNALGATE_DLQ__PATH": str(queue),
        },
    ).start(timeout=30)
    try:
        with process.client(ADMIN_TOKEN) as client:
            assert client.post(BATCH, json=[event_body("rr-behind")]).status_code == 202
        private_postgres.start()
        assert exit_code(process) == 1, process.output()[-3000:]
        errors = [line for line in process.output().splitlines() if line.startswith("error:")]
        assert len(errors) == 1, process.output()[-3000:]
        assert "signalgate-datastorage migrate" in errors[0]
        assert "rr-behind" in queue.read_text()
    finally:
        process.stop()


def test_database_and_queue_both_down_at_start_stops_start_up(
    tmp_path: Path, private_postgres: PostgresServer, private_redis: RedisServer
) -> None:
    """With the database down only the queue could take a write: unusable too, nothing
    could, and start-up stops naming both."""
    dsn = private_postgres.create_database("audit")
    private_postgres.stop()
    private_redis.stop()
    process = datastorage_process(
        tmp_path / "ds",
        env={
            "SIGNALGATE_STORE__DSN": dsn,
            "SIGNALGATE_STORE__TIMEOUT": "2s",
            "SIGNALGATE_DLQ__REDISURL": private_redis.url,
        },
    ).start(wait=False)
    assert exit_code(process) == 1, process.output()[-3000:]
    errors = [line for line in process.output().splitlines() if line.startswith("error:")]
    assert len(errors) == 1, process.output()[-3000:]
    assert "dead-letter queue" in errors[0]


async def test_a_store_waiting_for_the_migration_lock_says_so_not_an_earlier_error(
    private_postgres: PostgresServer,
) -> None:
    """The store opened again once its database is back (autoMigrate) while another process
    holds the migration lock (a replica, a migrate job migrating the schema) waits for it
    with no end. Meanwhile every operation, and so `/readyz`'s `database` check, named the
    error of the attempt before ("connection refused", the database long back), and nothing
    was logged. Now they say it waits for the migration lock; once released it opens."""
    dsn = private_postgres.create_database("audit")
    store = PostgresAuditStore(dsn, timeout=3.0, auto_migrate=True)
    private_postgres.stop()
    with pytest.raises(StoreOutage):
        await store.open()
    private_postgres.start()
    holder = await asyncpg.connect(dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1, $2)", *_MIGRATION_LOCK)
        opening = asyncio.create_task(store.open())

        async def said() -> str:
            try:
                await store.ping()
            except StoreUnavailable as exc:
                return str(exc)
            return "open"

        deadline = asyncio.get_running_loop().time() + 30
        while "migration lock" not in (why := await said()):
            assert not opening.done(), opening
            assert asyncio.get_running_loop().time() < deadline, why
            await asyncio.sleep(0.05)
        assert "another process holds" in why and "refused" not in why.lower(), why
        await holder.execute("SELECT pg_advisory_unlock($1, $2)", *_MIGRATION_LOCK)
        await asyncio.wait_for(opening, 30)
        await store.ping()
    finally:
        await holder.close()
        await store.close()
