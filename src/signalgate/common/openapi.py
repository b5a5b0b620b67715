"""Building blocks of the services' hand-written OpenAPI 3.1 documents."""

from __future__ import annotations

from typing import Any

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance", "request_id"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "field_errors": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def problem_answer(description: str) -> dict[str, Any]:
    """A response that is a problem document (`components.schemas.Problem`)."""
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": ref("Problem")}},
    }


def json_answer(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}


AUTH_ERRORS = {
    "401": problem_answer("missing, malformed or unknown token"),
    "403": problem_answer("token lacks the scope"),
    "500": problem_answer("unexpected error"),
}
