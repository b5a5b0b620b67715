"""Kubernaut parity: the case table (`kubernaut_parity_cases.py`) run against both adapters.

For every case Kubernaut accepts, our target and fingerprint must equal what Kubernaut's
formula gives for Kubernaut's target; a deliberate difference must answer as the table says.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime

import orjson
import pytest

from signalgate.gateway.adapters.alertmanager import parse_webhook
from signalgate.gateway.adapters.kubernetes_event import parse_event
from signalgate.gateway.adapters.parsing import Freshness, PayloadError
from signalgate.gateway.kinds import ExtraKind, KindSettings
from signalgate.gateway.signal import Ignored, Invalid, Signal
from tests.support.services import rfc3339
from tests.unit.gateway.kubernaut_parity_cases import ALERTS, EVENTS_CASES, AlertCase, EventCase

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
FRESH = Freshness()


def kubernaut_fingerprint(cluster: str, namespace: str, kind: str, name: str) -> str:
    """Kubernaut's CalculateClusterAwareFingerprint, written from its definition."""
    key = f"{namespace}:{kind}:{name}" if not cluster else f"{cluster}:{namespace}:{kind}:{name}"
    return hashlib.sha256(key.encode()).hexdigest()


def alert_body(case: AlertCase) -> bytes:
    labels = {"alertname": "ParityCheck", "severity": "warning", **case.labels}
    return orjson.dumps(
        {
            "version": "4",
            "status": "firing",
            "commonLabels": case.common,
            "alerts": [{"status": "firing", "labels": labels, "startsAt": rfc3339(NOW)}],
        }
    )


def event_body(case: EventCase, key: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "type": "Warning",
            "reason": "BackOff",
            key or case.key: case.involved,
            "firstTimestamp": rfc3339(NOW),
            "lastTimestamp": rfc3339(NOW),
        }
    )


def parse_alert(body: bytes) -> Signal | Invalid:
    [item] = parse_webhook(body, NOW, FRESH)
    assert isinstance(item, Signal | Invalid)
    return item


def parse_one_event(body: bytes) -> Signal:
    item = parse_event(body, NOW, FRESH)
    assert not isinstance(item, Ignored)
    return item


@pytest.mark.parametrize("case", ALERTS, ids=[c.id for c in ALERTS])
def test_alert_case(case: AlertCase) -> None:
    if case.ours.startswith("400 "):
        field = case.ours.removeprefix("400 ")
        if field.startswith("commonLabels"):
            with pytest.raises(PayloadError, match=field):
                parse_webhook(alert_body(case), NOW, FRESH)
        else:
            item = parse_alert(alert_body(case))
            assert isinstance(item, Invalid) and field in item.error, item
        return
    item = parse_alert(alert_body(case))
    assert isinstance(item, Signal), item
    if case.ours == "rejected":
        assert item.target is None and item.fingerprint is None
        return
    if case.ours.startswith("cluster ") and case.kubernaut is not None:
        _, namespace, kind, name = case.kubernaut
        cluster = case.ours.removeprefix("cluster ")
        case = dataclasses.replace(case, kubernaut=(cluster, namespace, kind, name), ours="")
    if case.ours.startswith("target ") and case.kubernaut is not None:
        cluster, namespace, _, _ = case.kubernaut
        kind, name = case.ours.removeprefix("target ").split(" ")
        case = dataclasses.replace(case, kubernaut=(cluster, namespace, kind, name), ours="")
    assert case.ours == "" and case.kubernaut is not None
    cluster, namespace, kind, name = case.kubernaut
    assert item.target is not None
    assert (item.cluster_id, item.target.namespace, item.target.kind, item.target.name) == (
        cluster,
        namespace,
        kind,
        name,
    )
    assert item.fingerprint == kubernaut_fingerprint(*case.kubernaut)


@pytest.mark.parametrize("case", EVENTS_CASES, ids=[c.id for c in EVENTS_CASES])
def test_event_case(case: EventCase) -> None:
    if case.ours.startswith("400 "):
        with pytest.raises(PayloadError, match=case.ours.removeprefix("400 ")):
            parse_event(event_body(case), NOW, FRESH)
        return
    signal = parse_one_event(event_body(case))
    if case.ours == "same fingerprint as involvedObject":
        assert signal.fingerprint == parse_one_event(event_body(case, "involvedObject")).fingerprint
        return
    assert case.kubernaut is not None
    cluster, namespace, kind, name = case.kubernaut
    if case.ours.startswith("namespace "):
        namespace = case.ours.removeprefix("namespace ")
        case = dataclasses.replace(case, kubernaut=(cluster, namespace, kind, name), ours="")
    assert case.ours == "" and case.kubernaut is not None
    assert signal.target is not None
    assert (signal.target.namespace, signal.target.kind, signal.target.name) == (
        namespace,
        kind,
        name,
    )
    assert signal.fingerprint == kubernaut_fingerprint(*case.kubernaut)


@pytest.mark.parametrize(
    ("labels", "involved"),
    [
        (
            {"namespace": "prod", "pod": "api-1"},
            {"kind": "Pod", "name": "api-1", "namespace": "prod"},
        ),
        ({"node": "worker-1"}, {"kind": "Node", "name": "worker-1"}),
        (
            {"namespace": "monitoring", "node": "worker-1"},
            {"kind": "Node", "name": "worker-1", "namespace": "monitoring"},
        ),
        ({"deployment": "web"}, {"kind": "Deployment", "name": "web", "namespace": "default"}),
    ],
)
def test_an_alert_and_an_event_about_one_object_share_a_fingerprint(
    labels: dict[str, str], involved: dict[str, str]
) -> None:
    alert = parse_alert(alert_body(AlertCase("x", "", "", labels, None)))
    event = parse_one_event(event_body(EventCase("x", "", "", involved, None)))
    assert isinstance(alert, Signal)
    assert alert.fingerprint is not None and alert.fingerprint == event.fingerprint


def test_configured_custom_kinds_are_candidates_with_their_api_version() -> None:
    case = AlertCase(
        "x", "", "", {"namespace": "ci", "buildconfig": "frontend", "pod": "b-1"}, None
    )
    [plain] = parse_webhook(alert_body(case), NOW, FRESH)
    assert isinstance(plain, Signal) and plain.target is not None
    assert plain.target.kind == "Pod"  # not a kind this Gateway knows
    catalog = KindSettings(
        extra=[ExtraKind(kind="BuildConfig", api_version="build.openshift.io/v1")]
    ).catalog()
    [custom] = parse_webhook(alert_body(case), NOW, FRESH, catalog)
    assert isinstance(custom, Signal) and custom.target is not None
    assert (custom.target.kind, custom.target.api_version) == (
        "BuildConfig",
        "build.openshift.io/v1",
    )
    assert [c.kind for c in custom.candidates] == ["Pod"]
    assert custom.fingerprint == kubernaut_fingerprint("", "ci", "BuildConfig", "frontend")
    # an alert naming nothing is told the configured kind's label too
    bare = AlertCase("x", "", "", {"namespace": "ci"}, None)
    [untargeted] = parse_webhook(alert_body(bare), NOW, FRESH, catalog)
    assert isinstance(untargeted, Signal) and untargeted.target is None
    assert untargeted.target_hint.endswith(", pod, node, buildconfig")


def test_alert_targets_carry_the_api_version_of_their_kind() -> None:
    expected = {"deployment": "apps/v1", "pod": "v1", "cronjob": "batch/v1", "node": "v1"}
    for label, api_version in expected.items():
        case = AlertCase("x", "", "", {"namespace": "prod", label: "thing"}, None)
        signal = parse_alert(alert_body(case))
        assert isinstance(signal, Signal) and signal.target is not None
        assert signal.target.api_version == api_version


def test_extra_kind_settings_refuse_a_bad_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        KindSettings.model_validate({"extra": [{"kind": "Build Config", "apiVersion": "v1"}]})
