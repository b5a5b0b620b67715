"""The RR list's bound on reads at once (common/reads.py) against a real Gateway on
PostgreSQL: the RR table is locked by the test, so a list page blocks in the database
until the test lets it go; which reads run is read from `pg_stat_activity` and the
Gateway's gauges, never from how long anything took."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import asyncpg
import httpx

from e2ecov.recipes import PostgresServer
from signalgate.remediation.rows import TABLE
from tests.integration.gateway.conftest import start_gateway
from tests.support.polling import metric_sample, until
from tests.support.read_bound import assert_refused, blocked, equals
from tests.support.services import ADMIN_TOKEN, alert, webhook

RRS = "/api/v1/remediation-requests"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RUNNING = 'gateway_reads{state="running"}'
WAITING = 'gateway_reads{state="waiting"}'


async def test_rr_lists_beyond_the_bound_get_503_and_a_gone_client_cancels_its_query(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    gateway = start_gateway(
        tmp_path,
        "postgres",
        postgres_server,
        SIGNALGATE_SERVER__MAXCONCURRENTREADS="1",
        SIGNALGATE_SERVER__MAXQUEUEDREADS="1",
        SIGNALGATE_SERVER__READQUEUETIMEOUT="5s",
    )
    ops = gateway.ops_url
    dsn = gateway.env["SIGNALGATE_STORE__DSN"]
    clients = [
        httpx.AsyncClient(base_url=gateway.api_url, headers=AUTH, timeout=60) for _ in range(3)
    ]
    lock = await asyncpg.connect(dsn)
    watch = await asyncpg.connect(dsn)  # pg_stat_activity is a snapshot within a transaction
    try:
        created = await clients[0].post(
            "/api/v1/signals/prometheus", json=webhook(alert(pod="bound-1"))
        )
        assert created.status_code == 201, created.text
        holding = lock.transaction()
        await holding.start()
        await lock.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")

        running = asyncio.create_task(clients[0].get(RRS, params={"limit": "500"}))
        await until(lambda: equals(blocked(watch), 1), "one list page running")
        assert await metric_sample(ops, RUNNING) == 1
        waiting = asyncio.create_task(clients[1].get(RRS))
        await until(lambda: equals(metric_sample(ops, WAITING), 1), "one list page waiting")

        # beyond the one waiting: 503 at once, naming the bound
        full = await clients[2].get(RRS)
        assert_refused(full, "server.maxQueuedReads")
        async with httpx.AsyncClient(timeout=10) as probe:
            assert (await probe.get(f"{ops}/readyz")).status_code == 200

        # the one waiting gives up after server.readQueueTimeout: 503 too
        late = await waiting
        assert_refused(late, "server.readQueueTimeout")
        assert await metric_sample(ops, 'gateway_reads_refused_total{reason="queue_full"}') == 1
        assert await metric_sample(ops, 'gateway_reads_refused_total{reason="wait_timeout"}') == 1
        assert await blocked(watch) == 1  # nothing more started meanwhile

        # the running page's client goes away: its query is cancelled in the database
        running.cancel()
        await until(lambda: equals(blocked(watch), 0), "the gone reader's query ends")
        await until(lambda: equals(metric_sample(ops, RUNNING), 0), "its place frees")

        await holding.rollback()
        listed = await clients[2].get(RRS)
        assert listed.status_code == 200
        assert len(listed.json()["items"]) == 1
    finally:
        for client in clients:
            await client.aclose()
        await lock.close()
        await watch.close()
        gateway.stop()


async def test_a_stop_refuses_the_waiting_lists_at_once_and_cuts_the_running_one_with_a_503(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """SIGTERM while one list page runs (blocked in the database) and one waits: the waiting
    one is answered 503 at once (it used to wait until the grace's end, when uvicorn
    cancelled it: 500 and a traceback), the running one is cut at the grace's end, 503 too,
    and the Gateway is gone within its grace."""
    grace = 2.0
    gateway = start_gateway(
        tmp_path,
        "postgres",
        postgres_server,
        SIGNALGATE_SERVER__MAXCONCURRENTREADS="1",
        SIGNALGATE_SERVER__MAXQUEUEDREADS="1",
        SIGNALGATE_SERVER__READQUEUETIMEOUT="120s",
        SIGNALGATE_SERVER__SHUTDOWNGRACE=f"{grace:g}s",
    )
    dsn = gateway.env["SIGNALGATE_STORE__DSN"]
    clients = [
        httpx.AsyncClient(base_url=gateway.api_url, headers=AUTH, timeout=60) for _ in range(2)
    ]
    lock = await asyncpg.connect(dsn)
    watch = await asyncpg.connect(dsn)
    try:
        holding = lock.transaction()
        await holding.start()
        await lock.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        running = asyncio.create_task(clients[0].get(RRS))
        await until(lambda: equals(blocked(watch), 1), "one list page running")
        waiting = asyncio.create_task(clients[1].get(RRS))
        await until(lambda: equals(metric_sample(gateway.ops_url, WAITING), 1), "one waiting")
        assert gateway.proc is not None
        stopped_at = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)

        refused = await waiting
        assert not running.done()
        assert_refused(refused, "stopping")
        draining = 'gateway_reads_refused_total{reason="draining"}'
        assert await metric_sample(gateway.ops_url, draining) == 1

        cut = await running
        assert_refused(cut, "server.shutdownGrace")
        assert await asyncio.to_thread(gateway.proc.wait, 10) == 0
        assert time.monotonic() - stopped_at < grace + 3
        output = gateway.output()
        assert "Traceback" not in output and "Exception in ASGI application" not in output, output
    finally:
        for client in clients:
            await client.aclose()
        await lock.close()
        await watch.close()
        gateway.stop()
