"""DataStorage metrics (docs/datastorage.md, "Configuration and commands"), on the app's own
registry so several instances in one process (tests) never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from signalgate.common.reads import ReadMetrics
from signalgate.common.request_metrics import RequestMetrics


class DataStorageMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.writes = Counter(
            "datastorage_audit_writes",
            "Audit events by write outcome (stored, existing, dead_lettered, rejected, "
            "conflict, unconfirmed, queue_full, lost)",
            ["outcome"],
            registry=registry,
        )
        self.write_duration = Histogram(
            "datastorage_audit_write_duration_seconds",
            "Time to handle one write request (single event or batch)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        # every request, by route template, method and status (common.request_metrics): a
        # refused writer (401/403 after a token rotation) or failing writes show here
        self.requests = RequestMetrics("datastorage", registry)
        # costly reads running, waiting, and refused for their bound (common.reads)
        self.reads = ReadMetrics("datastorage", registry)
        self.auth_reviews_refused = Counter(
            "datastorage_auth_reviews_refused_total",
            "Auth reviews (TokenReview, SubjectAccessReview) the Kubernetes API server refused "
            "DataStorage's own ServiceAccount: its RBAC lacks create on them, and every "
            "authenticated request is a 503 until granted",
            ["review"],
            registry=registry,
        )
        self.dlq_depth = Gauge(
            "audit_dlq_depth", "Events waiting in the dead-letter queue", registry=registry
        )
        self.dlq_replayed = Counter(
            "audit_dlq_replayed",
            "Events replayed from the dead-letter queue into the database",
            registry=registry,
        )
        self.dlq_dead = Counter(
            "audit_dlq_dead",
            "Events moved to the dead stream after their last replay attempt",
            registry=registry,
        )
