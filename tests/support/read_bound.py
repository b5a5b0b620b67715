"""What both services' read-bound tests share: the reads held in PostgreSQL by a table lock,
a value awaited until it equals another, and the 503 a refused read gets."""

from __future__ import annotations

from collections.abc import Awaitable

import asyncpg
import httpx


async def blocked(conn: asyncpg.Connection) -> int:
    """Statements waiting in PostgreSQL for the test's lock (`conn` outside the lock's
    transaction: within one, pg_stat_activity is a snapshot)."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
        )
    )


async def equals(value: Awaitable[float], expected: float) -> bool:
    """For `until`: `value` once awaited is `expected`."""
    return await value == expected


def assert_refused(answer: httpx.Response, *named: str) -> None:
    """A read refused by the bound: 503, `Retry-After: 1`, a service-unavailable problem
    document whose detail names each of `named` (a setting, or why)."""
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["type"].endswith("/service-unavailable")
    for part in named:
        assert part in problem["detail"], problem["detail"]
    assert answer.headers["retry-after"] == "1"
