"""Race-free deduplication on the API server: two Gateway processes, many concurrent signals,
counted on the RemediationRequest custom resources themselves (read as an admin)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2ecov.kubeapi import KubeAPIServer
from tests.support.kube import bind_cluster_role, kube_gateway, service_account
from tests.support.services import ServiceProcess, alert, webhook

PROM = "/api/v1/signals/prometheus"


@pytest.fixture
def two_gateways(
    kube_apiserver: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> Iterator[tuple[ServiceProcess, ServiceProcess, str]]:
    env = {"SIGNALGATE_SCOPE__SOURCE": "settings"}
    one = kube_gateway(kube_apiserver, kube_namespace, tmp_path / "one", env=env).start()
    two = kube_gateway(kube_apiserver, kube_namespace, tmp_path / "two", env=env).start()
    token = service_account(kube_apiserver, kube_namespace, "alertmanager")
    bind_cluster_role(kube_apiserver, "gateway-signal-source", kube_namespace, "alertmanager")
    try:
        yield one, two, token
    finally:
        one.stop()
        two.stop()


async def send(urls: list[str], token: str, bodies: list[dict[str, object]]) -> Counter[int]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        answers = await asyncio.gather(
            *(client.post(f"{urls[i % 2]}{PROM}", json=b) for i, b in enumerate(bodies))
        )
    return Counter(a.status_code for a in answers)


def rrs_on_the_api_server(server: KubeAPIServer, namespace: str) -> list[dict[str, object]]:
    status, body = server.request(
        "GET", f"/apis/kubernaut.ai/v1alpha1/namespaces/{namespace}/remediationrequests"
    )
    assert status == 200, body
    items: list[dict[str, object]] = body["items"]
    return items


def count(rr: dict[str, object]) -> int:
    status = rr["status"]
    assert isinstance(status, dict)
    return int(status["deduplication"]["occurrenceCount"])


def test_200_identical_signals_through_two_gateways_make_one_rr(
    two_gateways: tuple[ServiceProcess, ServiceProcess, str],
    kube_apiserver: KubeAPIServer,
    kube_namespace: str,
) -> None:
    one, two, token = two_gateways
    bodies = [webhook(alert(pod="hot-1")) for _ in range(200)]
    statuses = asyncio.run(send([one.api_url, two.api_url], token, bodies))
    assert statuses == Counter({201: 1, 202: 199})
    (rr,) = rrs_on_the_api_server(kube_apiserver, kube_namespace)
    assert count(rr) == 200
    assert "overallPhase" not in rr["status"]  # type: ignore[operator]


def test_20_resources_times_10_make_20_rrs_of_10(
    two_gateways: tuple[ServiceProcess, ServiceProcess, str],
    kube_apiserver: KubeAPIServer,
    kube_namespace: str,
) -> None:
    one, two, token = two_gateways
    bodies = [webhook(alert(pod=f"pod-{r}")) for _ in range(10) for r in range(20)]
    statuses = asyncio.run(send([one.api_url, two.api_url], token, bodies))
    assert statuses == Counter({201: 20, 202: 180})
    items = rrs_on_the_api_server(kube_apiserver, kube_namespace)
    assert len(items) == 20
    assert sorted(count(rr) for rr in items) == [10] * 20
