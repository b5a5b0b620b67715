"""Every audit event the Gateway emits validates against Kubernaut's DataStorage OpenAPI
document (`tests/fixtures/kubernaut/data-storage-v1.yaml`, copied unchanged), with Kubernaut's
actor and resource values.

Events come from the real pipeline over a real SQLite store. `event_data` is checked against
the payload schema the document's discriminator maps its `event_type` to (as Kubernaut's
generated server does). Our two extra types (resolved, rejected) are not in that mapping:
their envelope is checked against the same schema, their payload against the Gateway
payload with the extra type allowed, and they must be among the types our DataStorage
advertises (`EXTENSION_EVENT_TYPES`), the only place they are sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry

from signalgate.common.audit import LoggingAuditSink
from signalgate.datastorage.capabilities import EXTENSION_EVENT_TYPES
from signalgate.gateway import audit_events as ev
from signalgate.gateway.adapters.alertmanager import parse_webhook
from signalgate.gateway.adapters.kubernetes_event import parse_event
from signalgate.gateway.adapters.parsing import Freshness
from signalgate.gateway.metrics import GatewayMetrics
from signalgate.gateway.pipeline import Pipeline
from signalgate.gateway.scope import StandaloneScope
from signalgate.gateway.signal import Signal
from signalgate.remediation.model import utcnow
from signalgate.remediation.sqlite import SqliteRemediationStore
from tests.support.services import alert, k8s_event, rfc3339, webhook

OPENAPI = Path(__file__).parents[2] / "fixtures" / "kubernaut" / "data-storage-v1.yaml"


class CapturingSink(LoggingAuditSink):
    """The logging sink, also keeping what it is given, in order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(OPENAPI.read_text())
    return loaded


def validator(document: dict[str, Any], name: str) -> Any:
    """A validator for one component schema, its `$ref`s resolved inside the document."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema_rs.validator_for(schema)


def errors(document: dict[str, Any], name: str, instance: dict[str, Any]) -> list[str]:
    return [e.message for e in validator(document, name).iter_errors(instance)]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteRemediationStore]:
    opened = SqliteRemediationStore(tmp_path / "gateway.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def emitted(store: SqliteRemediationStore) -> list[dict[str, Any]]:
    """The events of: a new alert, its duplicate, its resolved notice, an event, a rejected
    alert (out of scope) and a failed RR write."""
    sink = CapturingSink()
    pipeline = Pipeline(
        store,
        StandaloneScope(["*"], ["kube-system"]),
        sink,  # structural: satisfies the AuditSink protocol
        GatewayMetrics(CollectorRegistry()),
        "kubernaut-system",
    )
    now = utcnow()
    deadline = asyncio.get_running_loop().time() + 10

    def one(body: dict[str, object]) -> Signal:
        (item,) = parse_webhook(orjson.dumps(body), now, Freshness())
        assert isinstance(item, Signal)
        return item

    firing = webhook(alert(starts_at=rfc3339(now), cluster="eu-1", deployment="web"))
    await pipeline.process(one(firing), deadline)
    await pipeline.process(one(firing), deadline)
    resolved = webhook(
        alert(status="resolved", starts_at=rfc3339(now), cluster="eu-1", deployment="web")
    )
    await pipeline.process(one(resolved), deadline)
    event = parse_event(orjson.dumps(k8s_event(last_timestamp=rfc3339(now))), now, Freshness())
    assert isinstance(event, Signal)
    await pipeline.process(event, deadline)
    await pipeline.process(one(webhook(alert(namespace="kube-system"))), deadline)
    failed = one(webhook(alert(pod="api-9")))
    error = {"message": "store unavailable", "code": "store_unavailable", "retry_possible": True}
    sink.emit(
        ev.build_event(
            ev.CRD_FAILED,
            failed,
            now + timedelta(seconds=1),
            correlation_id="X:prod:Pod:api-9",
            error=error,
        )
    )
    return sink.events


async def test_every_kubernaut_event_type_validates_against_kubernauts_openapi(
    document: dict[str, Any], store: SqliteRemediationStore
) -> None:
    events = await emitted(store)
    mapping = document["components"]["schemas"]["AuditEventRequest"]["properties"]["event_data"][
        "discriminator"
    ]["mapping"]
    seen = {e["event_type"] for e in events}
    assert seen == {
        ev.SIGNAL_RECEIVED,
        ev.CRD_CREATED,
        ev.SIGNAL_DEDUPLICATED,
        ev.SIGNAL_RESOLVED,
        ev.SIGNAL_REJECTED,
        ev.CRD_FAILED,
    }
    envelope = {**document["components"]["schemas"]["AuditEventRequest"]}
    envelope["properties"] = {k: v for k, v in envelope["properties"].items() if k != "event_data"}
    envelope_check = jsonschema_rs.validator_for({**envelope, "components": document["components"]})
    for event in events:
        problems = [e.message for e in envelope_check.iter_errors(event)]
        assert problems == [], (event["event_type"], problems)
        data = event["event_data"]
        if event["event_type"] in mapping:
            payload = mapping[event["event_type"]].rsplit("/", 1)[1]
            assert errors(document, payload, data) == [], event["event_type"]
        else:
            assert event["event_type"] in EXTENSION_EVENT_TYPES
            relaxed = {**data, "event_type": ev.SIGNAL_RECEIVED}
            assert errors(document, "GatewayAuditPayload", relaxed) == [], event["event_type"]


async def test_actor_and_resource_are_kubernauts(store: SqliteRemediationStore) -> None:
    events = await emitted(store)
    by_type: dict[str, dict[str, Any]] = {}
    for event in events:
        by_type.setdefault(event["event_type"], event)
    received = by_type[ev.SIGNAL_RECEIVED]
    fingerprint = received["event_data"]["fingerprint"]
    assert (received["actor_type"], received["actor_id"]) == ("external", "prometheus")
    assert (received["resource_type"], received["resource_id"]) == ("Signal", fingerprint)
    dedup = by_type[ev.SIGNAL_DEDUPLICATED]
    assert (dedup["actor_type"], dedup["actor_id"], dedup["resource_type"]) == (
        "external",
        "prometheus",
        "Signal",
    )
    created = by_type[ev.CRD_CREATED]
    assert (created["actor_type"], created["actor_id"]) == ("gateway", "crd-creator")
    assert created["resource_type"] == "RemediationRequest"
    assert created["resource_id"] == created["event_data"]["remediation_request"]
    assert created["resource_id"] == f"kubernaut-system/{created['correlation_id']}"
    assert created["cluster_id"] == "eu-1"
    failed = by_type[ev.CRD_FAILED]
    assert (failed["actor_type"], failed["actor_id"]) == ("gateway", "crd-creator")
    assert (failed["resource_type"], failed["resource_id"]) == (
        "RemediationRequest",
        "X:prod:Pod:api-9",
    )
    event_sourced = [e for e in events if e["actor_id"] == "kubernetes-events"]
    assert event_sourced and all(e["actor_type"] == "external" for e in event_sourced)


async def test_the_envelope_is_set_as_kubernauts_gateway_sets_it(
    store: SqliteRemediationStore,
) -> None:
    """No envelope `severity` (Kubernaut's Gateway sets none: the signal's is in event_data,
    and DataStorage's severity filter is the other services'), and the target's namespace,
    "" for a cluster-scoped one (Kubernaut sets it from the signal, empty for a Node)."""
    events = await emitted(store)
    assert all("severity" not in event for event in events)
    assert all(event["event_data"]["severity"] for event in events)
    [node] = parse_webhook(
        orjson.dumps(webhook(alert(pod="", node="worker-1", namespace=""))),
        utcnow(),
        Freshness(),
    )
    assert isinstance(node, Signal) and node.target is not None
    event = ev.build_event(ev.SIGNAL_RECEIVED, node, utcnow(), correlation_id="rr-x")
    assert event["namespace"] == "" and event["event_data"]["namespace"] == ""
