"""The ops listener: liveness, readiness and Prometheus metrics on their own port.

Kept apart from the API listener so probes and scrapes need no token and are never
queued behind API traffic or its concurrency limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from signalgate.common.http import Envelope, problem_app
from signalgate.common.problems import problem_response


@dataclass
class Readiness:
    """What `/readyz` reports: ready or not, why, and the state of each dependency."""

    ready: bool
    reason: str = ""
    checks: dict[str, Any] = field(default_factory=dict)


ReadinessProbe = Callable[[], Awaitable[Readiness]]


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def healthy_response() -> Response:
    """`/healthz`'s answer for a live process."""
    body = {"status": "healthy", "timestamp": now_rfc3339()}
    return Response(orjson.dumps(body), media_type="application/json")


def readiness_response(state: Readiness, path: str) -> Response:
    """`/readyz`'s answer: 200 with each dependency's state, or a 503 problem saying why
    (with `Retry-After`), the same from a service and from a workers' supervisor."""
    if state.ready:
        body = {"status": "ready", "timestamp": now_rfc3339(), "checks": state.checks}
        return Response(orjson.dumps(body), media_type="application/json")
    return problem_response(
        503,
        "service-unavailable",
        state.reason,
        path,
        headers={"Retry-After": "5"},
        extra={"status_text": "not ready", "checks": state.checks},
    )


def probe_routes(readiness: ReadinessProbe) -> list[Route]:
    """`/healthz` and `/readyz`: on the ops listener, and on DataStorage's API listener too,
    where Kubernaut's services probe it (no token, like the ops listener)."""

    async def healthz(request: Request) -> Response:
        return healthy_response()

    async def readyz(request: Request) -> Response:
        return readiness_response(await readiness(), request.url.path)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]


Endpoint = Callable[[Request], Awaitable[Response]]


def build_ops_app(readiness: ReadinessProbe, registry: CollectorRegistry) -> Starlette:
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    healthz, readyz = (route.endpoint for route in probe_routes(readiness))
    return ops_app(healthz, readyz, metrics)


def ops_app(healthz: Endpoint, readyz: Endpoint, metrics: Endpoint) -> Starlette:
    """The ops listener's routes, a service's or a workers' supervisor's: the probes, also
    under Kubernaut's health-server paths (for probes and charts written for it), and
    metrics; 404 and 405 as problem documents, as on the API listeners (Starlette's are
    text, and the supervisor's were until an outside check). Behind the API listeners'
    `Envelope`: a request id (its problem documents carried an empty one) and the security
    headers, and the same refusals of a malformed target."""
    app = problem_app(
        [
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/health", healthz, methods=["GET"]),
            Route("/health/live", healthz, methods=["GET"]),
            Route("/health/ready", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lambda exc: None,
        (),
    )
    app.add_middleware(Envelope)
    return app
