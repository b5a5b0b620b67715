"""Assertions of the HTTP contract shared by the integration and end-to-end tiers.

They restate the contract (docs/gateway.md, Errors) rather than import the service's constants, so a
change in the service cannot silently change what the tests expect.
"""

from __future__ import annotations

from typing import Any

import httpx

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "content-security-policy": "default-src 'none'",
    "referrer-policy": "no-referrer",
}


def problem(response: httpx.Response, status: int, slug: str, detail: str = "") -> dict[str, Any]:
    """Assert an RFC 9457 problem document of `status`/`slug` whose detail contains `detail`;
    return it."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == f"https://kubernaut.ai/problems/{slug}", body
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    assert detail in body["detail"], body["detail"]
    return body
