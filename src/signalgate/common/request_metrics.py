"""Each API request's latency by route template, method and status, and the requests in
flight: the `RequestObserver` both services give their envelope (`common.http`).

Every label comes from a closed set — the route's template (never the raw path, `unmatched`
for none), the method (`other` beyond the usual seven), the status code — so no request can
add series without bound (common.metric_labels).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram
from starlette.types import Scope

from signalgate.common.metric_labels import OTHER, LabelledChildren

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


class RequestMetrics:
    """`<service>_http_request_duration_seconds{endpoint, method, status}` and
    `<service>_inflight_requests` on `registry`."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            f"{service}_http_request_duration_seconds",
            "API request latency by route template",
            ["endpoint", "method", "status"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
        )
        self.inflight = Gauge(
            f"{service}_inflight_requests", "API requests being processed", registry=registry
        )
        self._child = LabelledChildren()

    def started(self) -> None:
        self.inflight.inc()

    def finished(self, scope: Scope, status: int, seconds: float) -> None:
        self.inflight.dec()
        route = getattr(scope.get("route"), "path", "unmatched")
        method = method_label(scope["method"])
        self._child(self.duration, route, method, str(status)).observe(seconds)
