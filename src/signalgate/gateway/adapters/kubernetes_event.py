"""One Kubernetes Event (core/v1, or events.k8s.io/v1) → a `Signal`, or `Ignored`.

Normal events are ignored before any other check but the body's `kind` (an EventList, or an
object that is no Event at all): an event exporter sends a great many of them, and
answering 400 would bury real errors in its logs.

`kind` is not otherwise read, as Kubernaut's Gateway does not read it: an object with an
`involvedObject` (or `regarding`) is an Event whatever its `kind`. A key sent twice takes
its last value (orjson, as Go's encoding/json in Kubernaut); an object sent twice is taken
from its last occurrence whole, where Go fills the first one's fields in from the second.

The target is `involvedObject` as given, every part checked by `identity`. A namespaced kind
without a namespace (a hand-made Event; the API server always fills it in) is placed where
the Event itself lives (`metadata.namespace`), else in `default`, as an alert's target is:
so an event and an alert about the same object share a fingerprint, and the scope's
namespace lists apply to it (with no namespace it escaped `unmanagedNamespaces`). A
cluster-scoped kind (Node, PersistentVolume, …) has none. The firing time is when the event
was first seen (`firstTimestamp`), while freshness is judged on the newest timestamp.

The signal's labels and annotations are the ones Kubernaut's Gateway builds from an Event
(an Event has no labels of its own worth carrying): `kubernaut.ai/event-source` (the
reporting component), `kubernaut.ai/event-type` and `kubernaut.ai/resource-kind` (lower
case), and the annotations `kubernaut.ai/event-message`, `-count`, `source-host`,
`first-timestamp`, `last-timestamp` (RFC 3339, seconds). An events.k8s.io/v1 Event gives the
same from its own fields (`note`, `reportingController`, `deprecatedSource`,
`deprecatedCount` or `series.count`, the deprecated timestamps).
"""

from __future__ import annotations

import re
from datetime import datetime

from signalgate.gateway.adapters.identity import check_kind, check_name, check_namespace
from signalgate.gateway.adapters.parsing import (
    Freshness,
    PayloadError,
    case_hint,
    check_fresh,
    check_signal_size,
    json_type,
    parse_object,
    parse_timestamp,
)
from signalgate.gateway.kinds import DEFAULT_CATALOG, KindCatalog, is_namespaced
from signalgate.gateway.signal import MAX_SIGNAL_NAME, Ignored, Signal
from signalgate.remediation.model import TargetResource

SIGNAL_TYPES = ("Warning", "Error")
# the fields naming an Event's object (core/v1, events.k8s.io/v1). A body without either
# whose `kind` says it is no Event (a Pod, a Deployment sent by mistake) is refused naming
# `kind`: Kubernaut's Gateway, which reads no `kind`, refuses it too (no involvedObject),
# and "type: must be Warning, Error or Normal (missing)" sent its sender to the wrong field.
# One that has them is taken as an Event whatever its `kind` says, as Kubernaut takes it.
_OBJECT_FIELDS = frozenset({"involvedObject", "regarding"})
# the prefix of the labels and annotations Kubernaut's Gateway gives an Event's signal
KUBERNAUT = "kubernaut.ai"
# `<version>` or `<group>/<version>`: a DNS subdomain, and Kubernetes' version form
_API_VERSION = re.compile(
    r"(?:[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)*/)?"
    r"v[0-9]+(?:(?:alpha|beta)[0-9]+)?"
)


def parse_event(
    body: bytes, now: datetime, freshness: Freshness, catalog: KindCatalog = DEFAULT_CATALOG
) -> Signal | Ignored:
    check_signal_size(body, "body")
    event = parse_object(body)
    kind = event.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in event:
        raise PayloadError(
            f"kind: {kind[:40]!r} is a list; send each Event in a request of its own "
            "(one core/v1 or events.k8s.io/v1 Event per request)"
        )
    if kind is not None and kind != "Event" and not _OBJECT_FIELDS & event.keys():
        shown = repr(kind)[:40] if isinstance(kind, str) else json_type(kind)
        raise PayloadError(
            f"kind: {shown} is not an Event (it has no involvedObject); send one core/v1 "
            "or events.k8s.io/v1 Event (kind: Event) per request"
        )
    event_type = event.get("type")
    if event_type == "Normal":
        return Ignored("Normal events need no remediation", "kubernetes-events")
    if event_type not in SIGNAL_TYPES:
        shown = repr(event_type)[:40]
        if event_type is None:
            shown = "missing" + case_hint(event, "type")
        raise PayloadError(f"type: must be Warning, Error or Normal ({shown})")
    reason = event.get("reason")
    if not isinstance(reason, str) or not reason:
        hint = case_hint(event, "reason") if reason is None else ""
        raise PayloadError(f"reason: required (a non-empty string{hint})")

    target = _involved_object(event, catalog)
    stamps = _timestamps(event)
    if not stamps:
        raise PayloadError(
            "lastTimestamp: the event has none of series.lastObservedTime, lastTimestamp, "
            "eventTime, firstTimestamp"
        )
    field, when = max(stamps, key=lambda stamp: stamp[1])
    check_fresh(when, now, freshness, field)
    first_seen = dict(stamps)
    firing = first_seen.get("firstTimestamp") or first_seen.get("deprecatedFirstTimestamp")

    last_seen = first_seen.get("lastTimestamp") or first_seen.get("deprecatedLastTimestamp")
    return Signal(
        source="kubernetes-events",
        signal_name=reason[:MAX_SIGNAL_NAME],
        severity=event_type,
        target=target,
        firing_time=firing or min(stamp[1] for stamp in stamps),
        received_time=now,
        original_payload=body,
        payload=event,
        labels=_labels(event, event_type, target.kind),
        annotations=_annotations(event, firing, last_seen),
    )


def _labels(event: dict[str, object], event_type: str, kind: str) -> dict[str, str]:
    labels = {
        f"{KUBERNAUT}/event-type": event_type.lower(),
        f"{KUBERNAUT}/resource-kind": kind.lower(),
    }
    component = _text(event, ("source", "component"), ("deprecatedSource", "component"))
    component = component or _text(event, ("reportingController",))
    if component:
        labels[f"{KUBERNAUT}/event-source"] = component
    return labels


def _annotations(
    event: dict[str, object], first: datetime | None, last: datetime | None
) -> dict[str, str]:
    annotations: dict[str, str] = {}
    message = _text(event, ("message",)) or _text(event, ("note",))
    if message:
        annotations[f"{KUBERNAUT}/event-message"] = message
    count = _count(event)
    if count > 0:
        annotations[f"{KUBERNAUT}/event-count"] = str(count)
    host = _text(event, ("source", "host"), ("deprecatedSource", "host"))
    if host:
        annotations[f"{KUBERNAUT}/source-host"] = host
    for name, when in (("first-timestamp", first), ("last-timestamp", last)):
        if when is not None:
            annotations[f"{KUBERNAUT}/{name}"] = _rfc3339_seconds(when)
    return annotations


def _text(event: dict[str, object], *paths: tuple[str, ...]) -> str:
    """The first string found at one of `paths` (a value of another type is refused)."""
    for path in paths:
        value: object = event
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            continue
        if not isinstance(value, str):
            raise PayloadError(f"{'.'.join(path)}: must be a string, not {json_type(value)}")
        if value:
            return value
    return ""


def _count(event: dict[str, object]) -> int:
    series = event.get("series")
    for where, value in (
        ("count", event.get("count")),
        ("deprecatedCount", event.get("deprecatedCount")),
        ("series.count", series.get("count") if isinstance(series, dict) else None),
    ):
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise PayloadError(f"{where}: must be an integer, not {json_type(value)}")
        if value > 0:
            return value
    return 0


def _rfc3339_seconds(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def _involved_object(event: dict[str, object], catalog: KindCatalog) -> TargetResource:
    key = "involvedObject" if "involvedObject" in event else "regarding"
    obj = event.get(key)
    if not isinstance(obj, dict):
        shown = json_type(obj)
        if obj is None:
            near = case_hint(event, "involvedObject") or case_hint(event, "regarding")
            shown = "missing" + near
        raise PayloadError(f"involvedObject: required (an object with kind and name; {shown})")
    values: dict[str, str] = {}
    for name in ("kind", "name", "namespace", "apiVersion"):
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise PayloadError(f"{key}.{name}: must be a string, not {json_type(value)}")
        values[name] = value or ""
    for name in ("kind", "name"):
        if not values[name]:
            hint = case_hint(obj, name) if name not in obj else ""
            raise PayloadError(f"{key}.{name}: required (a non-empty string{hint})")
    kind = check_kind(values["kind"], f"{key}.kind")
    if catalog.lookup(kind) is None:
        known = catalog.kind_for_label(kind.lower())
        if known is not None and known.lower() == kind.lower():
            # `pod` or `POD` would open an RR beside the one for `Pod`
            raise PayloadError(
                f"{key}.kind: {kind!r} is not a kind; Kubernetes spells it {known!r}"
            )
    namespace = values["namespace"]
    if namespace:
        check_namespace(namespace, f"{key}.namespace")
    elif is_namespaced(catalog, kind):
        namespace = _event_namespace(event)
    api_version = values["apiVersion"]
    if api_version and not _API_VERSION.fullmatch(api_version):
        raise PayloadError(
            f"{key}.apiVersion: {api_version[:80]!r} is not an API version "
            "(`v1`, or a group and a version: `apps/v1`, `example.com/v1beta1`)"
        )
    if not api_version:
        info = catalog.lookup(kind)
        api_version = info.api_version if info is not None else ""
    return TargetResource(
        kind=kind,
        name=check_name(values["name"], f"{key}.name", kind),
        namespace=namespace,
        api_version=api_version,
    )


def _timestamps(event: dict[str, object]) -> list[tuple[str, datetime]]:
    """Every timestamp the event carries, with the field it came from."""
    series = event.get("series")
    raw: list[tuple[str, object]] = []
    if isinstance(series, dict):
        raw.append(("series.lastObservedTime", series.get("lastObservedTime")))
    elif series is not None:
        raise PayloadError(f"series: must be an object, not {json_type(series)}")
    for field in (
        "lastTimestamp",
        "deprecatedLastTimestamp",
        "eventTime",
        "firstTimestamp",
        "deprecatedFirstTimestamp",
    ):
        raw.append((field, event.get(field)))
    stamps: list[tuple[str, datetime]] = []
    for field, value in raw:
        when = parse_timestamp(value, field)
        if when is not None:
            stamps.append((field, when))
    return stamps


def _event_namespace(event: dict[str, object]) -> str:
    """Where the Event lives (`metadata.namespace`, checked), else `default`."""
    metadata = event.get("metadata")
    found = metadata.get("namespace") if isinstance(metadata, dict) else None
    if isinstance(found, str) and found:
        return check_namespace(found, "metadata.namespace")
    return "default"
