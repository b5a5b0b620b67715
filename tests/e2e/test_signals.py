"""Signals in, RemediationRequests out: the Gateway's decisions over real HTTP (gateway.md 4-8).

Every test works on resources with names of its own, so the tests share one Gateway and one
database without seeing each other's RRs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.stack import fingerprint, signal_resolved, unique
from tests.support.services import alert, k8s_event, rfc3339, webhook

PROMETHEUS = "/api/v1/signals/prometheus"
EVENTS = "/api/v1/signals/kubernetes-event"
RRS = "/api/v1/remediation-requests"
TERMINAL_REOPENS = ["Completed", "Failed", "Cancelled"]
ACTIVE_DEDUPLICATES = ["Pending", "Processing", "Blocked"]


@pytest.fixture(scope="module")
def gateway(gateway_each_store: httpx.Client) -> httpx.Client:
    """Each test here runs on the Gateway of each SQL store (conftest.py)."""
    return gateway_each_store


def fire(gateway: httpx.Client, namespace: str, pod: str, **labels: str) -> httpx.Response:
    return gateway.post(PROMETHEUS, json=webhook(alert(namespace=namespace, pod=pod, **labels)))


def rr(gateway: httpx.Client, name: str) -> dict[str, Any]:
    answer = gateway.get(f"{RRS}/{name}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def rrs_for(gateway: httpx.Client, fp: str) -> list[dict[str, Any]]:
    answer = gateway.get(RRS, params={"fingerprint": fp})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def set_phase(gateway: httpx.Client, name: str, phase: str) -> dict[str, Any]:
    answer = gateway.patch(
        f"{RRS}/{name}/status",
        content=json.dumps({"overallPhase": phase}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_webhook_creates_an_rr_with_the_right_spec(gateway: httpx.Client) -> None:
    namespace, pod = unique("ns"), unique("api")
    starts_at = rfc3339(datetime.now(UTC) - timedelta(minutes=3))
    payload = webhook(
        alert(
            "KubePodCrashLooping",
            starts_at=starts_at,
            namespace=namespace,
            pod=pod,
            container="app",
        )
    )
    answer = gateway.post(PROMETHEUS, json=payload)

    assert answer.status_code == 201, answer.text
    body = answer.json()
    fp = fingerprint(namespace, "Pod", pod)  # the pod, not its container (a scrape label)
    assert body["status"] == "created"
    assert body["duplicate"] is False
    assert body["fingerprint"] == fp
    assert body["remediationRequestNamespace"] == "kubernaut-system"
    name = body["remediationRequestName"]
    assert name.startswith(f"rr-{fp[:12]}-")

    got = rr(gateway, name)
    assert got["apiVersion"] == "kubernaut.ai/v1alpha1"
    assert got["kind"] == "RemediationRequest"
    assert got["metadata"]["name"] == name
    assert got["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gateway-service"
    spec = got["spec"]
    assert spec["signalFingerprint"] == fp
    assert spec["signalName"] == "KubePodCrashLooping"
    assert spec["severity"] == "critical"
    assert spec["signalType"] == "alert"
    assert spec["signalSource"] == "prometheus"
    assert spec["targetType"] == "kubernetes"
    assert spec["targetResource"]["kind"] == "Pod"
    assert spec["targetResource"]["name"] == pod
    assert spec["targetResource"]["namespace"] == namespace
    assert spec["targetResource"]["apiVersion"] == "v1"
    assert spec["signalLabels"]["container"] == "app"
    assert spec["signalAnnotations"] == {"summary": "KubePodCrashLooping fired"}
    assert json.loads(spec["originalPayload"]) == payload
    fired = datetime.fromisoformat(spec["firingTime"].replace("Z", "+00:00"))
    assert abs(fired - datetime.fromisoformat(starts_at.replace("Z", "+00:00"))) < timedelta(
        seconds=1
    )
    assert got["status"]["overallPhase"] == "Pending"
    assert got["status"]["deduplication"]["occurrenceCount"] == 1


def test_duplicate_answers_202_and_counts_in_status(gateway: httpx.Client) -> None:
    namespace, pod = unique("ns"), unique("api")
    first = fire(gateway, namespace, pod)
    assert first.status_code == 201
    name = first.json()["remediationRequestName"]

    for count in (2, 3):
        again = fire(gateway, namespace, pod)
        assert again.status_code == 202, again.text
        body = again.json()
        assert body["status"] == "duplicate"
        assert body["duplicate"] is True
        assert body["remediationRequestName"] == name
        assert body["metadata"]["count"] == count
        assert body["metadata"]["remediationRequestRef"] == f"kubernaut-system/{name}"

    dedup = rr(gateway, name)["status"]["deduplication"]
    assert dedup["occurrenceCount"] == 3
    assert dedup["lastSeenAt"] >= dedup["firstSeenAt"]
    assert len(rrs_for(gateway, first.json()["fingerprint"])) == 1


@pytest.mark.parametrize("phase", ACTIVE_DEDUPLICATES)
def test_active_phase_deduplicates(gateway: httpx.Client, phase: str) -> None:
    namespace, pod = unique("ns"), unique("api")
    name = fire(gateway, namespace, pod).json()["remediationRequestName"]
    assert set_phase(gateway, name, phase)["status"]["overallPhase"] == phase

    again = fire(gateway, namespace, pod)
    assert again.status_code == 202, again.text
    assert again.json()["remediationRequestName"] == name


@pytest.mark.parametrize("phase", TERMINAL_REOPENS)
def test_terminal_phase_opens_a_new_rr(gateway: httpx.Client, phase: str) -> None:
    namespace, pod = unique("ns"), unique("api")
    created = fire(gateway, namespace, pod).json()
    set_phase(gateway, created["remediationRequestName"], phase)

    again = fire(gateway, namespace, pod)
    assert again.status_code == 201, again.text
    new_name = again.json()["remediationRequestName"]
    assert new_name != created["remediationRequestName"]
    phases = {
        i["metadata"]["name"]: i["status"]["overallPhase"]
        for i in rrs_for(gateway, created["fingerprint"])
    }
    assert phases == {created["remediationRequestName"]: phase, new_name: "Pending"}
    active = gateway.get(RRS, params={"fingerprint": created["fingerprint"], "active": "true"})
    assert [i["metadata"]["name"] for i in active.json()["items"]] == [new_name]


def test_reopening_a_terminal_rr_while_another_is_active_is_a_conflict(
    gateway: httpx.Client,
) -> None:
    namespace, pod = unique("ns"), unique("api")
    old = fire(gateway, namespace, pod).json()["remediationRequestName"]
    set_phase(gateway, old, "Completed")
    assert fire(gateway, namespace, pod).status_code == 201

    answer = gateway.patch(f"{RRS}/{old}/status", json={"overallPhase": "Processing"})
    assert answer.status_code == 409, answer.text
    assert answer.json()["type"] == "https://kubernaut.ai/problems/conflict"


def test_resolved_notice_is_recorded_and_a_later_firing_clears_it(gateway: httpx.Client) -> None:
    namespace, pod = unique("ns"), unique("api")
    name = fire(gateway, namespace, pod).json()["remediationRequestName"]
    resolved = webhook(alert(status="resolved", namespace=namespace, pod=pod), status="resolved")

    answer = gateway.post(PROMETHEUS, json=resolved)
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "resolved"
    assert answer.json()["remediationRequestName"] == name
    status = rr(gateway, name)["status"]
    assert signal_resolved(status) == "True"
    assert status["deduplication"]["occurrenceCount"] == 1  # unchanged by a resolved notice

    back = fire(gateway, namespace, pod)
    assert back.status_code == 202
    status = rr(gateway, name)["status"]
    assert signal_resolved(status) == "False"  # the problem is back
    assert status["deduplication"]["occurrenceCount"] == 2


def test_resolved_notice_without_an_active_rr_is_ignored(gateway: httpx.Client) -> None:
    namespace, pod = unique("ns"), unique("api")
    resolved = webhook(alert(status="resolved", namespace=namespace, pod=pod), status="resolved")
    answer = gateway.post(PROMETHEUS, json=resolved)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "ignored"
    assert rrs_for(gateway, fingerprint(namespace, "Pod", pod)) == []


@pytest.mark.parametrize("event_type", ["Warning", "Error"])
def test_kubernetes_warning_and_error_events_create_rrs(
    gateway: httpx.Client, event_type: str
) -> None:
    namespace, pod = unique("ns"), unique("api")
    answer = gateway.post(EVENTS, json=k8s_event(event_type, namespace=namespace, name=pod))
    assert answer.status_code == 201, answer.text
    got = rr(gateway, answer.json()["remediationRequestName"])
    assert got["spec"]["signalSource"] == "kubernetes-events"
    assert got["spec"]["signalName"] == "BackOff"
    assert got["spec"]["severity"] == event_type
    assert got["spec"]["targetResource"] == {
        "kind": "Pod",
        "name": pod,
        "namespace": namespace,
        "apiVersion": "v1",
    }
    again = gateway.post(EVENTS, json=k8s_event(event_type, namespace=namespace, name=pod))
    assert again.status_code == 202


def test_kubernetes_normal_event_is_ignored(gateway: httpx.Client) -> None:
    namespace, pod = unique("ns"), unique("api")
    answer = gateway.post(EVENTS, json=k8s_event("Normal", namespace=namespace, name=pod))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "ignored"
    assert rrs_for(gateway, fingerprint(namespace, "Pod", pod)) == []


def test_events_k8s_io_v1_event_is_accepted(gateway: httpx.Client) -> None:
    namespace, deployment = unique("ns"), unique("web")
    now = rfc3339()
    event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": f"{deployment}.1", "namespace": namespace},
        "type": "Warning",
        "reason": "ProgressDeadlineExceeded",
        "note": "rollout stuck",
        "regarding": {"kind": "Deployment", "name": deployment, "namespace": namespace},
        "eventTime": now,
        "series": {"count": 4, "lastObservedTime": now},
    }
    answer = gateway.post(EVENTS, json=event)
    assert answer.status_code == 201, answer.text
    assert answer.json()["fingerprint"] == fingerprint(namespace, "Deployment", deployment)


def test_multi_alert_webhook_answers_207_per_alert(gateway: httpx.Client) -> None:
    namespace = unique("ns")
    pod_a, pod_b = unique("api"), unique("api")
    assert fire(gateway, namespace, pod_b).status_code == 201  # so the second is a duplicate
    missing_name = alert(namespace=namespace, pod=unique("api"))
    labels = missing_name["labels"]
    assert isinstance(labels, dict)
    del labels["alertname"]
    no_target = alert(namespace=namespace, pod="")
    payload = webhook(
        alert(namespace=namespace, pod=pod_a),
        alert(namespace=namespace, pod=pod_b),
        missing_name,
        no_target,
        alert(status="resolved", namespace=namespace, pod=unique("gone")),
    )

    answer = gateway.post(PROMETHEUS, json=payload)
    assert answer.status_code == 207, answer.text
    body = answer.json()
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["created", "duplicate", "rejected", "rejected", "ignored"]
    assert body["results"][0]["fingerprint"] == fingerprint(namespace, "Pod", pod_a)
    assert body["results"][0]["remediationRequestName"].startswith("rr-")
    assert "alertname" in body["results"][2]["error"]
    assert body["results"][3]["rejection"]["reason"] == "no_target_resource"
    assert body["summary"] == {
        "total": 5,
        "created": 1,
        "deduplicated": 1,
        "resolved": 0,
        "rejected": 2,
        "ignored": 1,
        "failed": 0,
    }


def test_alert_and_event_on_the_same_pod_share_one_rr(gateway: httpx.Client) -> None:
    namespace, pod = unique("ns"), unique("api")
    from_alert = fire(gateway, namespace, pod)
    assert from_alert.status_code == 201
    from_event = gateway.post(EVENTS, json=k8s_event("Warning", namespace=namespace, name=pod))
    assert from_event.status_code == 202, from_event.text
    assert from_event.json()["fingerprint"] == from_alert.json()["fingerprint"]
    assert (
        from_event.json()["remediationRequestName"] == from_alert.json()["remediationRequestName"]
    )
    (only,) = rrs_for(gateway, from_alert.json()["fingerprint"])
    assert only["status"]["deduplication"]["occurrenceCount"] == 2


def test_unmanaged_or_untargeted_alert_is_rejected_with_an_action(gateway: httpx.Client) -> None:
    namespace = unique("ns")
    opted_out = fire(gateway, namespace, unique("api"), kubernaut_managed="false")
    assert opted_out.status_code == 200, opted_out.text
    rejection = opted_out.json()["rejection"]
    assert rejection["reason"] == "unmanaged_resource"
    assert rejection["action"]
    assert opted_out.json()["fingerprint"]

    no_target = gateway.post(PROMETHEUS, json=webhook(alert(namespace=namespace, pod="")))
    assert no_target.status_code == 200
    assert no_target.json()["rejection"]["reason"] == "no_target_resource"


def test_rr_api_lists_filters_and_pages(gateway: httpx.Client) -> None:
    namespace = unique("ns")
    names = [
        fire(gateway, namespace, unique("api")).json()["remediationRequestName"] for _ in range(3)
    ]
    page = gateway.get(RRS, params={"namespace": namespace, "limit": "2"})
    assert page.status_code == 200
    first = page.json()
    assert len(first["items"]) == 2
    assert first["nextCursor"]
    rest = gateway.get(
        RRS, params={"namespace": namespace, "limit": "2", "cursor": first["nextCursor"]}
    )
    seen = [i["metadata"]["name"] for i in first["items"] + rest.json()["items"]]
    assert seen == list(reversed(names))  # newest first
    assert rest.json()["nextCursor"] is None
    assert gateway.get(f"{RRS}/rr-000000000000-00000000").status_code == 404
