"""Fixtures for the RR store contract: `store` (and `backend`, to open more stores on the
same database) for each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rrcases import Backend

from signalgate.remediation.postgres import PostgresStore
from signalgate.remediation.sqlite import SqliteStore
from signalgate.remediation.store import RemediationStore


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "rr.db"
        made = Backend("sqlite", lambda **kw: SqliteStore(path, **kw))
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        made = Backend("postgres", lambda **kw: PostgresStore(dsn, **kw))
    try:
        yield made
    finally:
        for store in reversed(made.opened):
            await store.close()


@pytest.fixture
async def store(backend: Backend) -> RemediationStore:
    return await backend.open()
