"""The Gateway's metrics: label values come from closed sets (made-up severities and alert
names cannot make an unbounded number of series), and the event loop's lag is measured."""

from __future__ import annotations

import time

import httpx

from tests.support.services import ServiceProcess, alert, webhook


def series(gateway: ServiceProcess, name: str) -> list[str]:
    text = httpx.get(f"{gateway.ops_url}/metrics", timeout=10).text
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_made_up_label_values_fold_into_other(gateway: ServiceProcess) -> None:
    alerts = [
        alert(alertname=f"Made-up-{i}", severity=f"sev-{i}", pod="labels-1") for i in range(300)
    ]
    alerts[0]["labels"]["severity"] = "Critical"  # type: ignore[index]
    with gateway.client() as c:
        body = webhook(*alerts)
        body["commonLabels"] = {}
        assert c.post("/api/v1/signals/prometheus", json=body).status_code == 207
    received = series(gateway, "gateway_signals_received_total")
    severities = {line.split('severity="')[1].split('"')[0] for line in received}
    assert severities <= {
        "critical",
        "high",
        "warning",
        "medium",
        "low",
        "info",
        "error",
        "unknown",
        "other",
    }
    assert {"critical", "other"} <= severities
    deduplicated = series(gateway, "gateway_signals_deduplicated_total")
    assert len(deduplicated) <= 201 and any('signal_name="other"' in s for s in deduplicated)


def test_the_event_loop_lag_is_measured(gateway: ServiceProcess) -> None:
    """A timer every 100 ms: within a few seconds the Gateway has observed its loop."""
    deadline = time.monotonic() + 5
    while True:
        text = httpx.get(f"{gateway.ops_url}/metrics", timeout=10).text
        (count,) = [
            line for line in text.splitlines() if line.startswith("event_loop_lag_seconds_count")
        ]
        if float(count.split()[-1]) >= 3:
            break
        assert time.monotonic() < deadline, count
        time.sleep(0.1)
