"""The audit events of each Gateway decision as DataStorage envelopes (docs/gateway.md)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

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


def original_payload(signal: Signal) -> dict[str, Any]:
    """The request body as the JSON object the adapter parsed, or a digest of it when it is
    too large to inline (an event must stay under DataStorage's 256 KiB limit)."""
    body = signal.original_payload
    if len(body) > MAX_INLINE_PAYLOAD:
        return {"truncated": True, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    return signal.payload


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
        "severity": signal.severity,
        "event_data": data,
    }
    if target is not None and target.namespace:
        event["namespace"] = target.namespace
    if signal.cluster_id:
        event["cluster_id"] = signal.cluster_id
    if error is not None:
        event["error_code"] = str(error.get("code", ""))
        event["error_message"] = str(error.get("message", ""))
    return event
