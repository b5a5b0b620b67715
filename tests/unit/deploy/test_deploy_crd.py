"""The RemediationRequest CRD is Kubernaut's, and describes the objects the Gateway makes.

Our CRD is compared with Kubernaut's own (a copy in tests/fixtures/kubernaut) after leaving
out descriptions: names, fields, types, enums, required lists, selectable fields, validation
rules and printer columns must all be the same, so ours can be applied over a Kubernaut
install. A RemediationRequest made by the Gateway's own pipeline (Alertmanager webhook →
SQLite store), its status filled by the consumer's patch, is validated offline against both
schemas (the Kubernetes tests do the same against a real API server); the Gateway's OpenAPI
description of the object must only use fields the CRD has.

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
import yaml
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
from signalgate.remediation.sqlite import SqliteRemediationStore
from tests.support.services import alert, rfc3339, webhook
from tests.unit.deploy.deploy_objects import Manifest, find

CRD_NAME = "remediationrequests.kubernaut.ai"
KUBERNAUT_CRD = (
    Path(__file__).parents[2] / "fixtures" / "kubernaut" / "kubernaut.ai_remediationrequests.yaml"
)


def without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [without_descriptions(v) for v in node]
    return node


def kubernaut_crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(KUBERNAUT_CRD.read_text())
    return loaded


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
async def store(tmp_path: Path) -> AsyncIterator[SqliteRemediationStore]:
    opened = SqliteRemediationStore(tmp_path / "gateway.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def made_by_the_gateway(store: SqliteRemediationStore, **labels: str) -> dict[str, Any]:
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
    return patched.resolved_at(later).to_json()


def test_our_crd_is_structurally_kubernauts(base: list[Manifest]) -> None:
    ours = find(base, "CustomResourceDefinition", CRD_NAME).obj
    theirs = kubernaut_crd()
    assert ours["metadata"]["name"] == theirs["metadata"]["name"]
    assert without_descriptions(ours["spec"]) == without_descriptions(theirs["spec"])
    (version,) = ours["spec"]["versions"]
    assert [f["jsonPath"] for f in version["selectableFields"]] == [
        ".spec.signalFingerprint",
        ".spec.signalType",
        ".spec.severity",
        ".spec.clusterID",
    ]


@pytest.mark.parametrize("which", ["ours", "kubernaut"])
async def test_the_schema_accepts_a_remediation_request_the_gateway_made(
    base: list[Manifest], store: SqliteRemediationStore, which: str
) -> None:
    schema = schema_of(base) if which == "ours" else kubernaut_schema()
    rr = await made_by_the_gateway(store, cluster="prod-eu", deployment="web")
    assert set(rr["status"]) == {
        "overallPhase",
        "completionStatus",
        "routingStatus",
        "message",
        "conditions",
        "deduplication",
    }
    assert rr["status"]["conditions"][0]["type"] == "SignalResolved"
    assert "clusterID" in rr["spec"] and "providerData" in rr["spec"]
    assert orjson.loads(rr["spec"]["providerData"])["namespace"] == "prod"
    assert errors(schema, rr) == []
    fresh = await made_by_the_gateway(store, namespace="", pod="", node="worker-1")
    assert "namespace" not in fresh["spec"]["targetResource"]  # cluster-scoped
    assert errors(schema, fresh) == []


def kubernaut_schema() -> dict[str, Any]:
    (version,) = kubernaut_crd()["spec"]["versions"]
    found: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return found


@pytest.mark.parametrize(
    "field", ["signalFingerprint", "signalName", "targetResource", "firingTime"]
)
async def test_the_schema_rejects_a_spec_without_a_required_field(
    base: list[Manifest], store: SqliteRemediationStore, field: str
) -> None:
    rr = await made_by_the_gateway(store, pod=f"api-{field.lower()}")
    del rr["spec"][field]
    assert errors(schema_of(base), rr) == [f'"{field}" is a required property']


async def test_the_schema_rejects_values_the_gateway_never_writes(
    base: list[Manifest], store: SqliteRemediationStore
) -> None:
    rr = await made_by_the_gateway(store, pod="api-values")
    for path, value in (
        (("spec", "signalFingerprint"), "not-hex"),
        (("spec", "severity"), ""),
        (("spec", "targetType"), "nagios"),
        (("status", "overallPhase"), "Done"),
        (("status", "completionStatus", "outcome"), "Fixed"),
        (("spec", "firingTime"), "yesterday"),
        (("spec", "signalLabels"), {"a": 1}),
        (("status", "deduplication", "occurrenceCount"), "2"),
    ):
        bad = copy.deepcopy(rr)
        parent = bad
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
        assert errors(schema_of(base), bad), f"{'.'.join(path)} = {value!r} was accepted"


def test_the_gateway_openapi_description_uses_only_crd_fields(base: list[Manifest]) -> None:
    crd = schema_of(base)["properties"]

    def check(api: dict[str, Any], schema: dict[str, Any], where: str) -> None:
        for key, sub in api.get("properties", {}).items():
            assert key in schema.get("properties", {}), f"{where}.{key} is not in the CRD"
            if sub.get("type") == "object" or "properties" in sub:
                check(sub, schema["properties"][key], f"{where}.{key}")

    api = SCHEMAS["RemediationRequest"]["properties"]
    for part in ("spec", "status"):
        check(api[part], crd[part], part)
        assert set(crd[part].get("required", [])) <= set(api[part].get("required", [])), part


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
    assert {"Phase", "Outcome", "Alert", "Age"} <= set(columns)
    schema = schema_of(base)
    for column in columns.values():
        path = column["jsonPath"].lstrip(".").split(".")
        if path[0] == "metadata":
            continue
        node = schema
        for key in path:
            node = node["properties"][key]
            if node.get("type") == "array":
                node = node["items"]
        expected = {"string": "string", "integer": "integer"}[node["type"]]
        assert column["type"] in (expected, "date"), column
