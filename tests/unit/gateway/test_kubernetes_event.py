"""Kubernetes Event adapter rules (docs/gateway.md) and freshness."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import cast

import orjson
import pytest

from signalgate.gateway.adapters.kubernetes_event import parse_event
from signalgate.gateway.adapters.parsing import MAX_SIGNAL_BYTES, Freshness, PayloadError
from signalgate.gateway.signal import Ignored, Signal
from tests.support.services import k8s_event, rfc3339

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
FRESH = Freshness()


def parse(event: dict[str, object]) -> Signal | Ignored:
    return parse_event(orjson.dumps(event), NOW, FRESH)


def test_warning_event_becomes_a_signal_on_the_involved_object() -> None:
    signal = parse(k8s_event(last_timestamp=rfc3339(NOW)))
    assert isinstance(signal, Signal)
    assert signal.severity == "Warning" and signal.signal_name == "BackOff"
    assert signal.target is not None and signal.target.api_version == "v1"
    assert signal.fingerprint == hashlib.sha256(b"prod:Pod:api-1").hexdigest()
    # the labels and annotations Kubernaut's Gateway builds from an Event
    assert signal.labels == {
        "kubernaut.ai/event-source": "kubelet",
        "kubernaut.ai/event-type": "warning",
        "kubernaut.ai/resource-kind": "pod",
    }
    stamp = NOW.isoformat(timespec="seconds").replace("+00:00", "Z")
    assert signal.annotations == {
        "kubernaut.ai/event-message": "Back-off restarting failed container",
        "kubernaut.ai/event-count": "3",
        "kubernaut.ai/first-timestamp": stamp,
        "kubernaut.ai/last-timestamp": stamp,
    }


def test_an_events_k8s_io_event_gives_the_same_labels_from_its_own_fields() -> None:
    event: dict[str, object] = {
        "type": "Warning",
        "reason": "FailedMount",
        "regarding": {"kind": "Pod", "name": "db-0", "namespace": "data"},
        "note": "MountVolume.SetUp failed",
        "reportingController": "kubelet",
        "deprecatedSource": {"host": "node-1"},
        "series": {"count": 4, "lastObservedTime": rfc3339(NOW)},
        "eventTime": rfc3339(NOW),
    }
    signal = parse(event)
    assert isinstance(signal, Signal)
    assert signal.labels["kubernaut.ai/event-source"] == "kubelet"
    assert signal.annotations == {
        "kubernaut.ai/event-message": "MountVolume.SetUp failed",
        "kubernaut.ai/event-count": "4",
        "kubernaut.ai/source-host": "node-1",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [("message", 7), ("count", "3"), ("count", True), ("source", {"component": ["kubelet"]})],
)
def test_event_fields_of_the_wrong_type_are_named(field: str, value: object) -> None:
    event = k8s_event(last_timestamp=rfc3339(NOW))
    event[field] = value
    with pytest.raises(PayloadError, match=field):
        parse(event)


def test_error_type_is_a_signal_and_normal_is_ignored_before_any_check() -> None:
    assert isinstance(parse(k8s_event("Error", last_timestamp=rfc3339(NOW))), Signal)
    assert isinstance(parse({"type": "Normal"}), Ignored)


def test_events_k8s_io_v1_regarding_and_series() -> None:
    event: dict[str, object] = {
        "type": "Warning",
        "reason": "FailedMount",
        "regarding": {"kind": "Pod", "name": "db-0", "namespace": "data"},
        "series": {"count": 4, "lastObservedTime": rfc3339(NOW)},
        "eventTime": rfc3339(NOW - timedelta(hours=1)),
    }
    signal = parse(event)
    assert isinstance(signal, Signal)
    assert signal.target is not None and signal.target.name == "db-0"
    # no firstTimestamp: the event was first seen at its eventTime (freshness uses the newest)
    assert signal.firing_time == NOW - timedelta(hours=1)


def test_a_namespaced_object_without_a_namespace_is_where_its_event_lives() -> None:
    """As an alert's target is: an alert and an event about the same Pod share one RR, and
    `scope.unmanagedNamespaces` applies (with no namespace it was escaped)."""
    pod = parse(k8s_event(namespace=None, last_timestamp=rfc3339(NOW)))
    assert isinstance(pod, Signal) and pod.target is not None and pod.target.namespace == "default"
    assert pod.fingerprint == hashlib.sha256(b"default:Pod:api-1").hexdigest()
    event = k8s_event(namespace=None, last_timestamp=rfc3339(NOW))
    event["metadata"] = {"name": "api-1.17a", "namespace": "payments"}
    placed = parse(event)
    assert isinstance(placed, Signal) and placed.target is not None
    assert placed.target.namespace == "payments"
    event["metadata"] = {"namespace": "Pay ments"}
    with pytest.raises(PayloadError, match=r"metadata\.namespace"):
        parse(event)
    node = parse(k8s_event(kind="Node", name="n1", namespace=None, last_timestamp=rfc3339(NOW)))
    assert isinstance(node, Signal) and node.target is not None and node.target.namespace == ""


def test_firing_time_is_first_timestamp() -> None:
    event = k8s_event(last_timestamp=rfc3339(NOW))
    event["firstTimestamp"] = rfc3339(NOW - timedelta(hours=2))
    signal = parse(event)
    assert isinstance(signal, Signal) and signal.firing_time == NOW - timedelta(hours=2)


@pytest.mark.parametrize(
    ("offset", "ok"),
    [
        (timedelta(minutes=-4, seconds=-59), True),
        (timedelta(minutes=-5, seconds=-1), False),
        (timedelta(minutes=1, seconds=59), True),
        (timedelta(minutes=2, seconds=1), False),
    ],
)
def test_freshness_window(offset: timedelta, ok: bool) -> None:
    event = k8s_event(last_timestamp=rfc3339(NOW + offset))
    if ok:
        assert isinstance(parse(event), Signal)
    else:
        with pytest.raises(PayloadError, match="lastTimestamp"):
            parse(event)


def test_newest_timestamp_counts() -> None:
    event = k8s_event(last_timestamp=rfc3339(NOW - timedelta(hours=2)))
    event["eventTime"] = rfc3339(NOW)
    assert isinstance(parse(event), Signal)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"type": "Info", "reason": "x"}, "type: must be Warning, Error or Normal"),
        ({"reason": "x"}, "type"),
        ({"type": "Warning"}, "reason: required"),
        ({"type": "Warning", "reason": "x"}, "involvedObject: required"),
        ({"type": "Warning", "reason": "x", "involvedObject": {"name": "a"}}, "kind: required"),
        (
            {"type": "Warning", "reason": "x", "involvedObject": {"kind": "Pod", "name": "a"}},
            "none of series.lastObservedTime",
        ),
    ],
)
def test_errors_name_the_field(event: dict[str, object], message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse(event)


def test_keys_are_read_as_sent_and_a_key_in_another_case_is_named() -> None:
    """Kubernaut's Gateway (Go's encoding/json) reads `Reason` as `reason`; signalgate reads
    keys as sent (README, "Differences from Kubernaut"), and its 400 names the key that
    differs in case only, so the sender sees why its field counts as missing."""
    event = k8s_event(last_timestamp=rfc3339(NOW))
    event["Reason"] = event.pop("reason")
    with pytest.raises(PayloadError, match=r"reason: required .*'Reason' is not 'reason'"):
        parse(event)
    event["reason"] = event.pop("Reason")
    event["Type"] = event.pop("type")
    with pytest.raises(PayloadError, match=r"type: .*\(missing; .*'Type' is not 'type'\)"):
        parse(event)
    event["type"] = event.pop("Type")
    event["InvolvedObject"] = event.pop("involvedObject")
    with pytest.raises(PayloadError, match=r"involvedObject: .*'InvolvedObject' is not"):
        parse(event)
    event["involvedObject"] = involved = cast(dict[str, object], event.pop("InvolvedObject"))
    involved["Name"] = involved.pop("name")
    with pytest.raises(PayloadError, match=r"involvedObject\.name: .*'Name' is not 'name'"):
        parse(event)
    # an optional field in another case is not read (nor refused): the event's own is used
    involved["name"] = involved.pop("Name")
    event["Count"] = 7
    signal = parse(event)
    assert isinstance(signal, Signal)
    assert signal.annotations["kubernaut.ai/event-count"] == str(event["count"])


@pytest.mark.parametrize("kind", ["pod", "POD", "deployment"])
def test_a_known_kind_spelled_in_another_case_is_refused(kind: str) -> None:
    """`pod` would open a second RR beside the one for `Pod`; a real API server never sends
    it, so it is a hand-made mistake worth naming."""
    event = k8s_event(last_timestamp=rfc3339(NOW))
    event["involvedObject"]["kind"] = kind  # type: ignore[index]
    with pytest.raises(PayloadError, match=r"involvedObject.kind: .* Kubernetes spells it"):
        parse(event)


@pytest.mark.parametrize("api_version", ["v1/../../x", "apps/v1/x", "Apps/v1", "v1 ", "apps/"])
def test_an_api_version_that_is_not_one_is_refused(api_version: str) -> None:
    """It is stored in the RR's spec.targetResource: `v1/../../x` was kept as sent."""
    event = k8s_event(last_timestamp=rfc3339(NOW))
    event["involvedObject"]["apiVersion"] = api_version  # type: ignore[index]
    with pytest.raises(PayloadError, match=r"involvedObject\.apiVersion: .* is not an API version"):
        parse(event)


@pytest.mark.parametrize(
    "api_version", ["v1", "apps/v1", "example.com/v1beta1", "a.b-c.io/v2alpha3"]
)
def test_api_versions_kubernetes_uses_are_kept(api_version: str) -> None:
    event = k8s_event(last_timestamp=rfc3339(NOW))
    event["involvedObject"]["apiVersion"] = api_version  # type: ignore[index]
    signal = parse(event)
    assert isinstance(signal, Signal) and signal.target is not None
    assert signal.target.api_version == api_version


def test_an_event_over_what_one_signal_may_hold_is_refused() -> None:
    """Its RR keeps the Event whole (an etcd object in Kubernetes mode)."""
    event = k8s_event(last_timestamp=rfc3339(NOW))
    event["message"] = ""
    base = len(orjson.dumps(event))
    event["message"] = "x" * (MAX_SIGNAL_BYTES - base)
    assert isinstance(parse(event), Signal)
    event["message"] = "x" * (MAX_SIGNAL_BYTES - base + 1)
    with pytest.raises(PayloadError, match=r"^body: 262,145 bytes as a signal of its own"):
        parse(event)


@pytest.mark.parametrize(
    "listing",
    [
        {"apiVersion": "v1", "kind": "EventList", "items": [k8s_event()]},
        {"apiVersion": "events.k8s.io/v1", "kind": "EventList", "items": []},
    ],
)
def test_an_event_list_is_refused_as_a_list(listing: dict[str, object]) -> None:
    """`kubectl get events -o json` prints an EventList: it was refused as "type: must be
    Warning, Error or Normal (missing)", which sent its sender looking at the wrong field."""
    with pytest.raises(PayloadError, match=r"^kind: 'EventList' is a list; send each Event"):
        parse_event(orjson.dumps(listing), NOW, FRESH)


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        # a Pod sent to the Events endpoint by mistake
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "api-1"}, "spec": {}}, "'Pod'"),
        ({"kind": "Deployment", "type": "Normal", "reason": "ScalingReplicaSet"}, "'Deployment'"),
        ({"kind": 7, "type": "Warning", "reason": "BackOff"}, "a number"),
    ],
)
def test_a_body_whose_kind_says_it_is_no_event_is_refused_naming_kind(
    body: dict[str, object], shown: str
) -> None:
    """It was refused as "type: must be Warning, Error or Normal (missing)" (or ignored as a
    Normal event): the sender looked at the wrong field. Kubernaut refuses such a body too
    (it has no involvedObject)."""
    with pytest.raises(PayloadError, match=rf"^kind: {shown} is not an Event"):
        parse_event(orjson.dumps(body), NOW, FRESH)


def test_kind_is_not_read_otherwise_and_a_repeated_key_takes_its_last_value() -> None:
    """As Kubernaut's Gateway (Go's encoding/json, which reads no `kind` there and keeps a
    repeated key's last value): an object with an involvedObject is an Event."""
    event = k8s_event(last_timestamp=rfc3339(NOW))
    assert isinstance(parse({**event, "kind": "Pod"}), Signal)
    assert isinstance(parse({key: value for key, value in event.items() if key != "kind"}), Signal)
    body = orjson.dumps({**event, "type": "Normal"})[:-1] + b',"type":"Warning"}'
    signal = parse_event(body, NOW, FRESH)
    assert isinstance(signal, Signal) and signal.severity == "Warning"
    body = orjson.dumps(event)[:-1] + b',"type":"Normal"}'
    assert isinstance(parse_event(body, NOW, FRESH), Ignored)
    # an object sent twice is its last occurrence whole (Go would keep the first one's
    # `namespace` and `apiVersion`, filling in `name` from the second)
    body = orjson.dumps(event)[:-1] + b',"involvedObject":{"kind":"Node","name":"n-2"}}'
    signal = parse_event(body, NOW, FRESH)
    assert isinstance(signal, Signal) and signal.target is not None
    assert (signal.target.kind, signal.target.name, signal.target.namespace) == ("Node", "n-2", "")
