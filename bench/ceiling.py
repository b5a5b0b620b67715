"""The naive ceiling: a bare ASGI app doing one PostgreSQL upsert per request.

bench/ingest.py runs it under uvicorn (uvloop, httptools, one process) on the same
PostgreSQL as the Gateway and drives it with the same wrk script, so the Gateway's figures
are printed beside what "read the body, parse the JSON, one statement, answer" costs on this
machine. It does no validation, no authentication, no audit: it is a yardstick, not a service.

    CEILING_DSN=postgresql://... uvicorn bench.ceiling:app --loop uvloop --http httptools
"""

from __future__ import annotations

import json
import os
from typing import Any

import asyncpg

Scope = dict[str, Any]

SCHEMA = """
CREATE TABLE IF NOT EXISTS ceiling_alerts (
    fingerprint TEXT PRIMARY KEY,
    occurrences BIGINT NOT NULL,
    payload JSONB NOT NULL
)
"""
UPSERT = """
INSERT INTO ceiling_alerts (fingerprint, occurrences, payload) VALUES ($1, 1, $2)
ON CONFLICT (fingerprint) DO UPDATE SET occurrences = ceiling_alerts.occurrences + 1
"""

_pool: asyncpg.Pool | None = None


async def _lifespan(receive: Any, send: Any) -> None:
    global _pool
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _pool = await asyncpg.create_pool(os.environ["CEILING_DSN"], min_size=8, max_size=16)
            async with _pool.acquire() as conn:
                await conn.execute(SCHEMA)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _pool is not None:
                await _pool.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    alert = json.loads(body)["alerts"][0]
    labels = alert["labels"]
    key = f"{labels.get('namespace')}/{labels.get('pod')}/{labels.get('alertname')}"
    assert _pool is not None
    await _pool.execute(UPSERT, key, json.dumps(alert))
    await send(
        {"type": "http.response.start", "status": 201, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


async def count(dsn: str) -> tuple[int, int]:
    """(rows, sum of occurrences): what the benchmark checks against wrk's answers."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(occurrences), 0) AS total FROM ceiling_alerts"
        )
        assert row is not None
        return int(row["n"]), int(row["total"])
    finally:
        await conn.close()
