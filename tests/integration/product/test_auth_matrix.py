"""Every route of both services, with no token, an unknown token, and a token holding every
scope but the one the route needs → 401 / 401 / 403, over real HTTP.

The routes come from the services' own routing tables (the apps `serve` runs), so a route
added without a row in `NEEDED` fails here until someone decides what it needs.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Route

from signalgate.common.auth import StaticTokenAuth
from signalgate.common.ops import Readiness, build_ops_app
from signalgate.datastorage.app import NOT_PROVIDED
from signalgate.datastorage.app import build_api_app as datastorage_app
from signalgate.datastorage.service import SCOPES as DS_SCOPES
from signalgate.datastorage.service import DataStorageService
from signalgate.datastorage.settings import DataStorageSettings
from signalgate.gateway.app import build_api_app as gateway_app
from signalgate.gateway.service import GatewayService
from signalgate.gateway.settings import SCOPES as GW_SCOPES
from signalgate.gateway.settings import GatewaySettings
from tests.integration.datastorage.dstools import datastorage_process
from tests.support.services import ServiceProcess, gateway_process

# (service, method, path template) -> the scope the route needs; None: public by design
NEEDED: dict[tuple[str, str, str], str | None] = {
    ("gateway", "POST", "/api/v1/signals/prometheus"): "signals:write",
    ("gateway", "POST", "/api/v1/signals/kubernetes-event"): "signals:write",
    ("gateway", "GET", "/api/v1/remediation-requests"): "remediations:read",
    ("gateway", "GET", "/api/v1/remediation-requests/{name}"): "remediations:read",
    ("gateway", "PATCH", "/api/v1/remediation-requests/{name}/status"): "remediations:write",
    ("gateway", "GET", "/openapi.json"): None,
    ("datastorage", "GET", "/api/v1/audit/events"): "audit:read",
    ("datastorage", "POST", "/api/v1/audit/events"): "audit:write",
    ("datastorage", "POST", "/api/v1/audit/events/batch"): "audit:write",
    ("datastorage", "GET", "/api/v1/audit/verify-chain"): "audit:read",
    ("datastorage", "POST", "/api/v1/audit/verify-chain"): "audit:read",
    ("datastorage", "GET", "/api/v1/audit/capabilities"): None,
    ("datastorage", "GET", "/openapi.json"): None,
    ("datastorage", "GET", "/healthz"): None,
    ("datastorage", "GET", "/readyz"): None,
}
# Kubernaut operations DataStorage answers 501, to a caller holding audit:read or audit:write
NOT_PROVIDED_ROUTES = {
    ("datastorage", m, path) for path, methods, _ in NOT_PROVIDED for m in methods
}
# the ops listener of both services: probes (ours and Kubernaut's paths) and scrapes, no
# token by design
OPS_PUBLIC = {
    ("GET", path)
    for path in ("/healthz", "/readyz", "/metrics", "/health", "/health/live", "/health/ready")
}
UNKNOWN = "a-token-nobody-issued"


def starlette_of(app: Any) -> Starlette:
    """The routing app inside the middleware layers."""
    while not isinstance(app, Starlette):
        app = app.app
    return app


def routes_of(app: Any) -> set[tuple[str, str]]:
    found = set()
    for route in starlette_of(app).routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, route.path))
    return found


def routing_table(tmp_path: Path) -> set[tuple[str, str, str]]:
    gateway = GatewayService.from_settings(GatewaySettings(data_dir=tmp_path / "gw-table"))
    datastorage = DataStorageService.from_settings(
        DataStorageSettings(data_dir=tmp_path / "ds-table")
    )
    return {("gateway", m, p) for m, p in routes_of(gateway_app(gateway))} | {
        ("datastorage", m, p) for m, p in routes_of(datastorage_app(datastorage))
    }


def lacking(prefix: str, scope: str) -> str:
    """The test token holding every scope but `scope`."""
    return f"{prefix}-all-but-{scope.replace(':', '-')}"


def all_but(scopes: tuple[str, ...], needed: str) -> str:
    """Every scope except `needed` and its narrower forms (`audit:write:gateway`)."""
    return ",".join(s for s in scopes if s != needed and not s.startswith(needed + ":"))


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProcess]]:
    root = tmp_path_factory.mktemp("matrix")
    gw_tokens = {lacking("gw", s): all_but(GW_SCOPES, s) for s in GW_SCOPES}
    ds_tokens = {lacking("ds", s): all_but(DS_SCOPES, s) for s in ("audit:read", "audit:write")}
    gateway = gateway_process(root / "gw", tokens=gw_tokens).start()
    datastorage = datastorage_process(root / "ds", tokens=ds_tokens).start()
    yield {"gateway": gateway, "datastorage": datastorage}
    gateway.stop()
    datastorage.stop()


def test_every_route_has_a_row(tmp_path: Path) -> None:
    table = routing_table(tmp_path)
    rows = set(NEEDED) | NOT_PROVIDED_ROUTES
    assert table == rows, (
        f"routes without a row: {sorted(table - rows)}; "
        f"rows without a route: {sorted(rows - table)}"
    )
    ops = routes_of(build_ops_app(_ready, CollectorRegistry()))
    assert ops == OPS_PUBLIC


async def _ready() -> Readiness:
    return Readiness(True)


@pytest.mark.parametrize(("service", "method", "path"), sorted(NEEDED))
def test_route_refuses_callers_without_its_scope(
    services: dict[str, ServiceProcess], service: str, method: str, path: str
) -> None:
    needed = NEEDED[(service, method, path)]
    process = services[service]
    url = process.api_url + path.replace("{name}", "rr-0123456789ab-0123abcd")
    body: Any = {} if method in ("POST", "PATCH") else None
    if needed is None:
        answer = httpx.request(method, url, timeout=10)
        assert answer.status_code == 200, answer.text
        return
    prefix = "gw" if service == "gateway" else "ds"
    for token, status in ((None, 401), (UNKNOWN, 401), (lacking(prefix, needed), 403)):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = httpx.request(method, url, json=body, headers=headers, timeout=10)
        assert answer.status_code == status, (token, answer.status_code, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        # RFC 6750: a 401 names the scheme it wants
        assert answer.headers.get("www-authenticate") == ("Bearer" if status == 401 else None)


@pytest.mark.parametrize("service", ["gateway", "datastorage"])
def test_ops_routes_are_public_by_design(services: dict[str, ServiceProcess], service: str) -> None:
    for _, path in sorted(OPS_PUBLIC):
        assert httpx.get(services[service].ops_url + path, timeout=10).status_code == 200


def test_tokens_are_compared_in_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token check goes through hmac.compare_digest for every entry (an `==` would
    return early on the first differing byte)."""
    tokens = tmp_path / "tokens"
    lines = [f"{hashlib.sha256(t.encode()).hexdigest()} signals:write" for t in ("a", "b", "c")]
    tokens.write_text("\n".join(lines) + "\n")
    authenticator = StaticTokenAuth.from_file(tokens, GW_SCOPES)
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(left: bytes, right: bytes) -> bool:
        compared.append((left, right))
        return real(left, right)

    monkeypatch.setattr("signalgate.common.auth.hmac.compare_digest", spy)
    assert authenticator.authenticate("Bearer a").scopes == frozenset({"signals:write"})
    assert len(compared) == 3  # every entry, not stopping at the match
    with pytest.raises(Exception, match="unknown token"):
        authenticator.authenticate("Bearer nope")
    assert len(compared) == 6
