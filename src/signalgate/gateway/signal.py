"""The normalised signal: what every adapter produces and the pipeline decides on."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

from signalgate.gateway.fingerprint import fingerprint_of
from signalgate.remediation.model import TargetResource

# each adapter's name, as the RR's `spec.signalSource`, the audit events' `actor_id` (static
# tokens) and the metrics' `source_type` say it; the served OpenAPI lists these
SignalSource = Literal["prometheus", "kubernetes-events"]

MAX_SIGNAL_NAME = 253
MAX_SEVERITY = 50
MAX_LABEL_VALUE_BYTES = 63
MAX_ANNOTATION_VALUE_BYTES = 262_000


def truncate_utf8(text: str, limit: int) -> str:
    """At most `limit` bytes of UTF-8, never cutting a character in half."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode(errors="ignore")


@dataclass(frozen=True)
class Signal:
    """One alert or event, normalised. `target` is None when nothing identifies a resource."""

    source: SignalSource
    signal_name: str
    severity: str
    target: TargetResource | None
    firing_time: datetime
    received_time: datetime
    original_payload: bytes
    # the body already parsed by the adapter (shared by every alert of one webhook), so the
    # audit trail never parses it again
    payload: dict[str, Any] = field(default_factory=dict)
    cluster_id: str = ""
    resolved: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    # label keys that could have named a target, for the no_target_resource message
    target_hint: str = ""
    # labels that named a kind with a value that is not a resource name (same message)
    unusable_targets: tuple[str, ...] = ()
    # the other targets the labels named, best first: Kubernetes mode may prefer the first
    # that exists, as Kubernaut does (standalone keeps `target`)
    candidates: tuple[TargetResource, ...] = ()

    @cached_property
    def fingerprint(self) -> str | None:
        if self.target is None:
            return None
        return fingerprint_of(self.target, self.cluster_id)


@dataclass(frozen=True)
class Invalid:
    """An item that failed validation: fails the request alone, or its own 207 result."""

    error: str


@dataclass(frozen=True)
class Ignored:
    """A notice that needs no action (a Normal event)."""

    message: str
    source: SignalSource


AdapterItem = Signal | Invalid | Ignored
