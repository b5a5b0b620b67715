"""What a handler refuses for its form alone, the served OpenAPI document refuses too.

A long schemathesis run (`positive_data_acceptance`) found values the documents admitted and
the services answered with 400: an empty or free-text `since`, a kind of `0`, an empty
alertname, a namespace in capitals. A client generated from the document, or one checking
its requests against it, learnt of the rule only from the refusal. (Rules beyond a value's
form stay the server's: a calendar date that does not exist, a timestamp too old.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jsonschema_rs
import pytest

from signalgate.datastorage import openapi as ds_openapi
from signalgate.datastorage.query import InvalidParameter, parse_query
from signalgate.gateway import openapi as gw_openapi

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)


def admits(document: dict[str, Any], schema: dict[str, Any], instance: object) -> bool:
    """Whether `schema` (its `$ref`s resolved inside `document`) admits `instance`."""
    full = {**schema, "components": document["components"]}
    return bool(jsonschema_rs.validator_for(full).is_valid(instance))


def query_parameter(document: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    for parameter in document["paths"][path]["get"]["parameters"]:
        if parameter["name"] == name:
            schema: dict[str, Any] = parameter["schema"]
            return schema
    raise AssertionError(f"{path} documents no {name}")


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize(
    ("value", "parses"),
    [
        ("", False),
        ("yesterday", False),
        ("24 h", False),
        ("2024-05", False),
        ("2024-05-01 12:00:00Z", False),
        ("2024-05-01T12:00:00", False),  # no offset
        ("٢٠٢٤-05-01", False),  # digits of another script
        ("90m", True),
        ("7d", True),
        ("2024-05-01", True),
        ("2024-05-01T12:00:00Z", True),
        ("2024-05-01t12:00:00.123456789+02:00", True),
    ],
)
def test_the_audit_query_document_refuses_a_moment_the_query_refuses(
    name: str, value: str, parses: bool
) -> None:
    document = ds_openapi.openapi_document()
    schema = query_parameter(document, "/api/v1/audit/events", name)
    assert admits(document, schema, value) is parses
    if parses:
        parse_query({name: [value]}, NOW)
    else:
        with pytest.raises(InvalidParameter):
            parse_query({name: [value]}, NOW)


def kubernetes_event(**involved: str) -> dict[str, Any]:
    target = {"kind": "Pod", "name": "api-1", "namespace": "prod", **involved}
    return {"type": "Warning", "reason": "BackOff", "involvedObject": target}


def webhook(**labels: str) -> dict[str, Any]:
    return {"alerts": [{"labels": {"alertname": "HighCPU", **labels}}]}


GATEWAY_BODIES = [
    ("KubernetesEvent", kubernetes_event(), True),
    ("KubernetesEvent", kubernetes_event(kind="Deployment"), True),
    ("KubernetesEvent", kubernetes_event(namespace=""), True),  # none given
    ("KubernetesEvent", kubernetes_event(kind="0"), False),
    ("KubernetesEvent", kubernetes_event(kind="apps/Deployment"), False),
    ("KubernetesEvent", kubernetes_event(kind="K" * 64), False),
    ("KubernetesEvent", kubernetes_event(namespace="Prod"), False),
    ("KubernetesEvent", kubernetes_event(namespace="c1:prod"), False),
    ("AlertmanagerWebhook", webhook(), True),
    ("AlertmanagerWebhook", webhook(alertname=""), False),
]


@pytest.mark.parametrize(("schema", "body", "admitted"), GATEWAY_BODIES)
def test_the_gateway_document_refuses_a_target_the_adapters_refuse(
    schema: str, body: dict[str, Any], admitted: bool
) -> None:
    document = gw_openapi.openapi_document()
    assert admits(document, {"$ref": f"#/components/schemas/{schema}"}, body) is admitted


@pytest.mark.parametrize(("value", "admitted"), [("", True), ("payments", True), ("Prod", False)])
def test_the_rr_list_documents_its_namespace_rule(value: str, admitted: bool) -> None:
    document = gw_openapi.openapi_document()
    schema = query_parameter(document, "/api/v1/remediation-requests", "namespace")
    assert admits(document, schema, value) is admitted


@pytest.mark.parametrize(
    ("value", "admitted"),
    [("rr-5b6293e8576a-65b5881e", True), ("a.b", True), ("RR-1", False), ("rr\x07", False)],
)
def test_the_rr_routes_document_an_rr_name(value: str, admitted: bool) -> None:
    # a control character in it is answered 400, any other name no RR has 404
    document = gw_openapi.openapi_document()
    for path, operations in document["paths"].items():
        if "{name}" in path:
            for operation in operations.values():
                (parameter,) = operation["parameters"]
                assert admits(document, parameter["schema"], value) is admitted, path


@pytest.mark.parametrize(
    "name", ["correlation_id", "event_type", "severity", "namespace", "detail_value"]
)
@pytest.mark.parametrize(("value", "admitted"), [("a\x00b", False), ("a\x07\tb ☃", True)])
def test_the_audit_query_document_refuses_a_nul_as_the_query_does(
    name: str, value: str, admitted: bool
) -> None:
    # NUL cannot be stored, so it is refused; any other character is looked for as given
    document = ds_openapi.openapi_document()
    schema = query_parameter(document, "/api/v1/audit/events", name)
    assert admits(document, schema, value) is admitted
    params = {name: [value], **({"detail_key": ["k"]} if name == "detail_value" else {})}
    if admitted:
        parse_query(params, NOW)
    else:
        with pytest.raises(InvalidParameter):
            parse_query(params, NOW)
    chain = query_parameter(document, "/api/v1/audit/verify-chain", "correlation_id")
    assert admits(document, chain, value) is admitted
