"""An unexpected error becomes a 500 problem that leaks nothing.

The store here is a fake that raises a programming error: a real store cannot be made to
fail that way on purpose. Runs in-process through the ASGI app.
"""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from signalgate.common.audit import LoggingAuditSink
from signalgate.common.auth import NoAuth
from signalgate.gateway.app import build_api_app
from signalgate.gateway.service import GatewayService
from signalgate.gateway.settings import GatewaySettings
from tests.support.services import alert, webhook


class ExplodingStore:
    """Fake store: every call fails with an unexpected error carrying a secret."""

    def __getattr__(self, name: str) -> Any:
        async def explode(*args: object, **kwargs: object) -> None:
            raise RuntimeError("password=hunter2 in a stack trace")

        return explode


async def test_unexpected_error_is_a_plain_500_problem() -> None:
    service = GatewayService(
        GatewaySettings(),
        ExplodingStore(),
        NoAuth(),
        LoggingAuditSink(),
        CollectorRegistry(),
    )
    transport = httpx.ASGITransport(app=build_api_app(service), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.post("/api/v1/signals/prometheus", json=webhook(alert()))
        listing = await client.get("/api/v1/remediation-requests")
    for answer in (response, listing):
        assert answer.status_code == 500
        assert answer.headers["content-type"] == "application/problem+json"
        body = answer.json()
        assert body["type"] == "https://kubernaut.ai/problems/internal-error"
        assert body["detail"] == "Internal server error"
        assert "hunter2" not in answer.text
        assert answer.headers["x-request-id"] == body["request_id"]
        assert answer.headers["x-frame-options"] == "DENY"
