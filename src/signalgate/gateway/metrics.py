"""The Gateway's Prometheus metrics (docs/gateway.md, Metrics), on a registry per app instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
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
        self.request_duration = Histogram(
            "gateway_http_request_duration_seconds",
            "API request latency by route template",
            ["endpoint", "method", "status"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
        )
        self.inflight = Gauge(
            "gateway_inflight_requests", "API requests being processed", registry=registry
        )
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
