"""Gateway processes for the HTTP tests: real subprocesses on free ports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2ecov.recipes import PostgresServer
from tests.support.kube import kube_gateway
from tests.support.services import ServiceProcess, gateway_process


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A Gateway on SQLite shared by the tests of one module."""
    with gateway_process(tmp_path_factory.mktemp("gateway")).start() as service:
        yield service


def start_gateway(
    tmp_path: Path, backend: str, postgres: PostgresServer | None, **env: str
) -> ServiceProcess:
    settings = dict(env)
    if backend == "postgres":
        assert postgres is not None
        settings["SIGNALGATE_STORE__DSN"] = postgres.create_database(f"gw_{uuid.uuid4().hex[:12]}")
    return gateway_process(tmp_path / "gw", env=settings).start()


@pytest.fixture(params=["sqlite", "postgres", "kubernetes"])
def any_gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServiceProcess]:
    """A fresh Gateway per test, on each backend in turn (Kubernetes: RRs as custom
    resources in a fresh namespace, the Gateway running as its own ServiceAccount)."""
    if request.param == "kubernetes":
        server = request.getfixturevalue("kube_apiserver")
        namespace = request.getfixturevalue("kube_namespace")
        with kube_gateway(
            server,
            namespace,
            tmp_path / "gw",
            auth="static",
            env={"SIGNALGATE_SCOPE__SOURCE": "settings"},
        ).start() as service:
            yield service
        return
    postgres = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    service = start_gateway(tmp_path, request.param, postgres)
    try:
        yield service
    finally:
        service.stop()
