"""DataStorage fixtures: both stores, and a real server subprocess."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from signalgate.datastorage.postgres import PostgresAuditStore
from signalgate.datastorage.sqlite import SqliteAuditStore
from signalgate.datastorage.store import AuditStore
from tests.integration.datastorage.dstools import ADMIN_TOKEN, datastorage_process
from tests.support.services import ServiceProcess


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AuditStore]:
    """Each contract test runs once per backend, on a fresh database."""
    backend: AuditStore
    if request.param == "sqlite":
        backend = SqliteAuditStore(tmp_path / "audit.db")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        backend = PostgresAuditStore(dsn, auto_migrate=True, pool_size=4)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A DataStorage process on the embedded SQLite store and the file DLQ, per module."""
    process = datastorage_process(tmp_path_factory.mktemp("ds")).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def ds(sqlite_server: ServiceProcess) -> Iterator[httpx.Client]:
    """An admin client of the module's SQLite DataStorage."""
    with sqlite_server.client(ADMIN_TOKEN) as client:
        yield client
