"""CORS and Kubernaut's response headers on the Gateway's API listener, over real HTTP.

CORS is off by default (a preflight is just an OPTIONS on a POST route: 405, no CORS
headers); with `server.corsAllowedOrigins` set, a preflight from a listed origin gets 200
with the allowed methods and headers, and an unlisted origin gets no allowance.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.services import ServiceProcess, gateway_process

ORIGIN = "https://console.example"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}
PROM = "/api/v1/signals/prometheus"


@pytest.fixture(scope="module")
def cors_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    data: Path = tmp_path_factory.mktemp("gw-cors")
    with gateway_process(
        data, env={"SIGNALGATE_SERVER__CORSALLOWEDORIGINS": ORIGIN}
    ).start() as service:
        yield service


def test_cors_is_off_by_default(gateway: ServiceProcess) -> None:
    answer = httpx.options(f"{gateway.api_url}{PROM}", headers=PREFLIGHT)
    assert answer.status_code == 405
    assert "access-control-allow-origin" not in answer.headers
    with gateway.client() as client:
        listing = client.get("/api/v1/remediation-requests", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in listing.headers


def test_preflight_from_an_allowed_origin_is_200(cors_gateway: ServiceProcess) -> None:
    answer = httpx.options(f"{cors_gateway.api_url}{PROM}", headers=PREFLIGHT)
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in answer.headers["access-control-allow-methods"]
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert answer.headers["x-request-id"]  # the usual headers on every answer
    with cors_gateway.client() as client:
        listing = client.get("/api/v1/remediation-requests", headers={"Origin": ORIGIN})
    assert listing.status_code == 200
    assert listing.headers["access-control-allow-origin"] == ORIGIN


def test_preflight_from_another_origin_is_not_allowed(cors_gateway: ServiceProcess) -> None:
    other = {**PREFLIGHT, "Origin": "https://evil.example"}
    answer = httpx.options(f"{cors_gateway.api_url}{PROM}", headers=other)
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers


def test_answers_carry_x_xss_protection(gateway: ServiceProcess) -> None:
    with gateway.client() as client:
        answer = client.get("/api/v1/remediation-requests")
        missing = client.get("/nowhere")
    for response in (answer, missing):
        assert response.headers["x-xss-protection"] == "1; mode=block"
        assert response.headers["x-content-type-options"] == "nosniff"
