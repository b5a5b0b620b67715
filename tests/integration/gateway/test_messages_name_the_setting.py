"""Error messages a newcomer meets first: they name the setting that decides, and say it once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.contract import problem
from tests.support.services import ServiceProcess, alert, k8s_event, rfc3339, webhook

PROM = "/api/v1/signals/prometheus"
EVENTS = "/api/v1/signals/kubernetes-event"


@pytest.fixture
def client(gateway: ServiceProcess) -> Iterator[httpx.Client]:
    with gateway.client() as c:
        yield c


def test_a_stale_event_names_freshness_tolerance(client: httpx.Client) -> None:
    old = rfc3339(datetime.now(UTC) - timedelta(minutes=6))
    response = client.post(EVENTS, json=k8s_event(name="msg-1", last_timestamp=old))
    problem(response, 400, "validation-error", "lastTimestamp")
    detail = response.json()["detail"]
    assert "is older than 300s" in detail and "freshness.tolerance" in detail, detail


def test_an_event_from_the_future_names_freshness_future_skew(client: httpx.Client) -> None:
    ahead = rfc3339(datetime.now(UTC) + timedelta(minutes=3))
    response = client.post(EVENTS, json=k8s_event(name="msg-2", last_timestamp=ahead))
    problem(response, 400, "validation-error", "freshness.futureSkew")


def test_a_stale_x_timestamp_names_freshness_tolerance(client: httpx.Client) -> None:
    stale = str(int(time.time()) - 400)
    response = client.post(PROM, json=webhook(alert(pod="msg-3")), headers={"x-timestamp": stale})
    problem(response, 400, "validation-error", "freshness.tolerance")


def test_patching_an_unknown_rr_says_not_found_once(client: httpx.Client) -> None:
    response = client.patch(
        "/api/v1/remediation-requests/rr-nope/status",
        json={"overallPhase": "Completed"},
        headers={"content-type": "application/merge-patch+json"},
    )
    problem(response, 404, "not-found", "'rr-nope'")
    detail = response.json()["detail"]
    assert detail.count("not found") == 1, detail
