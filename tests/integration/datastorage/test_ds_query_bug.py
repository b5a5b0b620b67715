"""A bug in a query (here: a column the code expects is gone) is a 500 the client retries,
never a 202 with the events sent through the dead-letter queue, where replay would run the
same failing statement again and again. Only "cannot serve now" errors take that path."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from tests.integration.datastorage.dstools import ADMIN_TOKEN, datastorage_process
from tests.support.event_bodies import event_body

BATCH = "/api/v1/audit/events/batch"


async def rename(dsn: str, old: str, new: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"ALTER TABLE audit_chain_heads RENAME COLUMN {old} TO {new}")
    finally:
        await conn.close()


def test_a_query_bug_on_postgres_is_a_500_and_nothing_is_dead_lettered(
    postgres_dsn: str, tmp_path: Path
) -> None:
    data = tmp_path / "ds"
    process = datastorage_process(
        data, env={"SIGNALGATE_STORE__DSN": postgres_dsn, "SIGNALGATE_STORE__AUTOMIGRATE": "true"}
    ).start()
    try:
        with process.client(ADMIN_TOKEN) as client:
            assert client.post(BATCH, json=[event_body("rr-ok")]).status_code == 201
            asyncio.run(rename(postgres_dsn, "event_hash", "renamed_hash"))
            broken = client.post(BATCH, json=[event_body("rr-bug")])
            assert broken.status_code == 500, broken.text
            assert broken.headers["content-type"].startswith("application/problem+json")
            asyncio.run(rename(postgres_dsn, "renamed_hash", "event_hash"))
            stored = client.get("/api/v1/audit/events", params={"correlation_id": "rr-bug"})
            assert stored.json()["data"] == []
    finally:
        process.stop()
    letters = data / "audit-dlq.jsonl"
    assert not letters.exists() or letters.read_text() == ""
