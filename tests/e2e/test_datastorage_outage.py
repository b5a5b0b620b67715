"""DataStorage goes away mid-suite: signal handling does not notice, and the audit trail
catches up once it is back (docs/gateway.md, "The audit events it sends": delivery never
slows or fails signals)."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from tests.e2e.outage import DataStorageOutage
from tests.e2e.stack import Audit, metric_value, unique
from tests.support.services import alert, k8s_event, webhook

PROMETHEUS = "/api/v1/signals/prometheus"
RECEIVED = "gateway.signal.received"
CREATED = "gateway.crd.created"
DEDUPLICATED = "gateway.signal.deduplicated"


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_signals_keep_flowing_while_datastorage_is_down_and_audit_arrives_after(
    gateway: httpx.Client,
    ops: httpx.Client,
    audit: Audit,
    datastorage_outage: DataStorageOutage,
    request: pytest.FixtureRequest,
) -> None:
    namespace, pod, other = unique("ns"), unique("api"), unique("api")
    datastorage_outage.stop()
    try:
        with pytest.raises(httpx.ConnectError):
            audit.client.get("/api/v1/audit/events", params={"limit": "1"})

        created = gateway.post(PROMETHEUS, json=webhook(alert(namespace=namespace, pod=pod)))
        assert created.status_code == 201, created.text
        duplicate = gateway.post(PROMETHEUS, json=webhook(alert(namespace=namespace, pod=pod)))
        assert duplicate.status_code == 202, duplicate.text
        event = gateway.post(
            "/api/v1/signals/kubernetes-event",
            json=k8s_event("Warning", namespace=namespace, name=other),
        )
        assert event.status_code == 201, event.text

        ready = ops.get("/readyz")
        assert ready.status_code == 200, ready.text  # DataStorage down does not make it unready
        assert "audit" in ready.json()["checks"]  # ... and its body reports the audit sink
        metrics = ops.get("/metrics").text
        held = metric_value(metrics, "audit_events_buffered") + metric_value(
            metrics, "audit_events_spooled"
        )
        assert held >= 5, "the Gateway should hold the outage's audit events (2 pairs + 1)"
        stopped_at = datetime.now().astimezone()
    finally:
        datastorage_outage.start(context=request.node.nodeid)

    name = created.json()["remediationRequestName"]
    events = audit.wait_types(name, [RECEIVED, CREATED, DEDUPLICATED], timeout=45)
    assert [e["event_type"] for e in events] == [RECEIVED, CREATED, DEDUPLICATED]
    for e in events:  # made while DataStorage was down, delivered after
        assert parse_time(e["event_timestamp"]) <= stopped_at
    assert audit.verify_chain(name)["valid"] is True
    audit.wait_types(event.json()["remediationRequestName"], [RECEIVED, CREATED], timeout=15)

    # and the trail keeps working for new signals
    fresh = gateway.post(PROMETHEUS, json=webhook(alert(namespace=namespace, pod=unique("api"))))
    audit.wait_types(fresh.json()["remediationRequestName"], [RECEIVED, CREATED])
