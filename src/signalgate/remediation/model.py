"""The RemediationRequest: its phases, its parts, and its Kubernetes-shaped JSON form.

Field names follow the `kubernaut.ai/v1alpha1` RemediationRequest CRD so downstream
controllers can read our objects unchanged. The phase rule (which phases are terminal)
lives here and only here; stores persist the `active` flag it computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

API_VERSION = "kubernaut.ai/v1alpha1"
KIND = "RemediationRequest"
MANAGED_BY_LABELS = {
    "app.kubernetes.io/managed-by": "signalgate-gateway",
    "app.kubernetes.io/component": "remediation",
}

INITIAL_PHASE = "Pending"
TERMINAL_PHASES = frozenset({"Completed", "Failed", "TimedOut", "Skipped", "Cancelled"})
MANUAL_REVIEW_OUTCOME = "ManualReviewRequired"

# What a consumer may set through the status PATCH; `deduplication` is the Gateway's own.
PATCHABLE_STATUS_FIELDS = ("overallPhase", "outcome", "nextAllowedExecution", "message")


def is_active(phase: str) -> bool:
    """Every phase that is not terminal is active, unknown ones included (the safe side:
    an unknown phase keeps deduplicating rather than opening a second remediation)."""
    return phase not in TERMINAL_PHASES


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a `Z`: sortable as text, exact on round trip."""
    if value.utcoffset():
        value = value.astimezone(UTC)
    # isoformat is several times faster than strftime on this hot path
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    """Inverse of `format_time`; accepts any RFC 3339 offset and returns an aware UTC value."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class TargetResource:
    kind: str
    name: str
    namespace: str = ""  # empty for cluster-scoped kinds
    api_version: str = ""

    def to_json(self) -> dict[str, str]:
        out = {"kind": self.kind, "name": self.name}
        if self.namespace:
            out["namespace"] = self.namespace
        if self.api_version:
            out["apiVersion"] = self.api_version
        return out


@dataclass(frozen=True)
class Deduplication:
    first_seen_at: datetime
    last_seen_at: datetime
    occurrence_count: int


@dataclass(frozen=True)
class RemediationRequest:
    """One RR as the stores hold it. `spec` is the immutable JSON spec made at creation."""

    name: str
    namespace: str
    fingerprint: str
    created_at: datetime
    spec: dict[str, Any]
    deduplication: Deduplication
    overall_phase: str = INITIAL_PHASE
    outcome: str | None = None
    next_allowed_execution: datetime | None = None
    message: str | None = None
    signal_resolved_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=lambda: dict(MANAGED_BY_LABELS))

    @property
    def active(self) -> bool:
        return is_active(self.overall_phase)

    @property
    def target_namespace(self) -> str:
        return str(self.spec.get("targetResource", {}).get("namespace", ""))

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def with_status(self, **changes: Any) -> RemediationRequest:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The object as the Kubernetes API would return it."""
        status: dict[str, Any] = {
            "overallPhase": self.overall_phase,
            "deduplication": {
                "firstSeenAt": format_time(self.deduplication.first_seen_at),
                "lastSeenAt": format_time(self.deduplication.last_seen_at),
                "occurrenceCount": self.deduplication.occurrence_count,
            },
        }
        if self.outcome is not None:
            status["outcome"] = self.outcome
        if self.next_allowed_execution is not None:
            status["nextAllowedExecution"] = format_time(self.next_allowed_execution)
        if self.message is not None:
            status["message"] = self.message
        if self.signal_resolved_at is not None:
            status["signalResolvedAt"] = format_time(self.signal_resolved_at)
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "creationTimestamp": format_time(self.created_at),
                "labels": dict(self.labels),
            },
            "spec": self.spec,
            "status": status,
        }


class Unset:
    """Marker for 'not in the patch' (distinct from null, which clears)."""

    _instance: Unset | None = None

    def __new__(cls) -> Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


@dataclass(frozen=True)
class StatusPatch:
    """A consumer's status change, already validated. `UNSET` fields are left alone;
    `None` clears an optional field (JSON merge patch semantics)."""

    overall_phase: str | None = None
    outcome: str | Unset | None = UNSET
    next_allowed_execution: datetime | Unset | None = UNSET
    message: str | Unset | None = UNSET

    def apply(self, rr: RemediationRequest) -> RemediationRequest:
        changes: dict[str, Any] = {}
        if self.overall_phase is not None:
            changes["overall_phase"] = self.overall_phase
        for name in ("outcome", "next_allowed_execution", "message"):
            value = getattr(self, name)
            if not isinstance(value, Unset):
                changes[name] = value
        return rr.with_status(**changes)
