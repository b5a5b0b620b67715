"""RFC 9457 problem documents: the one error shape of every signalgate HTTP API.

Handlers raise `Problem`; one exception handler per app renders it. The `type` is
`https://kubernaut.ai/problems/<slug>` and the title is the status' HTTP reason phrase
("Bad Request", ...), as Kubernaut's services write them, so a client of either project reads
our errors; both are decided here and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from signalgate.common.logging import request_id_var

PROBLEM_MEDIA_TYPE = "application/problem+json"

PROBLEM_TYPE_BASE = "https://kubernaut.ai/problems/"

# slug → (status, title): each slug has one status, and its title is that status' HTTP
# reason phrase, as in Kubernaut. Call sites still say the status (readable where raised);
# `Problem` refuses one that disagrees with this table, so the rule has one home.
PROBLEMS: dict[str, tuple[int, str]] = {
    "validation-error": (400, "Bad Request"),
    "batch-size-exceeded": (400, "Bad Request"),
    "unauthorized": (401, "Unauthorized"),
    "forbidden": (403, "Forbidden"),
    "not-found": (404, "Not Found"),
    "method-not-allowed": (405, "Method Not Allowed"),
    "request-timeout": (408, "Request Timeout"),
    "conflict": (409, "Conflict"),
    "payload-too-large": (413, "Request Entity Too Large"),  # Kubernaut's title
    "unsupported-media-type": (415, "Unsupported Media Type"),
    "request-header-fields-too-large": (431, "Request Header Fields Too Large"),
    # nginx's: the client went away before its answer (nobody reads it; metrics and logs do)
    "client-closed-request": (499, "Client Closed Request"),
    "internal-error": (500, "Internal Server Error"),
    "not-implemented": (501, "Not Implemented"),
    "service-unavailable": (503, "Service Unavailable"),
    "gateway-timeout": (504, "Gateway Timeout"),
}
TITLES: dict[str, str] = {slug: title for slug, (_, title) in PROBLEMS.items()}


def check_status(status: int, slug: str) -> None:
    """Raise `ValueError` (a bug in the caller) for an unknown slug or a status not its own."""
    if slug not in PROBLEMS:
        raise ValueError(f"unknown problem slug {slug!r}")
    if PROBLEMS[slug][0] != status:
        raise ValueError(
            f"problem {slug!r} is status {PROBLEMS[slug][0]}, not {status} "
            "(common/problems.py PROBLEMS)"
        )


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
        check_status(status, slug)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def to_response(self, instance: str) -> Response:
        return problem_response(
            self.status, self.slug, self.detail, instance, headers=self.headers, extra=self.extra
        )


def problem_document(
    status: int,
    slug: str,
    detail: str,
    instance: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The problem document itself (what `problem_response` sends as its body)."""
    check_status(status, slug)
    body: dict[str, Any] = {
        "type": f"{PROBLEM_TYPE_BASE}{slug}",
        "title": TITLES[slug],
        "status": status,
        "detail": detail,
        "instance": instance,
        "request_id": request_id_var.get() or "",
    }
    body.update(extra or {})
    return body


def problem_response(
    status: int,
    slug: str,
    detail: str,
    instance: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    return Response(
        orjson.dumps(problem_document(status, slug, detail, instance, extra)),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_MEDIA_TYPE,
    )


# `<field>: <why>`, the form a 400's detail takes when one field is wrong (a field path has
# no spaces: `alerts[0].labels.namespace`, `X-Timestamp`, `limit`)
_FIELD_DETAIL = re.compile(r"^([^\s:]+): (.+)$", re.DOTALL)


def service_unavailable(detail: str, retry_after: int = 5) -> Problem:
    """503 with `Retry-After`: nothing was done, and trying again later may succeed."""
    return Problem(503, "service-unavailable", detail, headers={"Retry-After": str(retry_after)})


def validation_error(detail: str, **extra: Any) -> Problem:
    """400 naming what was wrong. A detail of the form `<field>: <why>` also gives
    `field_errors` (`{field: why}`), as DataStorage's validation does, so a client can read
    the field without parsing text — unless the caller passes its own."""
    if "field_errors" not in extra and (named := _FIELD_DETAIL.match(detail)):
        extra["field_errors"] = {named.group(1): named.group(2)}
    return Problem(400, "validation-error", detail, extra=extra)
