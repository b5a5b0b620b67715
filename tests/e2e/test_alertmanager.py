"""A real client: Alertmanager (Debian's prometheus-alertmanager) in front of the Gateway.

Alerts are pushed into Alertmanager's own API (`POST /api/v2/alerts`, as Prometheus does);
Alertmanager groups them and calls its webhook receiver — the Gateway, with a bearer token
from `credentials_file` (e2e/alertmanager.py writes the configuration). Nothing here posts to
the Gateway directly: every RR change below was caused by a real Alertmanager notification.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.stack import Audit, Stack, fingerprint, signal_resolved, unique, wait_for

RRS = "/api/v1/remediation-requests"


def push(stack: Stack, *alerts: dict[str, Any]) -> None:
    with httpx.Client(base_url=stack.alertmanager, timeout=10.0, trust_env=False) as am:
        answer = am.post("/api/v2/alerts", json=list(alerts))
    assert answer.status_code == 200, answer.text


def am_alert(namespace: str, pod: str, starts_at: datetime, **extra: str) -> dict[str, Any]:
    return {
        "labels": {
            "alertname": "KubePodNotReady",
            "severity": "warning",
            "namespace": namespace,
            "pod": pod,
        },
        "annotations": {"summary": f"{pod} is not ready"},
        "startsAt": starts_at.isoformat().replace("+00:00", "Z"),
        "generatorURL": "http://prometheus.e2e/graph",
        **extra,
    }


@pytest.fixture
def alertmanager(stack: Stack) -> Stack:
    if not stack.alertmanager:
        pytest.fail("E2E_ALERTMANAGER_URL is not set: e2e/stack.toml must run Alertmanager")
    return stack


def test_alertmanager_webhooks_create_deduplicate_and_resolve(
    alertmanager: Stack, gateway: httpx.Client, audit: Audit
) -> None:
    namespace, pod = unique("ns"), unique("web")
    fp = fingerprint(namespace, "Pod", pod)
    started = datetime.now(UTC) - timedelta(seconds=30)

    def rrs() -> list[dict[str, Any]]:
        answer = gateway.get(RRS, params={"fingerprint": fp})
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    push(alertmanager, am_alert(namespace, pod, started))
    (created,) = wait_for(rrs, 15, f"Alertmanager's webhook to create an RR for {pod}")
    spec = created["spec"]
    assert spec["signalSource"] == "prometheus"
    assert spec["signalName"] == "KubePodNotReady"
    assert spec["targetResource"]["name"] == pod
    assert '"receiver":"signalgate"' in spec["originalPayload"].replace(" ", "")

    # the alert keeps firing: Alertmanager re-notifies after repeat_interval, and the Gateway
    # counts it on the same RR instead of opening another one
    def renotified() -> list[dict[str, Any]] | None:
        items = rrs()
        if items and items[0]["status"]["deduplication"]["occurrenceCount"] >= 2:
            return items
        return None

    (same,) = wait_for(renotified, 20, "a re-notification to be deduplicated")
    assert same["metadata"]["name"] == created["metadata"]["name"]
    assert signal_resolved(same["status"]) is None

    # resolve it the way Prometheus does: the same alert again, with endsAt in the past
    ended = datetime.now(UTC) - timedelta(seconds=1)
    push(
        alertmanager,
        am_alert(namespace, pod, started, endsAt=ended.isoformat().replace("+00:00", "Z")),
    )

    def resolved() -> list[dict[str, Any]] | None:
        items = rrs()
        return items if items and signal_resolved(items[0]["status"]) == "True" else None

    (done,) = wait_for(resolved, 20, "the resolved notification to be recorded")
    assert done["metadata"]["name"] == created["metadata"]["name"]
    assert done["status"]["overallPhase"] == "Pending"  # resolution is recorded, not acted on
    assert len(rrs()) == 1
    audited = ["gateway.signal.received", "gateway.crd.created", "gateway.signal.deduplicated"]
    audit.wait_types(created["metadata"]["name"], [*audited, "gateway.signal.resolved"])
