"""One Kubernetes Event (core/v1, or events.k8s.io/v1) → a `Signal`, or `Ignored`.

Normal events are ignored before any other check: an event exporter sends a great many
of them, and answering 400 would bury real errors in its logs.
"""

from __future__ import annotations

from datetime import datetime

from signalgate.gateway.adapters.parsing import (
    Freshness,
    PayloadError,
    check_fresh,
    default_namespace,
    json_type,
    parse_object,
    parse_timestamp,
)
from signalgate.gateway.signal import MAX_SIGNAL_NAME, Ignored, Signal
from signalgate.remediation.model import TargetResource

SIGNAL_TYPES = ("Warning", "Error")


def parse_event(body: bytes, now: datetime, freshness: Freshness) -> Signal | Ignored:
    event = parse_object(body)
    event_type = event.get("type")
    if event_type == "Normal":
        return Ignored("Normal events need no remediation")
    if event_type not in SIGNAL_TYPES:
        shown = "missing" if event_type is None else repr(event_type)[:40]
        raise PayloadError(f"type: must be Warning, Error or Normal ({shown})")
    reason = event.get("reason")
    if not isinstance(reason, str) or not reason:
        raise PayloadError("reason: required (a non-empty string)")

    target = _involved_object(event)
    newest = _newest_timestamp(event)
    if newest is None:
        raise PayloadError(
            "lastTimestamp: the event has none of series.lastObservedTime, lastTimestamp, "
            "eventTime, firstTimestamp"
        )
    field, when = newest
    check_fresh(when, now, freshness, field)

    return Signal(
        source="kubernetes-events",
        signal_name=reason[:MAX_SIGNAL_NAME],
        severity=event_type,
        target=target,
        firing_time=when,
        received_time=now,
        original_payload=body,
        payload=event,
    )


def _involved_object(event: dict[str, object]) -> TargetResource:
    key = "involvedObject" if "involvedObject" in event else "regarding"
    obj = event.get(key)
    if not isinstance(obj, dict):
        shown = "missing" if obj is None else json_type(obj)
        raise PayloadError(f"involvedObject: required (an object with kind and name; {shown})")
    values: dict[str, str] = {}
    for name in ("kind", "name", "namespace", "apiVersion"):
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise PayloadError(f"{key}.{name}: must be a string, not {json_type(value)}")
        values[name] = value or ""
    for name in ("kind", "name"):
        if not values[name]:
            raise PayloadError(f"{key}.{name}: required")
    kind = values["kind"]
    return TargetResource(
        kind=kind,
        name=values["name"],
        namespace=default_namespace(kind, values["namespace"]),
        api_version=values["apiVersion"],
    )


def _newest_timestamp(event: dict[str, object]) -> tuple[str, datetime] | None:
    """The newest of the event's timestamps, with the field it came from."""
    series = event.get("series")
    candidates: list[tuple[str, object]] = []
    if isinstance(series, dict):
        candidates.append(("series.lastObservedTime", series.get("lastObservedTime")))
    elif series is not None:
        raise PayloadError(f"series: must be an object, not {json_type(series)}")
    for field in (
        "lastTimestamp",
        "deprecatedLastTimestamp",
        "eventTime",
        "firstTimestamp",
        "deprecatedFirstTimestamp",
    ):
        candidates.append((field, event.get(field)))
    newest: tuple[str, datetime] | None = None
    for field, raw in candidates:
        when = parse_timestamp(raw, field)
        if when is not None and (newest is None or when > newest[1]):
            newest = (field, when)
    return newest
