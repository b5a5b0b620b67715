"""The audit events of each Gateway decision as DataStorage envelopes (docs/gateway.md).

Every event must fit what DataStorage stores (`event_data` at most 256 KiB serialised and 10
levels deep, integers within 64 bits): one it refuses is dropped by the relay, after its
signal was answered. So the request body is inlined only when it fits, else replaced by its
size and digest, and a signal's labels and annotations are shortened when together they
would not fit. (Control characters and integers beyond 64 bits are refused with the request,
in `read_body`.)
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson

from signalgate.common.audit import MAX_EVENT_DATA_BYTES, MAX_EVENT_DATA_DEPTH
from signalgate.common.auth import authenticated_user_var
from signalgate.common.ids import new_uuid
from signalgate.gateway.signal import Signal
from signalgate.remediation.model import RemediationRequest, format_time

MAX_INLINE_PAYLOAD = 64 * 1024

SIGNAL_RECEIVED = "gateway.signal.received"
CRD_CREATED = "gateway.crd.created"
SIGNAL_DEDUPLICATED = "gateway.signal.deduplicated"
SIGNAL_RESOLVED = "gateway.signal.resolved"
SIGNAL_REJECTED = "gateway.signal.rejected"
CRD_FAILED = "gateway.crd.failed"

_ACTIONS = {
    SIGNAL_RECEIVED: ("received", "success"),
    CRD_CREATED: ("created", "success"),
    SIGNAL_DEDUPLICATED: ("deduplicated", "success"),
    SIGNAL_RESOLVED: ("resolved", "success"),
    SIGNAL_REJECTED: ("rejected", "failure"),
    CRD_FAILED: ("failed", "failure"),
}

# every event type the Gateway emits
EVENT_TYPES = tuple(_ACTIONS)

# new/duplicate is the pipeline's `Decision`, which chose the event type (created → received
# + crd.created; duplicate → deduplicated), as Kubernaut sets it per event; a resolution has
# no decision of its own and reports the RR as it stands (new while seen once).
_DEDUPLICATION_STATUS = {
    SIGNAL_RECEIVED: "new",
    CRD_CREATED: "new",
    SIGNAL_DEDUPLICATED: "duplicate",
}


def _actor_and_resource(
    event_type: str, signal: Signal, correlation_id: str, rr: RemediationRequest | None
) -> dict[str, str]:
    """Kubernaut's values (its Gateway's audit emission): a signal's events are by the
    external source about the Signal (its fingerprint) — by the authenticated ServiceAccount
    when the cluster confirmed who sent it (Kubernetes mode); the RR's creation and failure
    are by the Gateway's CRD creator about the RemediationRequest (`<ns>/<name>`)."""
    if event_type == CRD_CREATED and rr is not None:
        return {
            "actor_type": "gateway",
            "actor_id": "crd-creator",
            "resource_type": "RemediationRequest",
            "resource_id": rr.ref,
        }
    if event_type == CRD_FAILED:
        return {
            "actor_type": "gateway",
            "actor_id": "crd-creator",
            "resource_type": "RemediationRequest",
            "resource_id": correlation_id,
        }
    user = authenticated_user_var.get()
    return {
        "actor_type": "external" if user is None else "authenticated-service",
        "actor_id": signal.source if user is None else user,
        "resource_type": "Signal",
        "resource_id": signal.fingerprint or correlation_id,
    }


# the body sits at the second level of `event_data` (`event_data.original_payload`)
MAX_PAYLOAD_DEPTH = MAX_EVENT_DATA_DEPTH - 1
# `event_data` is measured only for bodies over this: below it, the inlined body (numbers
# re-serialised at most ~4.5 times as long: `9e15` → `9000000000000000.0`) and the labels and
# annotations taken from it stay far under the limit, and the hot path pays nothing
UNMEASURED_BODY = 32 * 1024
# what `event_data` is fitted to: DataStorage's limit less room for its canonical form
FIT_BYTES = MAX_EVENT_DATA_BYTES - 16 * 1024
# a label or annotation value kept whole when `event_data` must be shortened
KEPT_VALUE_BYTES = 1024


class _PayloadForms:
    """The audit form of the last body seen: a signal's events (received and crd.created)
    share its body, so its checks (depth, digest) run once per signal, not once per event."""

    __slots__ = ("body", "form")

    def __init__(self) -> None:
        self.body: bytes | None = None
        self.form: dict[str, Any] = {}

    def of(self, signal: Signal) -> dict[str, Any]:
        body = signal.original_payload
        if body is not self.body:
            self.body, self.form = body, _payload_form(body, signal.payload)
        return self.form


def _payload_form(body: bytes, parsed: dict[str, Any]) -> dict[str, Any]:
    if len(body) > MAX_INLINE_PAYLOAD:
        return digest(body)
    # no deeper than the number of containers it opens: a one-alert webhook opens six, and
    # needs no walk
    opened = body.count(b"{") + body.count(b"[")
    if opened > MAX_PAYLOAD_DEPTH and _deeper_than(parsed, MAX_PAYLOAD_DEPTH):
        return digest(body)
    return parsed


def digest(body: bytes) -> dict[str, Any]:
    """A body not inlined: its size and SHA-256 (the RR keeps the body itself)."""
    return {"truncated": True, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def _deeper_than(value: Any, levels: int) -> bool:
    """Whether `value` nests containers more than `levels` deep (itself the first)."""
    stack = [(value, levels)]
    while stack:
        item, room = stack.pop()
        if room == 0:
            return True
        children = item.values() if type(item) is dict else item
        stack.extend((c, room - 1) for c in children if type(c) is dict or type(c) is list)
    return False


_payload_forms = _PayloadForms()


def original_payload(signal: Signal) -> dict[str, Any]:
    """The request body as the JSON object the adapter parsed, or its digest when inlined it
    would not fit DataStorage (over 64 KiB, or nested too deep). What else DataStorage
    refuses (control characters, integers beyond 64 bits) never gets this far: `read_body`
    refuses the request."""
    return _payload_forms.of(signal)


def _fitted(data: dict[str, Any]) -> dict[str, Any]:
    """`data` itself when it fits DataStorage's limit; else with its long label and
    annotation values cut (`…` and their size and digest), and at last with the two maps
    replaced by one line saying what they held."""
    if len(orjson.dumps(data)) <= FIT_BYTES:
        return data
    for key in ("signal_annotations", "signal_labels"):
        data[key] = {name: _shortened(value) for name, value in data[key].items()}
    if len(orjson.dumps(data)) <= FIT_BYTES:
        return data
    for key in ("signal_annotations", "signal_labels"):
        held = orjson.dumps(data[key])
        data[key] = {"truncated": f"{len(held)} bytes, sha256 {hashlib.sha256(held).hexdigest()}"}
    return data


def _shortened(value: str) -> str:
    encoded = value.encode()
    if len(encoded) <= KEPT_VALUE_BYTES:
        return value
    kept = encoded[:KEPT_VALUE_BYTES].decode(errors="ignore")
    return f"{kept}… [{len(encoded)} bytes, sha256 {hashlib.sha256(encoded).hexdigest()}]"


def build_event(
    event_type: str,
    signal: Signal,
    now: datetime,
    *,
    correlation_id: str,
    rr: RemediationRequest | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    action, outcome = _ACTIONS[event_type]
    target = signal.target
    data: dict[str, Any] = {
        "event_type": event_type,
        "signal_type": "alert",
        "signal_name": signal.signal_name,
        "namespace": target.namespace if target else "",
        "fingerprint": signal.fingerprint or "",
        "severity": signal.severity,
        "resource_kind": target.kind if target else "",
        "resource_name": target.name if target else "",
        "original_payload": original_payload(signal),
        "signal_labels": dict(signal.labels),
        "signal_annotations": dict(signal.annotations),
    }
    if rr is not None:
        count = rr.deduplication.occurrence_count
        data["remediation_request"] = rr.ref
        data["deduplication_status"] = _DEDUPLICATION_STATUS.get(event_type) or (
            "new" if count == 1 else "duplicate"
        )
        data["occurrence_count"] = count
    if error is not None:
        data["error_details"] = {**error, "component": "gateway"}
    if len(signal.original_payload) > UNMEASURED_BODY:
        data = _fitted(data)
    event: dict[str, Any] = {
        "version": "1.0",
        "event_id": new_uuid(),
        "event_type": event_type,
        "event_timestamp": format_time(now),
        "event_category": "gateway",
        "event_action": action,
        "event_outcome": outcome,
        "correlation_id": correlation_id[:255],
        **_actor_and_resource(event_type, signal, correlation_id[:255], rr),
        # no envelope `severity`, as Kubernaut's Gateway sets none: the signal's is in
        # event_data, and DataStorage's severity filter stays the other services' own
        "event_data": data,
    }
    if target is not None:  # "" for a cluster-scoped target, as Kubernaut sets it
        event["namespace"] = target.namespace
    if signal.cluster_id:
        event["cluster_id"] = signal.cluster_id
    if error is not None:
        event["error_code"] = str(error.get("code", ""))
        event["error_message"] = str(error.get("message", ""))
    return event
