"""Alertmanager webhook (payload version 4) → one `Signal` per alert.

Each alert is validated on its own: a bad alert becomes an `Invalid` item (its own 207
result) and never sinks the others. Only problems with the envelope fail the request.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from signalgate.gateway.adapters.parsing import (
    DNS1123_LABEL,
    Freshness,
    PayloadError,
    check_not_future,
    default_namespace,
    json_type,
    parse_object,
    parse_timestamp,
)
from signalgate.gateway.signal import (
    MAX_SEVERITY,
    MAX_SIGNAL_NAME,
    AdapterItem,
    Invalid,
    Signal,
)
from signalgate.remediation.model import TargetResource

# Label key → kind, in preference order: first match wins (a pod alert that also names its
# node is about the pod, so Node comes last).
TARGET_LABELS: tuple[tuple[str, str], ...] = (
    ("deployment", "Deployment"),
    ("statefulset", "StatefulSet"),
    ("daemonset", "DaemonSet"),
    ("cronjob", "CronJob"),
    ("horizontalpodautoscaler", "HorizontalPodAutoscaler"),
    ("persistentvolume", "PersistentVolume"),
    ("persistentvolumeclaim", "PersistentVolumeClaim"),
    ("poddisruptionbudget", "PodDisruptionBudget"),
    ("replicaset", "ReplicaSet"),
    ("pod", "Pod"),
    ("node", "Node"),
)
TARGET_LABEL_KEYS = ", ".join(key for key, _ in TARGET_LABELS)
_RESOURCE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,251}[a-z0-9])?$")
_ZERO_TIME_YEAR = 1  # Go's zero time.Time, sent by Alertmanager for "not set"


def parse_webhook(body: bytes, now: datetime, freshness: Freshness) -> list[AdapterItem]:
    """All alerts of a webhook, in input order; `PayloadError` if the envelope is invalid."""
    payload = parse_object(body)
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        found = "missing" if alerts is None else json_type(alerts)
        raise PayloadError(f"alerts: must be an array of alerts ({found})")
    if not alerts:
        raise PayloadError("alerts: must contain at least one alert")
    common_labels = _string_map(payload.get("commonLabels"), "commonLabels")
    common_annotations = _string_map(payload.get("commonAnnotations"), "commonAnnotations")
    webhook_status = payload.get("status")
    items: list[AdapterItem] = []
    for index, alert in enumerate(alerts):
        try:
            items.append(
                _parse_alert(
                    alert,
                    index,
                    body,
                    payload,
                    now,
                    freshness,
                    common_labels,
                    common_annotations,
                    webhook_status,
                )
            )
        except PayloadError as exc:
            items.append(Invalid(str(exc)))
    return items


def _parse_alert(
    alert: object,
    index: int,
    body: bytes,
    payload: dict[str, Any],
    now: datetime,
    freshness: Freshness,
    common_labels: dict[str, str],
    common_annotations: dict[str, str],
    webhook_status: object,
) -> Signal:
    where = f"alerts[{index}]"
    if not isinstance(alert, dict):
        raise PayloadError(f"{where}: must be an object, not {json_type(alert)}")
    labels = {**_string_map(alert.get("labels"), f"{where}.labels"), **common_labels}
    annotations = {
        **_string_map(alert.get("annotations"), f"{where}.annotations"),
        **common_annotations,
    }
    name = labels.get("alertname", "")
    if not name:
        raise PayloadError(f"{where}.labels.alertname: required")

    status = alert.get("status") or webhook_status or "firing"
    if status not in ("firing", "resolved"):
        raise PayloadError(f"{where}.status: must be 'firing' or 'resolved', not {status!r:.40}")

    starts_at = parse_timestamp(alert.get("startsAt"), f"{where}.startsAt")
    if starts_at is not None and starts_at.year == _ZERO_TIME_YEAR:
        starts_at = None
    if starts_at is not None and status == "firing":
        check_not_future(starts_at, now, freshness, f"{where}.startsAt")

    return Signal(
        source="prometheus",
        signal_name=name[:MAX_SIGNAL_NAME],
        severity=(labels.get("severity") or "unknown")[:MAX_SEVERITY],
        target=_target(labels),
        firing_time=starts_at or now,
        received_time=now,
        original_payload=body,
        payload=payload,
        cluster_id=labels.get("cluster", ""),
        resolved=status == "resolved",
        labels=labels,
        annotations=annotations,
        target_hint=TARGET_LABEL_KEYS,
    )


def _string_map(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{where}: must be an object of strings, not {json_type(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise PayloadError(f"{where}.{key}: must be a string, not {json_type(item)}")
    return value


def _namespace(labels: dict[str, str]) -> str:
    for key in ("exported_namespace", "namespace"):
        value = labels.get(key, "")
        if DNS1123_LABEL.match(value):
            return value
    return ""


def _target(labels: dict[str, str]) -> TargetResource | None:
    for key, kind in TARGET_LABELS:
        value = labels.get(key)
        if value is not None and _RESOURCE_NAME.match(value):
            return TargetResource(kind, value, default_namespace(kind, _namespace(labels)))
    return None
