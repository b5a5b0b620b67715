"""Many signals at once over real connections: no errors, and exactly one RR per problem."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.e2e.stack import fingerprint, token, unique
from tests.support.services import alert, webhook

PROMETHEUS = "/api/v1/signals/prometheus"
RRS = "/api/v1/remediation-requests"


@pytest.fixture(scope="module")
def gateway(gateway_each_store: httpx.Client) -> httpx.Client:
    """Each test here runs on the Gateway of each SQL store (conftest.py)."""
    return gateway_each_store


async def _post_all(
    gateway: httpx.Client, payloads: list[dict[str, object]]
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(payloads))
    async with httpx.AsyncClient(
        base_url=gateway.base_url,
        headers={"Authorization": f"Bearer {token('gateway-admin')}"},
        timeout=30.0,
        limits=limits,
        trust_env=False,
    ) as client:
        return await asyncio.gather(*(client.post(PROMETHEUS, json=p) for p in payloads))


def test_fifty_concurrent_distinct_alerts_all_create(gateway: httpx.Client) -> None:
    namespace = unique("ns")
    pods = [unique("api") for _ in range(50)]
    answers = asyncio.run(
        _post_all(gateway, [webhook(alert(namespace=namespace, pod=p)) for p in pods])
    )

    assert [a.status_code for a in answers] == [201] * 50, [
        a.text for a in answers if a.status_code != 201
    ][:3]
    assert {a.json()["fingerprint"] for a in answers} == {
        fingerprint(namespace, "Pod", p) for p in pods
    }
    listed = gateway.get(RRS, params={"namespace": namespace, "limit": "500"}).json()["items"]
    assert len(listed) == 50


def test_concurrent_identical_alerts_make_one_rr(gateway: httpx.Client) -> None:
    namespace, pod = unique("ns"), unique("api")
    count = 30
    payload = webhook(alert(namespace=namespace, pod=pod))
    answers = asyncio.run(_post_all(gateway, [payload] * count))

    codes = sorted(a.status_code for a in answers)
    assert codes == [201] + [202] * (count - 1), codes
    assert len({a.json()["remediationRequestName"] for a in answers}) == 1
    (only,) = gateway.get(RRS, params={"fingerprint": fingerprint(namespace, "Pod", pod)}).json()[
        "items"
    ]
    assert only["status"]["deduplication"]["occurrenceCount"] == count
    # each answer's count includes its own signal; duplicates coalesced into one store write
    # share that write's count, so counts may repeat, but never exceed the total
    counts = sorted(a.json().get("metadata", {}).get("count", 1) for a in answers)
    assert counts[0] == 1 and counts[-1] == count, counts
    assert all(1 <= c <= count for c in counts), counts
