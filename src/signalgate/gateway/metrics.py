"""The Gateway's Prometheus metrics (docs/gateway.md, Metrics), on a registry per app instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from signalgate.common.metric_labels import OTHER, LabelledChildren
from signalgate.common.reads import ReadMetrics
from signalgate.common.request_metrics import RequestMetrics


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.child = LabelledChildren()  # `child(metric, *values)`: its labelled child
        self.signal_name_label = FirstSeen()
        self.signals_received = Counter(
            "gateway_signals_received_total",
            "Signals received, by source and severity",
            ["source_type", "severity"],
            registry=registry,
        )
        self.signals_deduplicated = Counter(
            "gateway_signals_deduplicated_total",
            "Signals folded into an existing RR",
            ["signal_name"],
            registry=registry,
        )
        self.crds_created = Counter(
            "gateway_crds_created_total",
            "RemediationRequests created",
            ["source_type", "status"],
            registry=registry,
        )
        self.crd_creation_errors = Counter(
            "gateway_crd_creation_errors_total",
            "RemediationRequests that could not be stored",
            ["error_type"],
            registry=registry,
        )
        self.signals_rejected = Counter(
            "gateway_signals_rejected_total",
            "Signals rejected, by reason",
            ["reason"],
            registry=registry,
        )
        self.signals_resolved = Counter(
            "gateway_signals_resolved_total",
            "Resolved notices recorded on an active RR",
            registry=registry,
        )
        self.signals_ignored = Counter(
            "gateway_signals_ignored_total",
            "Notices that needed no action",
            ["source_type"],
            registry=registry,
        )
        self.requests = RequestMetrics("gateway", registry)
        # RR list pages running, waiting, and refused for their bound (common.reads)
        self.reads = ReadMetrics("gateway", registry)
        # Kubernaut's four, under its names. Standalone, owner resolution and API discovery
        # do not run, so those two stay at zero until Kubernetes mode counts them.
        self.owner_resolution = Counter(
            "gateway_owner_resolution_total",
            "Owner-reference walks, by resource kind and outcome (success, failed)",
            ["kind", "outcome"],
            registry=registry,
        )
        self.signals_parse_dropped = Counter(
            "gateway_signals_parse_dropped_total",
            "Alerts of a multi-alert webhook dropped while parsing (their own 207 result)",
            ["reason"],
            registry=registry,
        )
        self.auth_reviews_refused = Counter(
            "gateway_auth_reviews_refused_total",
            "Auth reviews (TokenReview, SubjectAccessReview) the Kubernetes API server refused "
            "the Gateway's own ServiceAccount: its RBAC lacks create on them, and every "
            "authenticated request is a 503 until granted",
            ["review"],
            registry=registry,
        )
        self.discovery_refresh_errors = Counter(
            "gateway_discovery_refresh_errors_total",
            "Failed refreshes of the Kubernetes API discovery (the kinds alerts may name)",
            registry=registry,
        )
        self.circuit_breaker_state = Gauge(
            "gateway_circuit_breaker_state",
            "Circuit state of a downstream (0 closed, 1 half-open, 2 open); `datastorage`: "
            "open while audit delivery cannot reach DataStorage",
            ["name"],
            registry=registry,
        )


# -- label values from closed sets (common.metric_labels) ----------------------------------

SEVERITIES = frozenset({"critical", "high", "warning", "medium", "low", "info", "error", "unknown"})


def severity_label(severity: str) -> str:
    """`critical`, `warning`, … (case-insensitive; Kubernetes' `Warning`/`Error` included),
    else `other`."""
    folded = severity.strip().lower()
    return folded if folded in SEVERITIES else OTHER


class FirstSeen:
    """Keeps the first `limit` distinct values of an open label (e.g. alert names), then
    answers `other`: the common names stay visible, the series count stays bounded."""

    def __init__(self, limit: int = 200) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self.limit:
            self._seen.add(value)
            return value
        return OTHER
