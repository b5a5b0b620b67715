"""Fixtures for the end-to-end suite: clients for the stack e2ecov started.

Run under e2ecov only (`make e2e-coverage`). Without its environment every test fails at
once with one sentence saying how to run them — never a skip, so a CI job that forgot the
stack cannot pass by running nothing. Plain `pytest` does not collect this directory
(`testpaths` in pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.outage import DataStorageOutage
from tests.e2e.stack import Audit, Stack, token

TIMEOUT = httpx.Timeout(30.0)


@pytest.fixture(scope="session")
def stack() -> Stack:
    try:
        return Stack.from_environ()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _under_e2ecov(stack: Stack) -> None:
    """Every test needs the stack: fail clearly (not skip) when it is not there."""


def _client(base_url: str, bearer: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=TIMEOUT, trust_env=False)


@pytest.fixture(scope="session")
def gateway(stack: Stack) -> Iterator[httpx.Client]:
    """The Gateway's API with the admin token (signals:write, remediations:read/write)."""
    with _client(stack.gateway, token("gateway-admin")) as client:
        yield client


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def gateway_each_store(request: pytest.FixtureRequest, stack: Stack) -> Iterator[httpx.Client]:
    """The admin client of the Gateway on PostgreSQL, then of the one on SQLite (its
    embedded default, `gateway-sqlite`): a module whose tests take this as their `gateway`
    checks every decision on both SQL stores."""
    url = stack.gateway if request.param == "postgres" else stack.gateway_sqlite
    with _client(url, token("gateway-admin")) as client:
        yield client


@pytest.fixture(scope="session")
def anonymous(stack: Stack) -> Iterator[httpx.Client]:
    """The Gateway's API without a token."""
    with _client(stack.gateway, None) as client:
        yield client


@pytest.fixture(scope="session")
def reader(stack: Stack) -> Iterator[httpx.Client]:
    """The Gateway's API with a remediations:read-only token."""
    with _client(stack.gateway, token("gateway-reader")) as client:
        yield client


@pytest.fixture(scope="session")
def ops(stack: Stack) -> Iterator[httpx.Client]:
    """The Gateway's ops listener (/healthz, /readyz, /metrics; no token)."""
    with _client(stack.gateway_ops, None) as client:
        yield client


@pytest.fixture(scope="session")
def audit(stack: Stack) -> Iterator[Audit]:
    """DataStorage's query API with the audit:read token."""
    with _client(stack.datastorage, token("audit-reader")) as client:
        yield Audit(client)


@pytest.fixture(scope="session")
def datastorage_outage(stack: Stack) -> Iterator[DataStorageOutage]:
    """Stops and restarts the stack's DataStorage; a restarted one lives until the session ends."""
    outage = DataStorageOutage(stack)
    try:
        yield outage
    finally:
        outage.close()
