"""Alertmanager webhook (payload version 4) → one `Signal` per alert.

Each alert is validated on its own: a bad alert becomes an `Invalid` item (its own 207
result) and never sinks the others. Only problems with the envelope fail the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from signalgate.gateway.adapters.identity import check_cluster_id, check_namespace
from signalgate.gateway.adapters.parsing import (
    Freshness,
    PayloadError,
    case_hint,
    check_not_future,
    check_signal_size,
    json_type,
    parse_object,
    parse_timestamp,
    string_map,
)
from signalgate.gateway.adapters.targets import candidates, unusable
from signalgate.gateway.kinds import DEFAULT_CATALOG, KindCatalog, is_namespaced
from signalgate.gateway.signal import (
    MAX_SEVERITY,
    MAX_SIGNAL_NAME,
    AdapterItem,
    Invalid,
    Signal,
)
from signalgate.remediation.model import TargetResource

CLUSTER_LABEL = "cluster"
# the usual label keys, for the no_target_resource message (any kind's singular name works)
TARGET_HINT = (
    "deployment, statefulset, daemonset, cronjob, replicaset, horizontalpodautoscaler, "
    "persistentvolumeclaim, persistentvolume, poddisruptionbudget, pod, node"
)
_ZERO_TIME_YEAR = 1  # Go's zero time.Time, sent by Alertmanager for "not set"


@dataclass(frozen=True, slots=True)
class _Webhook:
    """What every alert of one webhook is read with: the envelope's shared parts and the
    request's clock, freshness window and kind catalog."""

    common_labels: dict[str, str]
    common_annotations: dict[str, str]
    status: object
    cluster_id: str
    now: datetime
    freshness: Freshness
    catalog: KindCatalog


def parse_webhook(
    body: bytes, now: datetime, freshness: Freshness, catalog: KindCatalog = DEFAULT_CATALOG
) -> list[AdapterItem]:
    """All alerts of a webhook, in input order; `PayloadError` if the envelope is invalid.

    The cluster is the alert's own `cluster` label, else `commonLabels.cluster` (Kubernaut
    reads only the latter): Alertmanager leaves it out of `commonLabels` as soon as one
    group holds alerts of two clusters, and the same Pod's alert would then change RR with
    whatever else shares its group.

    Each alert's original payload is the webhook as it would have been for that alert alone
    (the envelope with `alerts: [that alert]`): a remediation keeps what it is about, and a
    full webhook of 5,000 alerts does not store its 4 MiB body 5,000 times."""
    payload = parse_object(body)
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        found = json_type(alerts) if "alerts" in payload else "missing"
        found += case_hint(payload, "alerts")  # "" when `alerts` was sent
        raise PayloadError(f"alerts: must be an array of alerts ({found})")
    if not alerts:
        raise PayloadError("alerts: must contain at least one alert")
    common_labels = string_map(payload.get("commonLabels"), "commonLabels")
    cluster_id = common_labels.get(CLUSTER_LABEL, "")
    if cluster_id:
        check_cluster_id(cluster_id, "commonLabels.cluster")
    webhook = _Webhook(
        common_labels,
        string_map(payload.get("commonAnnotations"), "commonAnnotations"),
        payload.get("status"),
        cluster_id,
        now,
        freshness,
        catalog,
    )
    items: list[AdapterItem] = []
    envelope = {key: value for key, value in payload.items() if key != "alerts"}
    for index, alert in enumerate(alerts):
        if len(alerts) == 1:
            alert_payload, alert_body = payload, body
        else:
            alert_payload = {**envelope, "alerts": [alert]}
            alert_body = orjson.dumps(alert_payload)
        try:
            check_signal_size(alert_body, f"alerts[{index}]")
            items.append(_parse_alert(alert, index, alert_body, alert_payload, webhook))
        except PayloadError as exc:
            items.append(Invalid(str(exc)))
    return items


def _parse_alert(
    alert: object, index: int, body: bytes, payload: dict[str, Any], webhook: _Webhook
) -> Signal:
    where = f"alerts[{index}]"
    now, catalog = webhook.now, webhook.catalog
    if not isinstance(alert, dict):
        raise PayloadError(f"{where}: must be an object, not {json_type(alert)}")
    if alert.get("labels", {}) is None:
        # absent labels lack an alertname; null ones are the wrong type, said as such
        raise PayloadError(f"{where}.labels: must be an object of strings, not null")
    own_labels = string_map(alert.get("labels"), f"{where}.labels")
    labels = {**own_labels, **webhook.common_labels}
    annotations = {
        **string_map(alert.get("annotations"), f"{where}.annotations"),
        **webhook.common_annotations,
    }
    # the alert's own name, as Kubernaut reads it (commonLabels cannot rename an alert)
    name = own_labels.get("alertname")
    if name is None:
        raise PayloadError(f"{where}.labels.alertname: required")
    if not name:  # sent, but empty: "required" sent the sender looking for a missing label
        raise PayloadError(f"{where}.labels.alertname: must not be empty")

    status = alert.get("status") or webhook.status or "firing"
    if status not in ("firing", "resolved"):
        raise PayloadError(f"{where}.status: must be 'firing' or 'resolved', not {status!r:.40}")

    starts_at = parse_timestamp(alert.get("startsAt"), f"{where}.startsAt")
    if starts_at is not None and starts_at.year == _ZERO_TIME_YEAR:
        starts_at = None
    if starts_at is not None and status == "firing":
        check_not_future(starts_at, now, webhook.freshness, f"{where}.startsAt")

    cluster_id = webhook.cluster_id
    own_cluster = own_labels.get(CLUSTER_LABEL, "")
    if own_cluster and own_cluster != cluster_id:
        check_cluster_id(own_cluster, f"{where}.labels.cluster")
        cluster_id = own_cluster
    target, others = _targets(own_labels, where, catalog)
    return Signal(
        source="prometheus",
        signal_name=name[:MAX_SIGNAL_NAME],
        severity=(own_labels.get("severity") or "unknown")[:MAX_SEVERITY],
        target=target,
        candidates=others,
        firing_time=starts_at or now,
        received_time=now,
        original_payload=body,
        payload=payload,
        cluster_id=cluster_id,
        resolved=status == "resolved",
        labels=labels,
        annotations=annotations,
        # for the no_target_resource message only: made when there is no target
        target_hint="" if target else ", ".join((TARGET_HINT, *catalog.custom_label_keys)),
        unusable_targets=() if target else unusable(own_labels, catalog),
    )


def _namespace(labels: dict[str, str], where: str) -> str | None:
    """`exported_namespace` (federated Prometheus) before `namespace`; None when neither is
    set. Kubernaut ignores an invalid one; we refuse it, so `Kube-System` never passes for
    another namespace (nor falls back to `default`)."""
    for key in ("exported_namespace", "namespace"):
        value = labels.get(key, "")
        if value:
            return check_namespace(value, f"{where}.labels.{key}")
    return None


def _targets(
    labels: dict[str, str], where: str, catalog: KindCatalog
) -> tuple[TargetResource | None, tuple[TargetResource, ...]]:
    """The chosen target and the runners-up, from the alert's own labels (see `targets`).

    A namespace label is kept for every kind (a Node alert from a namespaced exporter keeps
    it, as in Kubernaut); without one a namespaced kind lives in `default`, a
    cluster-scoped one in none."""
    namespace = _namespace(labels, where)
    found = []
    for candidate in candidates(labels, catalog):
        info = catalog.lookup(candidate.kind)
        if namespace is not None:
            ns = namespace
        else:
            ns = "default" if is_namespaced(catalog, candidate.kind) else ""
        found.append(
            TargetResource(
                candidate.kind, candidate.name, ns, info.api_version if info is not None else ""
            )
        )
    if not found:
        return None, ()
    return found[0], tuple(found[1:])
