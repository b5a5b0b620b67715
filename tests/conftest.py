"""Shared fixtures: real PostgreSQL and Redis servers from the system binaries, and a real
Kubernetes API server (etcd + kube-apiserver built from their Go modules), on free ports.

One server of each per test session; each test that needs a database gets a fresh one (a
fresh namespace on the API server).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from e2ecov.kubeapi import KubeAPIServer
from e2ecov.recipes import PostgresServer, RedisServer

Server = TypeVar("Server", PostgresServer, RedisServer, KubeAPIServer)


def _running(server: Server) -> Iterator[Server]:
    """Start `server` for the fixture's lifetime and always clean it up."""
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    yield from _running(PostgresServer())


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """A new, empty database on the session's server."""
    return postgres_server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A server of the test's own, for tests that stop and restart it (outages)."""
    yield from _running(PostgresServer())


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own."""
    yield from _running(RedisServer())


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    yield from _running(RedisServer())


REPO = Path(__file__).resolve().parents[1]
CRD_FILE = REPO / "deploy" / "kubernetes" / "remediationrequest-crd.yaml"


def kube_testenv_bin() -> Path:
    """etcd and kube-apiserver, built from their Go modules on first use (cached by version
    outside the work tree; `make kube-testenv` does the same ahead of the tests)."""
    built = subprocess.run(
        ["bash", str(REPO / "tools" / "kube-testenv" / "build.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        raise RuntimeError(f"tools/kube-testenv/build.sh failed:\n{built.stderr[-4000:]}")
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def kube_apiserver() -> Iterator[KubeAPIServer]:
    """A real kube-apiserver + etcd for the session, with the RR CRD installed."""
    yield from _running(KubeAPIServer(bin_dir=kube_testenv_bin(), crds=[CRD_FILE]))


@pytest.fixture
def kube_namespace(kube_apiserver: KubeAPIServer) -> str:
    """A new, empty namespace on the session's API server."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    kube_apiserver.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name
