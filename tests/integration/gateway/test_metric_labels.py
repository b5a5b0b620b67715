"""Label values come from closed sets: made-up severities and alert names cannot make an
unbounded number of series."""

from __future__ import annotations

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
