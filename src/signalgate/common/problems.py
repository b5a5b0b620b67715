"""RFC 9457 problem documents: the one error shape of every signalgate HTTP API.

Handlers raise `Problem`; one exception handler per app renders it. The `type` is
`https://kubernaut.ai/problems/<slug>` and the title is the status' HTTP reason phrase
("Bad Request", ...), as Kubernaut's services write them, so a client of either project reads
our errors; both are decided here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from signalgate.common.logging import request_id_var

PROBLEM_MEDIA_TYPE = "application/problem+json"

PROBLEM_TYPE_BASE = "https://kubernaut.ai/problems/"

# slug → title; a title is the HTTP reason phrase of the slug's status, as in Kubernaut
TITLES: dict[str, str] = {
    "validation-error": "Bad Request",
    "batch-size-exceeded": "Bad Request",
    "unauthorized": "Unauthorized",
    "forbidden": "Forbidden",
    "not-found": "Not Found",
    "method-not-allowed": "Method Not Allowed",
    "request-timeout": "Request Timeout",
    "conflict": "Conflict",
    "payload-too-large": "Payload Too Large",
    "unsupported-media-type": "Unsupported Media Type",
    "too-many-requests": "Too Many Requests",
    "internal-error": "Internal Server Error",
    "service-unavailable": "Service Unavailable",
    "gateway-timeout": "Gateway Timeout",
}


class Problem(Exception):
    """An HTTP error answer. `extra` adds members (e.g. `field_errors`) to the document."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        if slug not in TITLES:
            raise ValueError(f"unknown problem slug {slug!r}")
        self.status = status
        self.slug = slug
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def to_response(self, instance: str) -> Response:
        return problem_response(
            self.status, self.slug, self.detail, instance, headers=self.headers, extra=self.extra
        )


def problem_response(
    status: int,
    slug: str,
    detail: str,
    instance: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": f"{PROBLEM_TYPE_BASE}{slug}",
        "title": TITLES[slug],
        "status": status,
        "detail": detail,
        "instance": instance,
        "request_id": request_id_var.get() or "",
    }
    body.update(extra or {})
    return Response(
        orjson.dumps(body),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_MEDIA_TYPE,
    )


def validation_error(detail: str, **extra: Any) -> Problem:
    return Problem(400, "validation-error", detail, extra=extra)
