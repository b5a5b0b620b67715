"""The RemediationRequest CRD describes the objects the Gateway really makes.

A RemediationRequest is made by the Gateway's own pipeline (Alertmanager webhook → SQLite
store), its status filled by the consumer's patch, and `to_json()` validated against the
CRD's openAPIV3Schema. The schema is also compared with the Gateway's OpenAPI description of
the same object, so the two cannot drift apart.

jsonschema_rs is the validator the test environment has (a schemathesis dependency).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest
from deploy_objects import Manifest, find
from prometheus_client import CollectorRegistry

from signalgate.common.audit import LoggingAuditSink
from signalgate.gateway.adapters.alertmanager import parse_webhook
from signalgate.gateway.adapters.parsing import Freshness
from signalgate.gateway.metrics import GatewayMetrics
from signalgate.gateway.openapi import SCHEMAS
from signalgate.gateway.pipeline import Pipeline
from signalgate.gateway.scope import StandaloneScope
from signalgate.gateway.signal import Signal
from signalgate.remediation.model import API_VERSION, KIND, StatusPatch, utcnow
from signalgate.remediation.sqlite import SqliteStore
from tests.support.services import alert, rfc3339, webhook

CRD_NAME = "remediationrequests.kubernaut.ai"


def crd_version(base: list[Manifest]) -> dict[str, Any]:
    crd = find(base, "CustomResourceDefinition", CRD_NAME).obj
    (version,) = crd["spec"]["versions"]
    found: dict[str, Any] = version
    return found


def schema_of(base: list[Manifest]) -> dict[str, Any]:
    found: dict[str, Any] = crd_version(base)["schema"]["openAPIV3Schema"]
    return found


def validator(schema: dict[str, Any]) -> Any:
    # OpenAPI v3 schemas are JSON Schema draft 4 plus x-kubernetes-* keywords, which a
    # draft 4 validator ignores
    return jsonschema_rs.Draft4Validator(schema, validate_formats=True)


def errors(schema: dict[str, Any], instance: dict[str, Any]) -> list[str]:
    return [error.message for error in validator(schema).iter_errors(instance)]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "gateway.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def made_by_the_gateway(store: SqliteStore, **labels: str) -> dict[str, Any]:
    """An RR as the Gateway creates it from an Alertmanager webhook, with every optional
    status field then set, as `to_json()` renders it."""
    now = utcnow()
    body = orjson.dumps(webhook(alert(starts_at=rfc3339(now), **labels)))
    (item,) = parse_webhook(body, now, Freshness())
    assert isinstance(item, Signal)
    pipeline = Pipeline(
        store,
        StandaloneScope(["*"], []),
        LoggingAuditSink(),
        GatewayMetrics(CollectorRegistry()),
        "kubernaut-system",
    )
    outcome = await pipeline.process(item, asyncio.get_running_loop().time() + 10)
    assert outcome.kind == "created" and outcome.rr is not None
    later = datetime.now(UTC) + timedelta(hours=1)
    patched = StatusPatch("Completed", "Remediated", later, "done").apply(outcome.rr)
    return patched.with_status(signal_resolved_at=later).to_json()


async def test_the_schema_accepts_a_remediation_request_the_gateway_made(
    base: list[Manifest], store: SqliteStore
) -> None:
    rr = await made_by_the_gateway(store, cluster="prod-eu", deployment="web")
    assert set(rr["status"]) == {
        "overallPhase",
        "outcome",
        "nextAllowedExecution",
        "message",
        "signalResolvedAt",
        "deduplication",
    }
    assert "clusterID" in rr["spec"]
    assert errors(schema_of(base), rr) == []
    fresh = await made_by_the_gateway(store, namespace="", pod="", node="worker-1")
    assert "namespace" not in fresh["spec"]["targetResource"]  # cluster-scoped
    assert errors(schema_of(base), fresh) == []


@pytest.mark.parametrize(
    "field", ["signalFingerprint", "signalName", "targetResource", "originalPayload"]
)
async def test_the_schema_rejects_a_spec_without_a_required_field(
    base: list[Manifest], store: SqliteStore, field: str
) -> None:
    rr = await made_by_the_gateway(store, pod=f"api-{field.lower()}")
    del rr["spec"][field]
    assert errors(schema_of(base), rr) == [f'"{field}" is a required property']


async def test_the_schema_rejects_values_the_gateway_never_writes(
    base: list[Manifest], store: SqliteStore
) -> None:
    rr = await made_by_the_gateway(store, pod="api-values")
    for path, value in (
        (("spec", "signalFingerprint"), "not-hex"),
        (("spec", "signalSource"), "nagios"),
        (("spec", "firingTime"), "yesterday"),
        (("spec", "signalLabels"), {"a": 1}),
        (("status", "deduplication", "occurrenceCount"), 0),
    ):
        bad = copy.deepcopy(rr)
        parent = bad
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
        assert errors(schema_of(base), bad), f"{'.'.join(path)} = {value!r} was accepted"


def test_the_crd_schema_matches_the_gateway_openapi_description(base: list[Manifest]) -> None:
    crd = schema_of(base)["properties"]
    api = SCHEMAS["RemediationRequest"]["properties"]
    for part in ("spec", "status"):
        assert set(crd[part]["properties"]) == set(api[part]["properties"]), part
        assert set(crd[part]["required"]) == set(api[part]["required"]), part
    dedup = ("status", "deduplication")
    assert set(crd[dedup[0]]["properties"][dedup[1]]["required"]) == set(
        api[dedup[0]]["properties"][dedup[1]]["required"]
    )


def test_the_crd_is_the_kubernaut_resource_with_a_status_subresource(
    base: list[Manifest],
) -> None:
    crd = find(base, "CustomResourceDefinition", CRD_NAME).obj["spec"]
    group, version = API_VERSION.split("/")
    assert crd["group"] == group and crd["scope"] == "Namespaced"
    assert crd["names"]["kind"] == KIND and crd["names"]["plural"] == "remediationrequests"
    v = crd_version(base)
    assert (v["name"], v["served"], v["storage"]) == (version, True, True)
    assert v["subresources"] == {"status": {}}


def test_printer_columns_point_at_fields_the_schema_describes(base: list[Manifest]) -> None:
    v = crd_version(base)
    columns = {c["name"]: c for c in v["additionalPrinterColumns"]}
    assert {"Phase", "Signal", "Age"} <= set(columns)
    schema = schema_of(base)
    for column in columns.values():
        path = column["jsonPath"].lstrip(".").split(".")
        if path[0] == "metadata":
            continue
        node = schema
        for key in path:
            node = node["properties"][key]
        expected = {"string": "string", "integer": "integer"}[node["type"]]
        assert column["type"] in (expected, "date"), column
