"""Costly reads at once (common/reads.py) against a real DataStorage on PostgreSQL.

The audit table is locked by the test (`LOCK TABLE … ACCESS EXCLUSIVE`), so every query
page blocks in the database until the test lets it go: which reads run is read from
`pg_stat_activity` and the service's own gauges, never from how long anything took.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.integration.datastorage.dstools import (
    ADMIN_TOKEN,
    datastorage_process,
)
from tests.support.event_bodies import event_body
from tests.support.polling import metric_sample, until
from tests.support.read_bound import assert_refused, blocked, equals
from tests.support.services import ServiceProcess

EVENTS = "/api/v1/audit/events"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def postgres_ds(postgres_dsn: str, tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    env = {
        "SIGNALGATE_STORE__DSN": postgres_dsn,
        "SIGNALGATE_STORE__AUTOMIGRATE": "true",
        "SIGNALGATE_SERVER__MAXCONCURRENTREADS": "2",
        "SIGNALGATE_SERVER__MAXQUEUEDREADS": "2",
        "SIGNALGATE_SERVER__READQUEUETIMEOUT": "120s",  # no read gives up in this test
    }
    process = datastorage_process(tmp_path / "ds", env).start()
    try:
        yield process
    finally:
        process.stop()


async def query(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get(EVENTS, params={"limit": "1000"})


async def test_reads_beyond_the_bound_wait_or_get_503_and_a_gone_client_frees_its_place(
    postgres_ds: ServiceProcess, postgres_dsn: str
) -> None:
    ops, running, waiting = (
        postgres_ds.ops_url,
        'datastorage_reads{state="running"}',
        ('datastorage_reads{state="waiting"}'),
    )
    async with httpx.AsyncClient(base_url=postgres_ds.api_url, headers=AUTH, timeout=60) as c:
        assert (await c.post(EVENTS, json=event_body("rr-bound"))).status_code == 201
    lock = await asyncpg.connect(postgres_dsn)
    # pg_stat_activity is read outside the lock's transaction: within one it is a snapshot
    watch = await asyncpg.connect(postgres_dsn)
    clients = [
        httpx.AsyncClient(base_url=postgres_ds.api_url, headers=AUTH, timeout=60) for _ in range(6)
    ]
    try:
        holding = lock.transaction()
        await holding.start()
        await lock.execute("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
        # four query pages at once: two run (blocked in the database), two wait their turn
        first = [asyncio.create_task(query(clients[i])) for i in range(2)]
        await until(lambda: equals(blocked(watch), 2), "two query pages running")
        queued = [asyncio.create_task(query(clients[i])) for i in range(2, 4)]
        await until(lambda: equals(metric_sample(ops, waiting), 2), "two query pages waiting")
        assert await blocked(watch) == 2  # exactly the bound runs
        assert await metric_sample(ops, running) == 2

        # a fifth is answered at once: 503, Retry-After, a problem naming the bound
        refused = await query(clients[4])
        assert_refused(refused, "server.maxConcurrentReads", "server.maxQueuedReads")
        assert await metric_sample(ops, 'datastorage_reads_refused_total{reason="queue_full"}') == 1
        # so is verify-chain, a costly read too
        chain = await clients[4].get("/api/v1/audit/verify-chain?correlation_id=rr-bound")
        assert chain.status_code == 503

        # probes are answered, and a write reaches the database, while reads are saturated
        async with httpx.AsyncClient(timeout=10) as probe:
            assert (await probe.get(f"{ops}/readyz")).status_code == 200
            assert (await probe.get(f"{postgres_ds.api_url}/readyz")).status_code == 200
        write = asyncio.create_task(clients[5].post(EVENTS, json=event_body("rr-bound-write")))
        await until(lambda: equals(blocked(watch), 3), "the write waits in the database")

        # the waiting clients go away: their places free, and their queries never start
        for task in queued:
            task.cancel()
        await until(
            lambda: equals(metric_sample(ops, waiting), 0), "the gone waiters leave the queue"
        )
        assert await blocked(watch) == 3
        # the running ones go away: their queries are cancelled in the database
        for task in first:
            task.cancel()
        await until(lambda: equals(blocked(watch), 1), "the gone readers' queries end")
        await until(lambda: equals(metric_sample(ops, running), 0), "their places free")

        await holding.rollback()
        assert (await write).status_code == 201
        answers = await asyncio.gather(*(query(clients[i]) for i in range(4)))
        assert [a.status_code for a in answers] == [200] * 4
    finally:
        for client in clients:
            await client.aclose()
        await lock.close()
        await watch.close()


async def test_a_stop_refuses_the_waiting_reads_at_once_and_cuts_the_running_one_with_a_503(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """SIGTERM while one query page runs (blocked in the database) and two wait: the waiting
    ones are answered 503 at once (they used to wait until the grace's end, when uvicorn
    cancelled them: 500 and a traceback), the running one is cut at the grace's end with a
    503 too, and the service is gone within its grace."""
    grace = 2.0
    env = {
        "SIGNALGATE_STORE__DSN": postgres_dsn,
        "SIGNALGATE_STORE__AUTOMIGRATE": "true",
        "SIGNALGATE_SERVER__MAXCONCURRENTREADS": "1",
        "SIGNALGATE_SERVER__MAXQUEUEDREADS": "2",
        "SIGNALGATE_SERVER__READQUEUETIMEOUT": "120s",  # no read gives up by itself
        "SIGNALGATE_SERVER__SHUTDOWNGRACE": f"{grace:g}s",
    }
    service = datastorage_process(tmp_path / "ds", env).start()
    lock = await asyncpg.connect(postgres_dsn)
    watch = await asyncpg.connect(postgres_dsn)
    clients = [
        httpx.AsyncClient(base_url=service.api_url, headers=AUTH, timeout=60) for _ in range(3)
    ]
    try:
        holding = lock.transaction()
        await holding.start()
        await lock.execute("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
        running = asyncio.create_task(query(clients[0]))
        await until(lambda: equals(blocked(watch), 1), "one query page running")
        waiting = [asyncio.create_task(query(c)) for c in clients[1:]]
        waiting_now = 'datastorage_reads{state="waiting"}'
        await until(
            lambda: equals(metric_sample(service.ops_url, waiting_now), 2),
            "two query pages waiting",
        )
        assert service.proc is not None
        stopped_at = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)

        # the waiting ones: 503 at once, while the running one still runs
        refused = await asyncio.gather(*waiting)
        assert not running.done()
        for answer in refused:
            assert_refused(answer, "stopping")
        refused_draining = 'datastorage_reads_refused_total{reason="draining"}'
        assert await metric_sample(service.ops_url, refused_draining) == 2

        # the running one: cut at the grace's end, answered 503, not 500
        cut = await running
        assert_refused(cut, "server.shutdownGrace")
        code = await asyncio.to_thread(service.proc.wait, 10)
        assert code == 0
        assert time.monotonic() - stopped_at < grace + 3
        output = service.output()
        assert "Traceback" not in output and "Exception in ASGI application" not in output, output
    finally:
        for client in clients:
            await client.aclose()
        await lock.close()
        await watch.close()
        service.stop()
