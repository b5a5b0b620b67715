"""Shared fixtures: real PostgreSQL and Redis servers from the system binaries, on free ports.

One server of each per test session; each test that needs a database gets a fresh one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TypeVar

import pytest

from e2ecov.recipes import PostgresServer, RedisServer

Server = TypeVar("Server", PostgresServer, RedisServer)


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
