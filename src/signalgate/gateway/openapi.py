"""The OpenAPI 3.1 description of the Gateway's API listener, served at `/openapi.json`.

Written by hand so it says exactly what the handlers do (status codes, problem documents,
207 batches); a schemathesis run in the test suite holds the two together.
"""

from __future__ import annotations

from functools import cache
from typing import Any, get_args

from signalgate.common.openapi import (
    AUTH_ERRORS,
    PROBLEM_SCHEMA,
    json_answer,
    problem_answer,
    with_connection_answers,
)
from signalgate.gateway.fingerprint import FINGERPRINT_PATTERN
from signalgate.gateway.pipeline import OutcomeKind
from signalgate.gateway.signal import MAX_SEVERITY, MAX_SIGNAL_NAME, SignalSource
from signalgate.gateway.status_patch import MAX_TEXT
from signalgate.kube.names import (
    DNS1123_LABEL_MAX,
    DNS1123_SUBDOMAIN_MAX,
    DNS1123_SUBDOMAIN_PATTERN,
    KIND_PATTERN,
    OPTIONAL_DNS1123_LABEL_PATTERN,
)
from signalgate.remediation.model import OUTCOMES, PHASES
from signalgate.remediation.store import DEFAULT_PAGE, MAX_PAGE

_AUTH_ERRORS = {key: AUTH_ERRORS[key] for key in ("401", "403")}
_SIGNAL_ERRORS = {
    **_AUTH_ERRORS,
    "400": problem_answer("invalid payload, Content-Type syntax or X-Timestamp"),
    "408": problem_answer("the body did not arrive within server.bodyReadTimeout"),
    "413": problem_answer("body over the limit"),
    "415": problem_answer("not application/json"),
    "500": problem_answer("unexpected error"),
    "503": problem_answer(
        "too many requests in flight, the remediation store unavailable, or the audit trail behind"
    ),
    "504": problem_answer("processing deadline exceeded"),
}

_TIME = {"type": "string", "format": "date-time"}
# a namespace as the handlers check it (`is_dns1123_label`), or left empty (none given)
_OPTIONAL_NAMESPACE = {
    "maxLength": DNS1123_LABEL_MAX,
    "pattern": OPTIONAL_DNS1123_LABEL_PATTERN,
}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "Problem": PROBLEM_SCHEMA,
    "AlertmanagerWebhook": {
        "type": "object",
        "required": ["alerts"],
        "properties": {
            "version": {"type": "string"},
            "status": {"enum": ["firing", "resolved"]},
            "receiver": {"type": "string"},
            "groupKey": {"type": "string"},
            "commonLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "commonAnnotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "externalURL": {"type": "string"},
            "alerts": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["labels"],
                    "properties": {
                        "status": {"enum": ["firing", "resolved"]},
                        "labels": {
                            "type": "object",
                            "required": ["alertname"],
                            # an empty alertname is refused ("must not be empty")
                            "properties": {"alertname": {"type": "string", "minLength": 1}},
                            "additionalProperties": {"type": "string"},
                        },
                        "annotations": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                        "startsAt": _TIME,
                        "endsAt": _TIME,
                        "generatorURL": {"type": "string"},
                        "fingerprint": {"type": "string"},
                    },
                },
            },
        },
    },
    "KubernetesEvent": {
        "type": "object",
        "required": ["type", "reason", "involvedObject"],
        "properties": {
            "type": {"enum": ["Warning", "Error", "Normal"]},
            "reason": {"type": "string", "minLength": 1},
            "message": {"type": "string"},
            "involvedObject": {
                "type": "object",
                "required": ["kind", "name"],
                "properties": {
                    "kind": {"type": "string", "pattern": KIND_PATTERN},
                    "name": {"type": "string", "minLength": 1},
                    "namespace": {"type": "string", **_OPTIONAL_NAMESPACE},
                    "apiVersion": {"type": "string"},
                },
            },
            "lastTimestamp": _NULLABLE_TIME,
            "firstTimestamp": _NULLABLE_TIME,
            "eventTime": _NULLABLE_TIME,
        },
    },
    "SignalResponse": {
        "type": "object",
        "required": ["status", "message"],
        "properties": {
            "status": {"enum": list(get_args(OutcomeKind))},
            "message": {"type": "string"},
            "fingerprint": {"type": "string"},
            "duplicate": {"type": "boolean"},
            "remediationRequestName": {"type": "string"},
            "remediationRequestNamespace": {"type": "string"},
            "metadata": {
                "type": "object",
                "properties": {
                    "count": {"type": "integer"},
                    "remediationRequestRef": {"type": "string"},
                    "firstOccurrence": _TIME,
                    "lastOccurrence": _TIME,
                },
            },
            "rejection": {
                "type": "object",
                "properties": {
                    "status": {"const": "rejected"},
                    "reason": {"enum": ["unmanaged_resource", "no_target_resource"]},
                    "message": {"type": "string"},
                    "resource": {"type": "string"},
                    "action": {"type": "string"},
                },
            },
        },
    },
    "BatchResponse": {
        "type": "object",
        "required": ["results", "summary"],
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {
                            "enum": [
                                "created",
                                "duplicate",
                                "resolved",
                                "rejected",
                                "ignored",
                            ]
                        },
                        "fingerprint": {"type": "string"},
                        "remediationRequestName": {"type": "string"},
                        "message": {"type": "string"},
                        "error": {"type": "string"},
                    },
                },
            },
            "summary": {
                "type": "object",
                "required": [
                    "total",
                    "created",
                    "deduplicated",
                    "resolved",
                    "rejected",
                    "ignored",
                    "failed",
                ],
                "additionalProperties": {"type": "integer"},
            },
        },
    },
    "RemediationRequest": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec", "status"],
        "properties": {
            "apiVersion": {"const": "kubernaut.ai/v1alpha1"},
            "kind": {"const": "RemediationRequest"},
            "metadata": {
                "type": "object",
                "required": ["name", "namespace", "creationTimestamp"],
                "properties": {
                    "name": {"type": "string"},
                    "namespace": {"type": "string"},
                    "creationTimestamp": _TIME,
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "spec": {
                "type": "object",
                "required": [
                    "signalFingerprint",
                    "signalName",
                    "severity",
                    "signalType",
                    "signalSource",
                    "targetType",
                    "targetResource",
                    "firingTime",
                    "receivedTime",
                    "signalLabels",
                    "signalAnnotations",
                    "originalPayload",
                ],
                "properties": {
                    "signalFingerprint": {"type": "string", "pattern": FINGERPRINT_PATTERN},
                    "signalName": {"type": "string", "maxLength": MAX_SIGNAL_NAME},
                    "severity": {"type": "string", "maxLength": MAX_SEVERITY},
                    "signalType": {"const": "alert"},
                    "signalSource": {"enum": list(get_args(SignalSource))},
                    "targetType": {"const": "kubernetes"},
                    "targetResource": {
                        "type": "object",
                        "required": ["kind", "name"],
                        "properties": {
                            "kind": {"type": "string"},
                            "name": {"type": "string"},
                            "namespace": {"type": "string"},
                            "apiVersion": {"type": "string"},
                        },
                    },
                    "clusterID": {"type": "string"},
                    "firingTime": _TIME,
                    "receivedTime": _TIME,
                    "signalLabels": {"type": "object"},
                    "signalAnnotations": {"type": "object"},
                    "providerData": {"type": "string"},
                    "originalPayload": {"type": "string"},
                },
            },
            "status": {
                "type": "object",
                "required": ["overallPhase", "deduplication"],
                "properties": {
                    "overallPhase": {"enum": list(PHASES)},
                    "message": {"type": "string"},
                    "completionStatus": {
                        "type": "object",
                        "properties": {"outcome": {"enum": list(OUTCOMES)}},
                    },
                    "routingStatus": {
                        "type": "object",
                        "properties": {"nextAllowedExecution": _TIME},
                    },
                    "conditions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["type", "status", "lastTransitionTime"],
                            "properties": {
                                "type": {"type": "string"},
                                "status": {"enum": ["True", "False", "Unknown"]},
                                "lastTransitionTime": _TIME,
                                "reason": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                    "deduplication": {
                        "type": "object",
                        "required": ["firstSeenAt", "lastSeenAt", "occurrenceCount"],
                        "properties": {
                            "firstSeenAt": _TIME,
                            "lastSeenAt": _TIME,
                            "occurrenceCount": {"type": "integer", "minimum": 1},
                        },
                    },
                },
            },
        },
    },
    "RemediationRequestList": {
        "type": "object",
        "required": ["items", "nextCursor"],
        "properties": {
            "items": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/RemediationRequest"},
            },
            "nextCursor": {"type": ["string", "null"]},
        },
    },
    "StatusPatch": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "overallPhase": {"enum": list(PHASES)},
            "message": {"type": ["string", "null"], "maxLength": MAX_TEXT},
            "completionStatus": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": {"outcome": {"enum": [*OUTCOMES, None]}},
            },
            "routingStatus": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": {"nextAllowedExecution": _NULLABLE_TIME},
            },
        },
    },
}


def _signal_operation(summary: str, schema: str, extra_params: list[Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [{"bearer": ["signals:write"]}],
        "parameters": extra_params,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        },
        "responses": {
            "200": json_answer("rejected or ignored", "SignalResponse"),
            "201": json_answer("created a RemediationRequest", "SignalResponse"),
            "202": json_answer("duplicate or resolved", "SignalResponse"),
            **_SIGNAL_ERRORS,
        },
    }


def _with_batch(operation: dict[str, Any]) -> dict[str, Any]:
    batch = json_answer("a webhook of two or more alerts: one result per alert", "BatchResponse")
    operation["responses"] = {**operation["responses"], "207": batch}
    return operation


@cache
def openapi_document() -> dict[str, Any]:
    return with_connection_answers(_document())


def _document() -> dict[str, Any]:
    # an RR's name is a DNS-1123 subdomain: any other is no RR's (404), or a control
    # character in it is refused (400)
    rr_name = {
        "type": "string",
        "maxLength": DNS1123_SUBDOMAIN_MAX,
        "pattern": DNS1123_SUBDOMAIN_PATTERN,
    }
    name_param = {"name": "name", "in": "path", "required": True, "schema": rr_name}
    return {
        "openapi": "3.1.0",
        "info": {"title": "signalgate Gateway", "version": "0.1.0"},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/api/v1/signals/prometheus": {
                "post": _with_batch(
                    _signal_operation(
                        "Alertmanager webhook (payload version 4)",
                        "AlertmanagerWebhook",
                        [
                            {
                                "name": "X-Timestamp",
                                "in": "header",
                                "required": False,
                                "schema": {"type": "string", "pattern": "^[0-9]+$"},
                            }
                        ],
                    )
                )
            },
            "/api/v1/signals/kubernetes-event": {
                "post": _signal_operation("One Kubernetes Event", "KubernetesEvent", []),
            },
            "/api/v1/remediation-requests": {
                "get": {
                    "summary": "List RemediationRequests, newest first",
                    "security": [{"bearer": ["remediations:read"]}],
                    "parameters": [
                        {
                            "name": "fingerprint",
                            "in": "query",
                            "schema": {"type": "string", "pattern": FINGERPRINT_PATTERN},
                        },
                        {"name": "phase", "in": "query", "schema": {"enum": list(PHASES)}},
                        {
                            "name": "namespace",
                            "in": "query",
                            "description": "the target's namespace (spec.targetResource."
                            "namespace), a DNS-1123 label, e.g. payments",
                            "schema": {"type": "string", **_OPTIONAL_NAMESPACE},
                        },
                        {"name": "active", "in": "query", "schema": {"enum": ["true", "false"]}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_PAGE,
                                "default": DEFAULT_PAGE,
                            },
                        },
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": json_answer("a page of RRs", "RemediationRequestList"),
                        "400": problem_answer("bad filter, limit or cursor"),
                        **_AUTH_ERRORS,
                        "503": problem_answer(
                            "remediation store unavailable, or more list pages at once than "
                            "server.maxConcurrentReads and server.maxQueuedReads allow, or "
                            "one waited past server.readQueueTimeout, or the service is "
                            "stopping; retry (`Retry-After`)"
                        ),
                    },
                }
            },
            "/api/v1/remediation-requests/{name}": {
                "get": {
                    "summary": "One RemediationRequest",
                    "security": [{"bearer": ["remediations:read"]}],
                    "parameters": [name_param],
                    "responses": {
                        "200": json_answer("the RR", "RemediationRequest"),
                        "400": problem_answer("a control character in the name"),
                        "404": problem_answer("no such RR"),
                        **_AUTH_ERRORS,
                        "503": problem_answer("remediation store unavailable"),
                    },
                }
            },
            "/api/v1/remediation-requests/{name}/status": {
                "patch": {
                    "summary": "Set a RemediationRequest's phase, outcome, cool-down or message",
                    "security": [{"bearer": ["remediations:write"]}],
                    "parameters": [name_param],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/merge-patch+json": {
                                "schema": {"$ref": "#/components/schemas/StatusPatch"}
                            },
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/StatusPatch"}
                            },
                        },
                    },
                    "responses": {
                        "200": json_answer("the updated RR", "RemediationRequest"),
                        "400": problem_answer("a field that cannot be set, or a bad value"),
                        "404": problem_answer("no such RR"),
                        "408": problem_answer("the body did not arrive in time"),
                        "409": problem_answer("would leave two active RRs for one fingerprint"),
                        "413": problem_answer("body over the limit"),
                        "415": problem_answer("not JSON"),
                        **_AUTH_ERRORS,
                        "503": problem_answer("remediation store unavailable"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1"}},
                }
            },
        },
    }
