"""The audit trail: what the Gateway decided, as DataStorage stores and serves it back.

Signals go to the Gateway; the Gateway sends audit events to DataStorage in the background
(docs/gateway.md, "The audit events it sends"); the tests query them from DataStorage's API
by correlation id (docs/datastorage.md, "Queries") and check the hash chain ("The hash chain").
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
import pytest

from tests.e2e.stack import Audit, fingerprint, unique
from tests.support.services import alert, webhook

PROMETHEUS = "/api/v1/signals/prometheus"
RECEIVED = "gateway.signal.received"
CREATED = "gateway.crd.created"
DEDUPLICATED = "gateway.signal.deduplicated"
RESOLVED = "gateway.signal.resolved"
REJECTED = "gateway.signal.rejected"


@pytest.fixture(scope="module")
def gateway(gateway_each_store: httpx.Client) -> httpx.Client:
    """Each test here runs on the Gateway of each SQL store (conftest.py)."""
    return gateway_each_store


def fire(gateway: httpx.Client, namespace: str, pod: str, **labels: str) -> dict[str, Any]:
    answer = gateway.post(PROMETHEUS, json=webhook(alert(namespace=namespace, pod=pod, **labels)))
    assert answer.status_code in (200, 201, 202), answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_new_rr_writes_the_received_and_created_pair(gateway: httpx.Client, audit: Audit) -> None:
    namespace, pod = unique("ns"), unique("api")
    name = fire(gateway, namespace, pod)["remediationRequestName"]

    events = audit.wait_types(name, [RECEIVED, CREATED])
    assert [e["event_type"] for e in events] == [RECEIVED, CREATED]
    for event in events:
        assert event["correlation_id"] == name
        assert event["event_category"] == "gateway"
        assert event["event_outcome"] == "success"
        assert event["namespace"] == namespace
        assert event["event_id"]
        data = event["event_data"]
        assert data["event_type"] == event["event_type"]
        assert data["signal_name"] == "PodCrashLooping"
        assert data["fingerprint"] == fingerprint(namespace, "Pod", pod)
        assert data["resource_kind"] == "Pod"
        assert data["resource_name"] == pod
        assert data["remediation_request"] == f"kubernaut-system/{name}"
        assert data["deduplication_status"] == "new"
        assert data["occurrence_count"] == 1
        assert data["original_payload"]["alerts"][0]["labels"]["pod"] == pod
        assert data["signal_labels"]["pod"] == pod
        assert isinstance(data["signal_annotations"], dict)
    assert [e["event_action"] for e in events] == ["received", "created"]


def test_duplicate_and_resolved_are_audited_on_the_rr(gateway: httpx.Client, audit: Audit) -> None:
    namespace, pod = unique("ns"), unique("api")
    name = fire(gateway, namespace, pod)["remediationRequestName"]
    fire(gateway, namespace, pod)
    resolved = gateway.post(
        PROMETHEUS,
        json=webhook(alert(status="resolved", namespace=namespace, pod=pod), status="resolved"),
    )
    assert resolved.status_code == 202

    events = audit.wait_types(name, [RECEIVED, CREATED, DEDUPLICATED, RESOLVED])
    by_type = {e["event_type"]: e for e in events}
    dedup = by_type[DEDUPLICATED]
    assert dedup["event_action"] == "deduplicated"
    assert dedup["event_data"]["deduplication_status"] == "duplicate"
    assert dedup["event_data"]["occurrence_count"] == 2
    assert by_type[RESOLVED]["event_action"] == "resolved"

    only_dedup = audit.events(name, event_type=DEDUPLICATED)
    assert [e["event_type"] for e in only_dedup] == [DEDUPLICATED]


def test_rejected_signal_is_audited_by_fingerprint(gateway: httpx.Client, audit: Audit) -> None:
    namespace, pod = unique("ns"), unique("api")
    answer = fire(gateway, namespace, pod, kubernaut_managed="false")
    assert answer["status"] == "rejected"
    fp = answer["fingerprint"]

    (event,) = audit.wait_types(fp, [REJECTED])
    assert event["event_outcome"] == "failure"
    assert event["event_action"] == "rejected"
    assert event["event_data"]["fingerprint"] == fp
    # the record says why, not only that
    assert event["error_code"] == "unmanaged_resource"
    assert event["event_data"]["error_details"]["code"] == "unmanaged_resource"
    assert "kubernaut_managed" in event["error_message"]  # what opted it out


def test_hash_chain_verifies_and_links(gateway: httpx.Client, audit: Audit) -> None:
    namespace, pod = unique("ns"), unique("api")
    name = fire(gateway, namespace, pod)["remediationRequestName"]
    for _ in range(3):
        fire(gateway, namespace, pod)

    events = audit.wait_types(name, [RECEIVED, CREATED, *[DEDUPLICATED] * 3])
    assert len(events) == 5
    assert events[0]["previous_event_hash"] == ""
    for before, after in itertools.pairwise(events):
        assert after["previous_event_hash"] == before["event_hash"]
    assert len({e["event_hash"] for e in events}) == 5

    report = audit.verify_chain(name)
    assert report["correlation_id"] == name
    assert report["valid"] is True, report
    assert report["events"] == 5
    assert "first_broken_event_id" not in report or report["first_broken_event_id"] is None


def test_audit_query_filters(gateway: httpx.Client, audit: Audit) -> None:
    namespace, pod = unique("ns"), unique("api")
    name = fire(gateway, namespace, pod)["remediationRequestName"]
    audit.wait_types(name, [RECEIVED, CREATED])

    by_namespace = audit.client.get(
        "/api/v1/audit/events", params={"namespace": namespace, "event_type": CREATED}
    )
    assert by_namespace.status_code == 200
    body = by_namespace.json()
    assert [e["correlation_id"] for e in body["data"]] == [name]
    assert body["pagination"]["total"] == 1

    by_detail = audit.client.get(
        "/api/v1/audit/events",
        params={"detail_key": "resource_name", "detail_value": pod, "since": "1h"},
    )
    assert {e["event_type"] for e in by_detail.json()["data"]} == {RECEIVED, CREATED}

    bad = audit.client.get("/api/v1/audit/events", params={"limit": "0"})
    assert bad.status_code == 400
    assert "limit" in json.dumps(bad.json())
