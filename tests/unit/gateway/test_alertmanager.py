"""Alertmanager adapter rules (docs/gateway.md)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from signalgate.gateway.adapters.alertmanager import parse_webhook
from signalgate.gateway.adapters.parsing import Freshness, PayloadError
from signalgate.gateway.signal import Invalid, Signal
from tests.support.services import alert, rfc3339, webhook

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
FRESH = Freshness()


def parse_one(**labels: str) -> Signal:
    item = parse_webhook(orjson.dumps(webhook(alert(starts_at=rfc3339(NOW), **labels))), NOW, FRESH)
    assert len(item) == 1
    assert isinstance(item[0], Signal), item[0]
    return item[0]


def test_pod_alert_fingerprint_is_sha256_of_namespace_kind_name() -> None:
    signal = parse_one(namespace="prod", pod="api-1")
    assert signal.target is not None
    assert (signal.target.kind, signal.target.name, signal.target.namespace) == (
        "Pod",
        "api-1",
        "prod",
    )
    assert signal.fingerprint == hashlib.sha256(b"prod:Pod:api-1").hexdigest()


@pytest.mark.parametrize(
    ("labels", "kind", "name"),
    [
        ({"deployment": "web", "pod": "web-1", "node": "n1"}, "Deployment", "web"),
        ({"statefulset": "db", "pod": "db-0"}, "StatefulSet", "db"),
        ({"daemonset": "agent", "node": "n1"}, "DaemonSet", "agent"),
        ({"deployment": "web", "daemonset": "agent"}, "DaemonSet", "agent"),
        ({"cronjob": "backup", "pod": "backup-1"}, "CronJob", "backup"),
        ({"horizontalpodautoscaler": "web", "pod": "p"}, "HorizontalPodAutoscaler", "web"),
        ({"persistentvolumeclaim": "data", "pod": "p"}, "PersistentVolumeClaim", "data"),
        ({"poddisruptionbudget": "web", "pod": "p"}, "PodDisruptionBudget", "web"),
        ({"replicaset": "web-abc", "pod": "p"}, "ReplicaSet", "web-abc"),
        # Pod and Node share the last tier; the kind name breaks the tie, as in Kubernaut
        ({"pod": "api-1", "node": "n1"}, "Node", "n1"),
        ({"node": "n1", "pod": ""}, "Node", "n1"),
    ],
)
def test_target_preference(labels: dict[str, str], kind: str, name: str) -> None:
    signal = parse_one(**labels)
    assert signal.target is not None
    assert (signal.target.kind, signal.target.name) == (kind, name)


def test_cluster_scoped_targets_have_no_namespace_unless_labelled() -> None:
    signal = parse_one(pod="", node="worker-1", namespace="")
    assert signal.target is not None and signal.target.namespace == ""
    assert signal.fingerprint == hashlib.sha256(b":Node:worker-1").hexdigest()
    labelled = parse_one(pod="", node="worker-1", namespace="monitoring")
    assert labelled.fingerprint == hashlib.sha256(b"monitoring:Node:worker-1").hexdigest()
    pv = parse_one(pod="", namespace="", persistentvolume="pv-1")
    assert pv.target is not None and pv.target.namespace == ""


def test_namespaced_target_without_namespace_defaults_to_default() -> None:
    signal = parse_one(namespace="", pod="api-1")
    assert signal.target is not None and signal.target.namespace == "default"


def test_exported_namespace_wins_when_valid() -> None:
    assert parse_one(exported_namespace="team-a", namespace="monitoring").target.namespace == (  # type: ignore[union-attr]
        "team-a"
    )
    body = webhook(alert(starts_at=rfc3339(NOW), exported_namespace="Not_Valid"))
    [item] = parse_webhook(orjson.dumps(body), NOW, FRESH)
    assert isinstance(item, Invalid) and "alerts[0].labels.exported_namespace" in item.error


def test_scrape_labels_are_never_targets() -> None:
    signal = parse_one(
        pod="",
        job="kube-state-metrics",
        service="svc",
        instance="10.0.0.1:8080",
        endpoint="http",
        container="app",
    )
    assert signal.target is None
    assert "deployment" in signal.target_hint


def test_invalid_resource_name_is_not_a_candidate() -> None:
    assert parse_one(pod="API_1").target is None
    assert parse_one(pod="API_1", node="n1").target.kind == "Node"  # type: ignore[union-attr]


def test_cluster_label_is_part_of_the_fingerprint() -> None:
    signal = parse_one(cluster="eu-1")
    assert signal.cluster_id == "eu-1"
    assert signal.fingerprint == hashlib.sha256(b"eu-1:prod:Pod:api-1").hexdigest()


def test_one_group_of_two_clusters_keeps_each_alerts_cluster() -> None:
    """Alertmanager grouping by alertname puts both clusters' alerts in one webhook with no
    common `cluster`: each alert's own label still names its cluster, so the same Pod in two
    clusters is two resources, and each the same one it was when alone in its group."""
    one = alert(starts_at=rfc3339(NOW), namespace="prod", pod="web-0", cluster="c1")
    two = alert(starts_at=rfc3339(NOW), namespace="prod", pod="web-0", cluster="c2")
    both = webhook(one, two)
    assert "cluster" not in both["commonLabels"]  # type: ignore[operator]
    first, second = parse_webhook(orjson.dumps(both), NOW, FRESH)
    assert isinstance(first, Signal) and isinstance(second, Signal)
    assert (first.cluster_id, second.cluster_id) == ("c1", "c2")
    [alone] = parse_webhook(orjson.dumps(webhook(one)), NOW, FRESH)
    assert isinstance(alone, Signal) and alone.fingerprint == first.fingerprint
    assert first.fingerprint == hashlib.sha256(b"c1:prod:Pod:web-0").hexdigest()


def test_severity_and_name_are_passed_through_truncated_never_refused() -> None:
    signal = parse_one(severity="x" * 80, alertname="A" * 300)
    assert signal.severity == "x" * 50
    assert signal.signal_name == "A" * 253
    assert parse_one(severity="").severity == "unknown"
    assert parse_one(severity="P1-page-now").severity == "P1-page-now"


def test_the_name_is_the_alerts_own_alertname() -> None:
    """As Kubernaut reads it: `commonLabels.alertname` neither names an alert without one nor
    renames one (Alertmanager's commonLabels are the labels all its alerts share)."""
    nameless = webhook(alert(starts_at=rfc3339(NOW), pod="p", alertname=""))  # "": left out
    nameless["commonLabels"] = {"alertname": "FromCommon"}
    [item] = parse_webhook(orjson.dumps(nameless), NOW, FRESH)
    assert isinstance(item, Invalid) and "alerts[0].labels.alertname: required" in item.error
    named = webhook(alert(starts_at=rfc3339(NOW), pod="p", alertname="Own"))
    named["commonLabels"] = {"alertname": "FromCommon"}
    [signal] = parse_webhook(orjson.dumps(named), NOW, FRESH)
    assert isinstance(signal, Signal) and signal.signal_name == "Own"


def test_common_labels_merge_over_alert_labels_but_the_target_is_the_alerts_own() -> None:
    body = webhook(alert(starts_at=rfc3339(NOW), pod="from-alert"))
    body["commonLabels"] = {"pod": "from-common"}
    body["commonAnnotations"] = {"runbook": "http://runbook"}
    [signal] = parse_webhook(orjson.dumps(body), NOW, FRESH)
    assert isinstance(signal, Signal)
    assert signal.labels["pod"] == "from-common"
    assert signal.target is not None and signal.target.name == "from-alert"
    assert signal.annotations["runbook"] == "http://runbook"


def test_firing_time_is_starts_at_or_receive_time_for_zero() -> None:
    old = NOW - timedelta(days=3)
    [signal] = parse_webhook(orjson.dumps(webhook(alert(starts_at=rfc3339(old)))), NOW, FRESH)
    assert isinstance(signal, Signal) and signal.firing_time == old
    zero = webhook(alert(starts_at="0001-01-01T00:00:00Z"))
    [signal] = parse_webhook(orjson.dumps(zero), NOW, FRESH)
    assert isinstance(signal, Signal) and signal.firing_time == NOW


def test_future_starts_at_beyond_skew_is_invalid_alone() -> None:
    future = rfc3339(NOW + timedelta(minutes=3))
    ok = rfc3339(NOW + timedelta(minutes=1))
    body = webhook(alert(starts_at=future), alert(starts_at=ok, pod="api-2"))
    first, second = parse_webhook(orjson.dumps(body), NOW, FRESH)
    assert isinstance(first, Invalid) and "alerts[0].startsAt" in first.error
    assert isinstance(second, Signal)


def test_resolved_status() -> None:
    body = webhook(alert(status="resolved", starts_at=rfc3339(NOW)), status="resolved")
    [signal] = parse_webhook(orjson.dumps(body), NOW, FRESH)
    assert isinstance(signal, Signal) and signal.resolved


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"alerts": []}', "at least one alert"),
        (b'{"alerts": {}}', "alerts: must be an array"),
        (b'{"version": "4"}', r"alerts: must be an array of alerts \(missing\)"),
        (b'{"alerts": null}', r"alerts: must be an array of alerts \(null\)"),
        # read as sent, unlike Kubernaut's Go decoder: the key in another case is named
        (b'{"Alerts": [{}]}', r"\(missing; keys are case-sensitive: 'Alerts' is not 'alerts'\)"),
        (b'{"alerts": [{}], "commonLabels": []}', "commonLabels"),
    ],
)
def test_envelope_errors_fail_the_request(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_webhook(body, NOW, FRESH)


@pytest.mark.parametrize(
    ("bad_alert", "message"),
    [
        ("not an object", "alerts[0]: must be an object"),
        ({"labels": {"pod": "x"}}, "alerts[0].labels.alertname: required"),
        ({}, "alerts[0].labels.alertname: required"),
        ({"labels": {"alertname": ""}}, "alerts[0].labels.alertname: must not be empty"),
        ({"labels": None}, "alerts[0].labels: must be an object of strings, not null"),
        ({"labels": {"alertname": "A", "pod": 5}}, "alerts[0].labels.pod: must be a string"),
        ({"labels": {"alertname": "A"}, "status": "pending"}, "alerts[0].status"),
        ({"labels": {"alertname": "A"}, "startsAt": "yesterday"}, "alerts[0].startsAt"),
    ],
)
def test_alert_errors_name_the_field(bad_alert: object, message: str) -> None:
    [item] = parse_webhook(orjson.dumps({"alerts": [bad_alert]}), NOW, FRESH)
    assert isinstance(item, Invalid)
    assert message in item.error


def test_each_alert_keeps_the_webhook_as_it_would_be_for_it_alone() -> None:
    starts = rfc3339(NOW)
    body = webhook(alert(pod="one-1", starts_at=starts), alert(pod="two-1", starts_at=starts))
    raw = orjson.dumps(body)
    first, second = parse_webhook(raw, NOW, Freshness())
    assert isinstance(first, Signal) and isinstance(second, Signal)
    for signal, pod in ((first, "one-1"), (second, "two-1")):
        kept = orjson.loads(signal.original_payload)
        assert kept == signal.payload
        assert [a["labels"]["pod"] for a in kept["alerts"]] == [pod]
        assert kept["receiver"] == body["receiver"]  # the envelope is kept
    solo = orjson.dumps(webhook(alert(pod="solo-1", starts_at=starts)))
    (only,) = parse_webhook(solo, NOW, Freshness())
    assert isinstance(only, Signal)
    assert only.original_payload == solo
