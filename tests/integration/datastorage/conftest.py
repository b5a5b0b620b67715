"""DataStorage fixtures: both stores, and a real server subprocess."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from dstools import datastorage_process
from tests.support.services import ServiceProcess

from signalgate.datastorage.postgres import PostgresStore
from signalgate.datastorage.sqlite import SqliteStore
from signalgate.datastorage.store import AuditStore


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AuditStore]:
    """Each contract test runs once per backend, on a fresh database."""
    backend: AuditStore
    if request.param == "sqlite":
        backend = SqliteStore(tmp_path / "audit.db")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        backend = PostgresStore(dsn, auto_migrate=True, pool_size=4)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[ServiceProcess]:
    """A DataStorage process on the embedded SQLite store and the file DLQ."""
    process = datastorage_process(tmp_path / "ds").start()
    try:
        yield process
    finally:
        process.stop()
