"""Kubernaut's Gateway metrics on `/metrics`, where they have meaning standalone.

- `gateway_signals_parse_dropped_total{reason}`: an invalid alert of a multi-alert webhook;
- `gateway_circuit_breaker_state{name="datastorage"}`: 2 (open) while audit delivery cannot
  reach DataStorage, 0 otherwise;
- `gateway_owner_resolution_total`, `gateway_discovery_refresh_errors_total`: declared, and
  zero standalone (no owner walk, no API discovery).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from e2ecov.recipes import free_port
from tests.support.services import ServiceProcess, alert, gateway_process, webhook

PROM = "/api/v1/signals/prometheus"


def metric(service: ServiceProcess, sample: str) -> float | None:
    for line in httpx.get(f"{service.ops_url}/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_an_invalid_alert_of_a_webhook_counts_as_parse_dropped(gateway: ServiceProcess) -> None:
    sample = 'gateway_signals_parse_dropped_total{reason="invalid"}'
    before = metric(gateway, sample) or 0.0
    body = webhook(alert(pod="ok-1"), alert(pod="bad-1", namespace="Not_A_Namespace"))
    with gateway.client() as client:
        answer = client.post(PROM, json=body)
    assert answer.status_code == 207, answer.text
    assert answer.json()["summary"]["rejected"] == 1
    assert metric(gateway, sample) == before + 1
    text = httpx.get(f"{gateway.ops_url}/metrics").text
    assert "# TYPE gateway_owner_resolution_total counter" in text
    assert "gateway_discovery_refresh_errors_total 0.0" in text
    assert metric(gateway, 'gateway_circuit_breaker_state{name="datastorage"}') == 0.0


def test_circuit_breaker_opens_while_datastorage_is_unreachable(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    service = gateway_process(tmp_path / "gw", env={"SIGNALGATE_DATASTORAGE__URL": nowhere}).start()
    try:
        sample = 'gateway_circuit_breaker_state{name="datastorage"}'
        with service.client() as client:
            assert client.post(PROM, json=webhook(alert(pod="cb-1"))).status_code == 201
        deadline = time.monotonic() + 20
        while metric(service, sample) != 2.0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert metric(service, sample) == 2.0
    finally:
        service.stop()
