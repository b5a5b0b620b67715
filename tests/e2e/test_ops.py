"""The ops listener: liveness, readiness and metrics that move as signals arrive."""

from __future__ import annotations

from datetime import datetime

import httpx

from tests.e2e.stack import metric_value, unique
from tests.support.services import alert, k8s_event, webhook

PROMETHEUS = "/api/v1/signals/prometheus"


def test_healthz_and_readyz(ops: httpx.Client) -> None:
    health = ops.get("/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "healthy"
    assert datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))

    ready = ops.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"


def test_ops_listener_needs_no_token_and_api_routes_are_not_there(ops: httpx.Client) -> None:
    missing = ops.get(PROMETHEUS)
    assert missing.status_code == 404
    # a problem document, as on the API listener (it was Starlette's plain text)
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["status"] == 404
    wrong = ops.post("/metrics")
    assert wrong.status_code == 405 and wrong.json()["status"] == 405
    assert "GET" in wrong.headers["allow"]


def test_metrics_move_as_signals_arrive(gateway: httpx.Client, ops: httpx.Client) -> None:
    signal_name = unique("E2EMetric")
    namespace, pod = unique("ns"), unique("api")
    before = ops.get("/metrics").text

    first = gateway.post(
        PROMETHEUS,
        json=webhook(alert(signal_name, severity="warning", namespace=namespace, pod=pod)),
    )
    assert first.status_code == 201
    for _ in range(2):
        dup = gateway.post(
            PROMETHEUS,
            json=webhook(alert(signal_name, severity="warning", namespace=namespace, pod=pod)),
        )
        assert dup.status_code == 202
    assert (
        gateway.post(
            PROMETHEUS, json=webhook(alert(namespace=namespace, pod="", kubernaut_managed="false"))
        ).status_code
        == 200
    )
    normal = k8s_event("Normal", namespace=namespace, name=pod)
    assert gateway.post("/api/v1/signals/kubernetes-event", json=normal).status_code == 200

    answer = ops.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    after = answer.text

    def moved(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert (
        moved("gateway_signals_received_total", source_type="prometheus", severity="warning") >= 3
    )
    assert moved("gateway_signals_deduplicated_total", signal_name=signal_name) == 2
    assert moved("gateway_crds_created_total", source_type="prometheus") >= 1
    assert moved("gateway_signals_rejected_total", reason="no_target_resource") >= 1
    assert (
        moved(
            "gateway_http_request_duration_seconds_count",
            endpoint="/api/v1/signals/prometheus",
            method="POST",
            status="202",
        )
        >= 2
    )
    assert "gateway_inflight_requests" in after
    assert "/api/v1/remediation-requests/rr-" not in after  # route templates, never raw paths
