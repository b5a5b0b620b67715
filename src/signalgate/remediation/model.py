"""The RemediationRequest: its phases, its parts, and its Kubernetes-shaped JSON form.

The layout is Kubernaut's current `kubernaut.ai/v1alpha1` RemediationRequest, so downstream
controllers read our objects unchanged and we read theirs: the consumer-owned status fields
sit where Kubernaut puts them (`status.completionStatus.outcome`,
`status.routingStatus.nextAllowedExecution`), and a resolved notice is the `SignalResolved`
condition rather than a field Kubernaut's schema would prune. The phase rule (which phases
are terminal) lives here and only here; stores persist the `active` flag it computes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

API_VERSION = "kubernaut.ai/v1alpha1"
KIND = "RemediationRequest"
MANAGED_BY_LABELS = {
    "app.kubernetes.io/managed-by": "gateway-service",
    "app.kubernetes.io/component": "remediation",
}
CREATED_AT_ANNOTATION = "kubernaut.ai/created-at"

INITIAL_PHASE = "Pending"
# Kubernaut's `overallPhase` enum, active phases first. A status PATCH takes only these.
ACTIVE_PHASES = (
    "Pending",
    "Processing",
    "Analyzing",
    "AwaitingApproval",
    "Executing",
    "Verifying",
    "Blocked",
)
TERMINAL_PHASES = frozenset({"Completed", "Failed", "TimedOut", "Skipped", "Cancelled"})
PHASES = (*ACTIVE_PHASES, "Completed", "Failed", "TimedOut", "Skipped", "Cancelled")
MANUAL_REVIEW_OUTCOME = "ManualReviewRequired"
# Kubernaut's `completionStatus.outcome` enum.
OUTCOMES = (
    "Remediated",
    "NoActionRequired",
    MANUAL_REVIEW_OUTCOME,
    "VerificationTimedOut",
    "Inconclusive",
    "DryRun",
)

# The condition a resolved notice sets (True) and a later firing duplicate clears (False).
SIGNAL_RESOLVED = "SignalResolved"


def is_active(phase: str) -> bool:
    """Every phase that is not terminal is active, unknown ones included (the safe side:
    an unknown phase keeps deduplicating rather than opening a second remediation)."""
    return phase not in TERMINAL_PHASES


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a `Z`: sortable as text, exact on round trip."""
    if value.tzinfo is UTC:  # the usual case (utcnow(), the stores' values): one call
        return value.isoformat(timespec="microseconds")[:-6] + "Z"
    if value.utcoffset():
        value = value.astimezone(UTC)
    # isoformat is several times faster than strftime on this hot path
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    """Inverse of `format_time`; accepts any RFC 3339 offset and returns an aware UTC value.
    RFC 3339 allows a lowercase `t` and `z`, and the Kubernetes API server stores such a
    date-time as written (a hand edit of a cool-down); `fromisoformat` takes neither. A time
    whose UTC instant is past year 9999 or before year 1 (`9999-12-31T23:59:59-01:00`, which
    the API server takes) reads as the last or first instant Python holds."""
    parsed = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        ahead = parsed.year == datetime.max.year
        return (datetime.max if ahead else datetime.min).replace(tzinfo=UTC)


# `status.deduplication.occurrenceCount` is an int32 in Kubernaut's types
MAX_OCCURRENCE_COUNT = 2**31 - 1


@dataclass(frozen=True)
class TargetResource:
    kind: str
    name: str
    namespace: str = ""  # empty for cluster-scoped kinds
    api_version: str = ""

    @property
    def key(self) -> str:
        """`<namespace>:<Kind>:<name>` (the namespace empty for cluster-scoped kinds): what the
        fingerprint hashes, and how Kubernaut names a resource in messages and ids."""
        return f"{self.namespace}:{self.kind}:{self.name}"

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
class SignalResolved:
    """The `SignalResolved` condition: `resolved` since `since` (its lastTransitionTime)."""

    resolved: bool
    since: datetime

    def to_json(self) -> dict[str, str]:
        if self.resolved:
            reason, message = "ResolvedNoticeReceived", "the signal source reported it resolved"
        else:
            reason, message = "SignalFiringAgain", "the signal fired again after it was resolved"
        return {
            "type": SIGNAL_RESOLVED,
            "status": "True" if self.resolved else "False",
            "lastTransitionTime": format_time(self.since),
            "reason": reason,
            "message": message,
        }


@dataclass(frozen=True)
class RemediationRequest:
    """One RR as the stores hold it. `spec` is the immutable JSON spec made at creation.

    `extra_status` and `extra_metadata` carry what other writers put on a Kubernetes object
    (a controller's own status fields, `resourceVersion`, `uid`), so reading and returning
    the object loses none of it; the SQL stores leave them empty. They take no part in
    equality: two reads of one RR are equal when every field signalgate owns is.
    """

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
    signal_resolved: SignalResolved | None = None
    labels: dict[str, str] = field(default_factory=lambda: dict(MANAGED_BY_LABELS))
    extra_status: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    extra_metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def active(self) -> bool:
        return is_active(self.overall_phase)

    def suppresses(self, now: datetime) -> bool:
        """Whether this RR holds back a new one for its fingerprint (deduplication rules 2
        and 3): terminal, and awaiting manual review or cooling down past `now`."""
        if self.active:
            return False
        if self.outcome == MANUAL_REVIEW_OUTCOME:
            return True
        return self.next_allowed_execution is not None and self.next_allowed_execution > now

    @property
    def target_namespace(self) -> str:
        return str(self.spec.get("targetResource", {}).get("namespace", ""))

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def with_status(self, **changes: Any) -> RemediationRequest:
        return replace(self, **changes)

    def counted_as(self, occurrence_count: int) -> RemediationRequest:
        """This RR as one of several signals counted in one write saw it: with the count
        its own signal made. Each caller of a coalesced write reports its own count (the
        answer's `count`, the audit event's `occurrence_count`), not the batch's last, so
        the audit trail tells the sightings apart (an outside check found two events with
        occurrence 4 and none with 3)."""
        dedup = self.deduplication
        if dedup.occurrence_count == occurrence_count:
            return self
        return replace(self, deduplication=replace(dedup, occurrence_count=occurrence_count))

    def seen_again(self, times: int, now: datetime) -> RemediationRequest:
        """`times` more firing duplicates, the last at `now`: the count moves on and a
        `SignalResolved=True` condition turns False (the problem is back)."""
        resolved = self.signal_resolved
        if resolved is not None and resolved.resolved:
            resolved = SignalResolved(False, now)
        dedup = self.deduplication
        return replace(
            self,
            deduplication=Deduplication(
                dedup.first_seen_at,
                max(dedup.last_seen_at, now),
                # held at Kubernaut's int32 (its Go type): one more was stored as 2**31 (the
                # API server does not check an integer's format), an RR Kubernaut's
                # controllers cannot decode; reached by a hand edit of the count
                min(dedup.occurrence_count + times, MAX_OCCURRENCE_COUNT),
            ),
            signal_resolved=resolved,
        )

    def resolved_at(self, now: datetime) -> RemediationRequest:
        """A resolved notice at `now`: `SignalResolved=True`, its time kept if already so."""
        if self.signal_resolved is not None and self.signal_resolved.resolved:
            return self
        return replace(self, signal_resolved=SignalResolved(True, now))

    def status_json(self) -> dict[str, Any]:
        """`status` as Kubernaut lays it out, over whatever else the object's status holds."""
        status: dict[str, Any] = {key: value for key, value in self.extra_status.items()}
        status["overallPhase"] = self.overall_phase
        status["deduplication"] = {
            "firstSeenAt": format_time(self.deduplication.first_seen_at),
            "lastSeenAt": format_time(self.deduplication.last_seen_at),
            "occurrenceCount": self.deduplication.occurrence_count,
        }
        _set_nested(status, "completionStatus", "outcome", self.outcome)
        _set_nested(
            status,
            "routingStatus",
            "nextAllowedExecution",
            None
            if self.next_allowed_execution is None
            else format_time(self.next_allowed_execution),
        )
        if self.message is not None:
            status["message"] = self.message
        else:
            status.pop("message", None)
        conditions = [c for c in status.get("conditions") or () if c.get("type") != SIGNAL_RESOLVED]
        if self.signal_resolved is not None:
            conditions.append(self.signal_resolved.to_json())
        if conditions:
            status["conditions"] = conditions
        else:
            status.pop("conditions", None)
        return status

    def to_json(self) -> dict[str, Any]:
        """The object as the Kubernetes API would return it."""
        metadata: dict[str, Any] = {key: value for key, value in self.extra_metadata.items()}
        metadata.update(
            name=self.name,
            namespace=self.namespace,
            creationTimestamp=metadata.get("creationTimestamp") or format_time(self.created_at),
            labels={**(metadata.get("labels") or {}), **self.labels},
        )
        annotations = dict(metadata.get("annotations") or {})
        annotations[CREATED_AT_ANNOTATION] = format_time(self.created_at)
        metadata["annotations"] = annotations
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": metadata,
            "spec": self.spec,
            "status": self.status_json(),
        }


def _set_nested(status: dict[str, Any], part: str, key: str, value: Any) -> None:
    """Set (or, for None, remove) `status[part][key]`, keeping the part's other fields and
    dropping the part when nothing is left in it."""
    inner = dict(status.get(part) or {})
    if value is None:
        inner.pop(key, None)
    else:
        inner[key] = value
    if inner:
        status[part] = inner
    else:
        status.pop(part, None)


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


def choose_suppressor(
    candidates: Iterable[RemediationRequest], now: datetime
) -> RemediationRequest | None:
    """Rule 2 before rule 3: the newest terminal RR awaiting manual review; else the one
    whose cool-down (`nextAllowedExecution`) ends last, if it ends after `now`."""
    manual: RemediationRequest | None = None
    cooling: RemediationRequest | None = None
    for rr in candidates:
        if not rr.suppresses(now):
            continue
        if rr.outcome == MANUAL_REVIEW_OUTCOME:
            if manual is None or (rr.created_at, rr.name) > (manual.created_at, manual.name):
                manual = rr
        else:
            key = (rr.next_allowed_execution, rr.created_at, rr.name)
            if cooling is None or key > (
                cooling.next_allowed_execution,
                cooling.created_at,
                cooling.name,
            ):
                cooling = rr
    return manual or cooling
