"""Race freedom across Gateway processes sharing one PostgreSQL (docs/gateway.md, The decision)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2ecov.recipes import PostgresServer
from tests.support.services import ADMIN_TOKEN, ServiceProcess, alert, gateway_process, webhook

PROM = "/api/v1/signals/prometheus"
pytestmark = pytest.mark.slow


@pytest.fixture
def two_gateways(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[list[ServiceProcess]]:
    dsn = postgres_server.create_database(f"race_{uuid.uuid4().hex[:10]}")
    env = {"SIGNALGATE_STORE__DSN": dsn, "SIGNALGATE_SERVER__MAXCONCURRENTREQUESTS": "1000"}
    services = [gateway_process(tmp_path / f"gw{i}", env=env).start() for i in range(2)]
    yield services
    for service in services:
        service.stop()


async def blast(services: list[ServiceProcess], pods: list[str]) -> list[int]:
    """Send one signal per entry of `pods`, alternating between the Gateways, all at once."""
    limits = httpx.Limits(max_connections=100)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=60) as client:
        requests = [
            client.post(services[i % 2].api_url + PROM, json=webhook(alert(pod=pod)))
            for i, pod in enumerate(pods)
        ]
        return [r.status_code for r in await asyncio.gather(*requests)]


def rrs(service: ServiceProcess) -> list[dict[str, object]]:
    with service.client() as c:
        return c.get("/api/v1/remediation-requests", params={"limit": "500"}).json()["items"]  # type: ignore[no-any-return]


def test_200_identical_signals_make_one_rr(two_gateways: list[ServiceProcess]) -> None:
    statuses = asyncio.run(blast(two_gateways, ["hot-1"] * 200))
    assert sorted(set(statuses)) == [201, 202]
    assert statuses.count(201) == 1
    [rr] = rrs(two_gateways[0])
    assert rr["status"]["deduplication"]["occurrenceCount"] == 200  # type: ignore[index]


def test_20_resources_times_10(two_gateways: list[ServiceProcess]) -> None:
    pods = [f"pod-{i}" for i in range(20)] * 10
    statuses = asyncio.run(blast(two_gateways, pods))
    assert statuses.count(201) == 20 and statuses.count(202) == 180
    items = rrs(two_gateways[1])
    assert len(items) == 20
    assert {rr["status"]["deduplication"]["occurrenceCount"] for rr in items} == {10}  # type: ignore[index]
