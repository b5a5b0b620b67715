"""Fixtures for the RR store contract: `store` (and `backend`, to open more stores on the
same database) for each backend as the Gateway runs it: SQLite and PostgreSQL behind the
duplicate coalescer, and Kubernetes custom resources on a real API server (a fresh namespace
per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from e2ecov.kubeapi import KubeAPIServer
from signalgate.kube.client import KubeClient
from signalgate.kube.config import config_from_dsn
from signalgate.remediation.coalesce import CoalescingStore
from signalgate.remediation.kubernetes import KubernetesStore
from signalgate.remediation.postgres import PostgresRemediationStore
from signalgate.remediation.sqlite import SqliteRemediationStore
from signalgate.remediation.store import RemediationStore
from tests.integration.remediation.rrcases import Backend


@pytest.fixture(params=["sqlite", "postgres", "kubernetes"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    clients: list[KubeClient] = []
    if request.param == "sqlite":
        path = tmp_path / "rr.db"
        made = Backend(
            "sqlite",
            lambda **kw: CoalescingStore(SqliteRemediationStore(path, **kw), batches_in_flight=1),
        )
    elif request.param == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        made = Backend(
            "postgres", lambda **kw: CoalescingStore(PostgresRemediationStore(dsn, **kw))
        )
    else:
        server: KubeAPIServer = request.getfixturevalue("kube_apiserver")
        namespace: str = request.getfixturevalue("kube_namespace")
        # the recipe's url is kubernetes:///<admin kubeconfig>: the store's own DSN form
        config = config_from_dsn(server.url)

        def kube_store(**kw: object) -> KubernetesStore:
            client = KubeClient(config)
            clients.append(client)
            return KubernetesStore(client, namespace, **kw)  # type: ignore[arg-type]

        made = Backend("kubernetes", kube_store)
    try:
        yield made
    finally:
        for store in reversed(made.opened):
            await store.close()
        for client in clients:
            await client.close()


@pytest.fixture
async def store(backend: Backend) -> RemediationStore:
    return await backend.open()
