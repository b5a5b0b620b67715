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


# What the connection layer may answer on any route before the route's own code runs (the
# request envelope in `common.http`, the head bound in `common.http_protocol`): every
# operation lists these, so a client generated from the document knows them.
CONNECTION_ANSWERS = {
    "400": problem_answer(
        "Authorization or Content-Type given twice; a control character or an encoded '/' "
        "in the path or query"
    ),
    "405": problem_answer("a method this path does not serve (the answer's Allow lists them)"),
    "415": problem_answer("a compressed body (Content-Encoding other than identity)"),
    "431": problem_answer("a request line and headers over 64 KiB"),
    "500": problem_answer("unexpected error"),
    "501": problem_answer(
        "a Transfer-Encoding with a coding besides chunked before it (gzip, chunked)"
    ),
}


def with_connection_answers(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with `CONNECTION_ANSWERS` added to each operation that does not describe
    that status itself."""
    for operations in document["paths"].values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, answer in CONNECTION_ANSWERS.items():
                responses.setdefault(status, answer)
    return document
