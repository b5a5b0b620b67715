"""The OpenAPI 3.1 description of the DataStorage API listener, served at `/openapi.json`.

The request event schema comes from the pydantic model that validates it, so the two cannot
drift; the rest is written by hand to say exactly what the handlers answer. A schemathesis
run in the test suite holds document and handlers together.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from signalgate.common.openapi import (
    AUTH_ERRORS,
    PROBLEM_SCHEMA,
    json_answer,
    problem_answer,
    ref,
    with_connection_answers,
)
from signalgate.datastorage.events import CATEGORIES, OUTCOMES, AuditEventIn
from signalgate.datastorage.query import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, MOMENT_PATTERN

_WRITE_ERRORS = {
    **AUTH_ERRORS,
    "202": json_answer("database unavailable: events queued for replay", "Accepted"),
    "400": problem_answer("invalid event(s); `field_errors` names every bad item and field"),
    "409": problem_answer("an event_id already stored with different content"),
    "408": problem_answer("the body did not arrive within server.bodyReadTimeout"),
    "413": problem_answer("body over 5 MiB"),
    "415": problem_answer("not application/json"),
    "500": problem_answer(
        "the database and the dead-letter queue both unavailable: the events were not "
        "stored (`detail` says how many); retry"
    ),
    "503": problem_answer(
        "the batch had to be queued (the database unavailable, or a parent or an earlier "
        "write of an id waiting in the dead-letter queue) and the queue is full "
        "(dlq.maxBytes) or cannot be asked or take it now: nothing was stored nor "
        "queued; retry (`Retry-After`)"
    ),
}
_READ_ERRORS = {
    **AUTH_ERRORS,
    "400": problem_answer("invalid query parameter (named in `detail`)"),
    "503": problem_answer(
        "audit database unavailable, or more query pages and chain checks at once than "
        "server.maxConcurrentReads and server.maxQueuedReads allow, or one waited past "
        "server.readQueueTimeout, or the service is stopping; retry (`Retry-After`)"
    ),
}


def _query_parameter(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


# NUL is refused in every query value (it cannot be stored, so no event holds one); other
# characters are looked for as given
_NO_NUL = "^[^\x00]*$"
_TEXT = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": _NO_NUL}
_MOMENT = {
    "type": "string",
    "description": "RFC 3339, YYYY-MM-DD, or relative before now (90m, 24h, 7d)",
    # the three forms `query._moment` reads, so an empty or free-text value is one the
    # document refuses too (a calendar check, such as no 2024-02-30, is left to the server)
    "pattern": MOMENT_PATTERN,
}


def _stored_event_schema(request: dict[str, Any]) -> dict[str, Any]:
    properties = {
        name: _non_null(schema)
        for name, schema in request["properties"].items()
        if name != "event_timestamp"
    }
    properties["event_timestamp"] = {"type": "string", "format": "date-time"}
    properties["event_date"] = {"type": "string", "format": "date"}
    properties["event_hash"] = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
    properties["previous_event_hash"] = {"type": "string", "pattern": "^([0-9a-f]{64})?$"}
    properties["actor_ip"] = {"type": "string"}
    return {
        "type": "object",
        "required": [
            *request["required"],
            "event_id",
            "event_date",
            "event_hash",
            "previous_event_hash",
        ],
        "properties": properties,
        "additionalProperties": False,
    }


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """Stored events leave absent fields out rather than answering null."""
    for option in schema.get("anyOf", []):
        if option.get("type") != "null":
            return {k: v for k, v in option.items()}
    return {k: v for k, v in schema.items() if k not in ("title", "default", "examples")}


@cache
def openapi_document() -> dict[str, Any]:
    return with_connection_answers(_document())


def _document() -> dict[str, Any]:
    request = AuditEventIn.model_json_schema(ref_template="#/components/schemas/{model}")
    request.pop("title", None)
    schemas: dict[str, Any] = {
        "AuditEventRequest": request,
        "AuditEventBatch": {
            "type": "array",
            "items": ref("AuditEventRequest"),
            "minItems": 1,
            "maxItems": 500,
        },
        "StoredAuditEvent": _stored_event_schema(request),
        "WriteResult": {
            "type": "object",
            "required": ["event_id", "event_timestamp", "message"],
            "properties": {
                "event_id": {"type": "string", "format": "uuid"},
                "event_timestamp": {"type": "string", "format": "date-time"},
                "message": {"type": "string"},
            },
        },
        "BatchWriteResult": {
            "type": "object",
            "required": ["event_ids", "message"],
            "properties": {
                "event_ids": {"type": "array", "items": {"type": "string", "format": "uuid"}},
                "message": {"type": "string"},
            },
        },
        "Accepted": {
            "type": "object",
            "required": ["status", "message", "count"],
            "properties": {
                "status": {"const": "accepted"},
                "message": {"type": "string"},
                "count": {"type": "integer", "minimum": 1},
            },
        },
        "QueryResult": {
            "type": "object",
            "required": ["data", "pagination"],
            "properties": {
                "data": {"type": "array", "items": ref("StoredAuditEvent")},
                "pagination": {
                    "type": "object",
                    "required": ["limit", "offset", "total", "has_more"],
                    "properties": {
                        "limit": {"type": "integer"},
                        "offset": {"type": "integer"},
                        "total": {"type": "integer"},
                        "has_more": {"type": "boolean"},
                    },
                },
            },
        },
        "ChainReport": {
            "type": "object",
            "required": ["correlation_id", "events", "valid"],
            "properties": {
                "correlation_id": {"type": "string"},
                "events": {"type": "integer", "minimum": 0},
                "valid": {"type": "boolean"},
                "first_broken_event_id": {"type": "string"},
                "detail": {
                    "type": "string",
                    "description": "why the chain does not reach its recorded head",
                },
            },
        },
        "VerifyChainRequest": {
            "type": "object",
            "required": ["correlation_id"],
            "properties": {"correlation_id": {"type": "string", "minLength": 1, "maxLength": 255}},
        },
        "VerifyChainResponse": {
            "type": "object",
            "description": "Kubernaut's form of the chain report",
            "required": [
                "correlation_id",
                "is_valid",
                "total_events",
                "verified_events",
                "verification_time",
                "message",
            ],
            "properties": {
                "correlation_id": {"type": "string"},
                "is_valid": {"type": "boolean"},
                "total_events": {"type": "integer", "minimum": 0},
                "verified_events": {"type": "integer", "minimum": 0},
                "tampered_events": {"type": "array", "items": {"type": "object"}},
                "verification_time": {"type": "string", "format": "date-time"},
                "message": {"type": "string"},
            },
        },
        "Capabilities": {
            "type": "object",
            "required": ["eventTypes"],
            "properties": {"eventTypes": {"type": "array", "items": {"type": "string"}}},
        },
        "Problem": PROBLEM_SCHEMA,
    }
    security: list[dict[str, list[str]]] = [{"bearer": []}]
    query_parameters = [
        _query_parameter("correlation_id", _TEXT, "events of one correlation id"),
        _query_parameter("event_type", _TEXT, "e.g. gateway.signal.received"),
        _query_parameter(
            "event_category", {"type": "string", "enum": list(CATEGORIES)}, "category"
        ),
        _query_parameter("event_outcome", {"type": "string", "enum": list(OUTCOMES)}, "outcome"),
        _query_parameter("severity", _TEXT, "severity"),
        _query_parameter("namespace", _TEXT, "namespace"),
        _query_parameter("since", _MOMENT, "at or after"),
        _query_parameter("until", _MOMENT, "at or before (a day means through its end)"),
        _query_parameter(
            "detail_key",
            {"type": "string", "pattern": "^[A-Za-z0-9_]{1,100}$"},
            "top-level event_data string field; needs detail_value",
        ),
        _query_parameter(
            "detail_value",
            {"type": "string", "maxLength": 1000, "pattern": _NO_NUL},
            "needs detail_key",
        ),
        _query_parameter(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            "most events in the page; fewer once their event_data reaches 8 MiB (has_more "
            "then says more follow: the next offset is this one plus the events received)",
        ),
        _query_parameter(
            "offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}, ""
        ),
    ]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "signalgate DataStorage",
            "version": "1.0.0",
            "description": "Tamper-evident audit trail (Kubernaut DataStorage audit API).",
        },
        "paths": {
            "/api/v1/audit/events": {
                "post": {
                    "operationId": "writeAuditEvent",
                    "security": security,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": ref("AuditEventRequest")}},
                    },
                    "responses": {"201": json_answer("stored", "WriteResult"), **_WRITE_ERRORS},
                },
                "get": {
                    "operationId": "queryAuditEvents",
                    "security": security,
                    "parameters": query_parameters,
                    "responses": {
                        "200": json_answer("newest first", "QueryResult"),
                        **_READ_ERRORS,
                    },
                },
            },
            "/api/v1/audit/events/batch": {
                "post": {
                    "operationId": "writeAuditEventBatch",
                    "security": security,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": ref("AuditEventBatch")}},
                    },
                    "responses": {
                        "201": json_answer("stored (ids in input order)", "BatchWriteResult"),
                        **_WRITE_ERRORS,
                    },
                },
            },
            "/api/v1/audit/verify-chain": {
                "get": {
                    "operationId": "verifyChain",
                    "security": security,
                    "parameters": [
                        {
                            "name": "correlation_id",
                            "in": "query",
                            "required": True,
                            "schema": _TEXT,
                        }
                    ],
                    "responses": {
                        "200": json_answer("chain recomputed", "ChainReport"),
                        **_READ_ERRORS,
                    },
                },
                "post": {
                    "operationId": "verifyAuditChain",
                    "description": "Kubernaut's request and response shapes",
                    "security": security,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": ref("VerifyChainRequest")}},
                    },
                    "responses": {
                        "200": json_answer("chain recomputed", "VerifyChainResponse"),
                        **_READ_ERRORS,
                        "415": problem_answer("not application/json"),
                    },
                },
            },
            "/api/v1/audit/capabilities": {
                "get": {
                    "operationId": "auditCapabilities",
                    "description": "event types this DataStorage accepts; no token needed",
                    "responses": {"200": json_answer("accepted event types", "Capabilities")},
                },
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
