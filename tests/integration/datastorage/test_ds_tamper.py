"""Tamper evidence: chain heads catch deleted tails and deleted chains, on both stores;
verify-all walks every chain; parents stay in their chain; writer tokens keep to their
categories; an existing database gets its heads by migration."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import pytest

from signalgate.datastorage.events import validate_event
from signalgate.datastorage.postgres import PostgresAuditStore
from signalgate.datastorage.sqlite import SqliteAuditStore
from signalgate.datastorage.store import AuditStore, verify_stored
from tests.integration.datastorage.dstools import ADMIN_TOKEN, datastorage_process
from tests.support.event_bodies import event_body

GATEWAY_WRITER = "ds-gateway-writer"
NOTIFY_WRITER = "ds-notification-writer"
PLAIN_WRITER = "ds-plain-writer"


class Backend:
    """A store plus a raw connection an attacker with database access would use."""

    def __init__(self, kind: str, tmp_path: Path, dsn: str | None) -> None:
        self.kind, self.path, self.dsn = kind, tmp_path / "audit.db", dsn
        self.store: AuditStore = (
            SqliteAuditStore(self.path)
            if kind == "sqlite"
            else PostgresAuditStore(dsn or "", auto_migrate=True, pool_size=2)
        )

    async def sql(self, statement: str, *args: Any) -> None:
        if self.kind == "sqlite":
            with closing(sqlite3.connect(self.path)) as conn, conn:
                conn.execute(statement.replace("$1", "?"), args)
            return
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(statement, *args)
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    made = Backend(request.param, tmp_path, dsn)
    await made.store.open()
    try:
        yield made
    finally:
        await made.store.close()


async def write_chain(store: AuditStore, correlation_id: str, count: int) -> list[str]:
    events = [validate_event(event_body(correlation_id), datetime.now(UTC)) for _ in range(count)]
    await store.write(events)
    return [event.event_id for event in events]


async def test_deleted_tails_and_chains_are_detected(backend: Backend) -> None:
    store = backend.store
    ids = await write_chain(store, "rr-tail", 3)
    await write_chain(store, "rr-gone", 2)
    await write_chain(store, "rr-kept", 2)
    assert (await verify_stored(store, "rr-tail"))[0].valid

    await backend.sql("DELETE FROM audit_events WHERE event_id = $1", ids[-1])
    tail, _ = await verify_stored(store, "rr-tail")
    assert not tail.valid and tail.events == 2 and "recorded head is event 3" in str(tail.detail)
    await backend.sql("DELETE FROM audit_events WHERE correlation_id = $1", "rr-gone")
    gone, _ = await verify_stored(store, "rr-gone")
    assert not gone.valid and gone.events == 0
    assert (await verify_stored(store, "rr-kept"))[0].valid
    assert set(await store.correlation_ids()) == {"rr-tail", "rr-gone", "rr-kept"}

    with pytest.raises((sqlite3.DatabaseError, asyncpg.PostgresError), match="immutable"):
        await backend.sql("DELETE FROM audit_chain_heads WHERE correlation_id = $1", "rr-gone")


async def test_a_later_write_does_not_hide_a_deleted_tail(backend: Backend) -> None:
    ids = await write_chain(backend.store, "rr-again", 3)
    await backend.sql("DELETE FROM audit_events WHERE event_id = $1", ids[-1])
    await write_chain(backend.store, "rr-again", 1)  # chains onto the recorded head
    report, _ = await verify_stored(backend.store, "rr-again")
    assert not report.valid


class LargestRead:
    """The store, noting the most rows any one call answered (chains, pages): what a
    verification holds at once."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self.largest = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        async def counted(*args: Any) -> Any:
            answer = await method(*args)
            self.largest = max(self.largest, _rows_in(answer))
            return answer

        return counted


def _rows_in(answer: Any) -> int:
    if isinstance(answer, list):
        return len(answer)
    if isinstance(answer, dict):
        return sum(len(value) for value in answer.values() if isinstance(value, list))
    rows = getattr(answer, "rows", None)
    return len(rows) if isinstance(rows, list) else 0


async def test_a_long_chain_is_verified_one_page_at_a_time(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flapping alert's chain (many events, each with a large body) is never read whole:
    no store call answers more than a page, for one chain, for verify-all, or for
    Kubernaut's answer naming the first broken row."""
    from signalgate.datastorage import store as store_module
    from signalgate.datastorage.verification import kubernaut_verification

    monkeypatch.setattr(store_module, "VERIFY_PAGE", 5, raising=False)
    big = {"body": "x" * 20_000}
    now = datetime.now(UTC)
    events = [validate_event(event_body("rr-flap", event_data=big), now) for _ in range(23)]
    await backend.store.write(events)
    for name in ("rr-s1", "rr-s2", "rr-s3"):
        await write_chain(backend.store, name, 2)
    counted = LargestRead(backend.store)
    store = cast(AuditStore, counted)

    report, _ = await store_module.verify_stored(store, "rr-flap")
    assert (report.valid, report.events) == (True, 23)
    assert counted.largest <= 5
    names = ["rr-s1", "rr-flap", "rr-s2", "rr-s3", "rr-none"]
    reports = [r async for r in store_module.verify_many(store, names)]
    assert [(r.correlation_id, r.valid, r.events) for r in reports] == [
        ("rr-s1", True, 2),
        ("rr-flap", True, 23),
        ("rr-s2", True, 2),
        ("rr-s3", True, 2),
        ("rr-none", True, 0),
    ]
    assert counted.largest <= 5

    await backend.sql("DELETE FROM audit_events WHERE event_id = $1", events[12].event_id)
    report, broken = await store_module.verify_stored(store, "rr-flap")
    assert (report.valid, report.events) == (False, 22)
    assert report.first_broken_event_id == events[13].event_id
    body = kubernaut_verification(report, broken)
    assert (body["total_events"], body["verified_events"]) == (22, 12)
    assert body["tampered_events"][0]["event_id"] == events[13].event_id
    assert counted.largest <= 5


def test_verify_all_and_migration_of_an_existing_database(tmp_path: Path) -> None:
    service = datastorage_process(tmp_path / "ds").start()
    try:
        with service.client(ADMIN_TOKEN) as c:
            for name in ("rr-a", "rr-b"):
                assert (
                    c.post("/api/v1/audit/events/batch", json=[event_body(name)] * 1).status_code
                    == 201
                )
    finally:
        service.stop()
    database = tmp_path / "ds" / "audit.db"
    # as a database made before chain heads was
    with closing(sqlite3.connect(database)) as conn, conn:
        conn.execute("DROP TABLE audit_chain_heads")
        conn.execute("DELETE FROM audit_schema_migrations WHERE version = 2")

    def verify_all() -> tuple[int, list[dict[str, Any]]]:
        done = subprocess.run(
            [sys.executable, "-m", "signalgate.datastorage.cli", "verify-all"],
            env=service.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]

    code, lines = verify_all()  # opening the store migrates it: heads from the events
    assert code == 0 and lines == [{"chains": 2, "broken": 0, "valid": True}]
    with closing(sqlite3.connect(database)) as conn, conn:
        conn.execute("DELETE FROM audit_events WHERE correlation_id = 'rr-b'")
    code, lines = verify_all()
    assert code == 1
    assert lines[0]["correlation_id"] == "rr-b" and lines[0]["valid"] is False
    assert lines[-1] == {"chains": 2, "broken": 1, "valid": False}


def test_parents_stay_in_their_chain_and_writers_in_their_category(tmp_path: Path) -> None:
    tokens = {
        ADMIN_TOKEN: "audit:write,audit:write:gateway,audit:read",
        GATEWAY_WRITER: "audit:write:gateway",
        NOTIFY_WRITER: "audit:write:notification",
        PLAIN_WRITER: "audit:write",
    }
    service = datastorage_process(tmp_path / "ds", tokens=tokens).start()
    batch = "/api/v1/audit/events/batch"
    try:
        with service.client(ADMIN_TOKEN) as c:
            parent = event_body("rr-one")
            assert c.post(batch, json=[parent]).status_code == 201
            stray = event_body("rr-two", parent_event_id=parent["event_id"])
            answer = c.post(batch, json=[event_body("rr-two"), stray])
            assert answer.status_code == 400
            assert answer.json()["field_errors"] == {
                "1.parent_event_id": "belongs to another correlation id"
            }
            same = event_body("rr-one", parent_event_id=parent["event_id"])
            assert c.post(batch, json=[same]).status_code == 201
            alone = c.post("/api/v1/audit/events", json=stray)  # the single-event endpoint
            assert alone.status_code == 400
            assert alone.json()["field_errors"] == {
                "parent_event_id": "belongs to another correlation id"
            }

        with service.client(GATEWAY_WRITER) as c:
            assert c.post(batch, json=[event_body("rr-gw")]).status_code == 201
            other = event_body(
                "rr-gw", event_category="notification", event_type="notification.message.sent"
            )
            refused = c.post(batch, json=[event_body("rr-gw"), other])
            assert refused.status_code == 403
            assert "1.event_category" in refused.json()["detail"]
        with service.client(NOTIFY_WRITER) as c:
            forged = c.post("/api/v1/audit/events", json=event_body(f"rr-{uuid.uuid4().hex[:6]}"))
            assert forged.status_code == 403
            assert "audit:write:gateway" in forged.json()["detail"]
        # a plain audit:write token writes every category but the Gateway's
        with service.client(PLAIN_WRITER) as c:
            note = event_body(
                "rr-n", event_category="notification", event_type="notification.message.sent"
            )
            assert c.post(batch, json=[note]).status_code == 201
            forged = c.post(batch, json=[event_body(f"rr-{uuid.uuid4().hex[:6]}")])
            assert forged.status_code == 403
            assert "audit:write:gateway" in forged.json()["detail"]
            # nor as another category's event taking a Gateway event type (it passed)
            disguised = event_body(
                "rr-gw",
                event_category="orchestration",
                event_type="gateway.crd.created",
                actor_type="gateway",
                actor_id="crd-creator",
            )
            for event_type in ("gateway.crd.created", "Gateway.crd.created", "GATEWAY.x.y"):
                refused = c.post(batch, json=[{**disguised, "event_type": event_type}])
                assert refused.status_code == 400, refused.text
                assert list(refused.json()["field_errors"]) == ["0.event_type"]
                assert "audit:write:gateway" in refused.json()["field_errors"]["0.event_type"]
        with httpx.Client(base_url=service.api_url, timeout=10) as anonymous:
            assert anonymous.post(batch, json=[event_body("rr-x")]).status_code == 401
    finally:
        service.stop()


@pytest.mark.parametrize("stored", ['{"a": 1', "hello", "[1,2]", '{"a": 1}'])
def test_an_event_data_edited_behind_the_service_keeps_its_page_readable(
    tmp_path: Path, stored: str
) -> None:
    """A stored event_data edited behind the service's back (SQLite keeps any text): the
    query page around it is still JSON; an edit into no JSON object comes back as the text,
    a string (embedded as stored, the page was no JSON at all for every reader), an object
    as it now reads; and its chain is reported broken at that event, an edit of form alone
    (a space) too."""
    service = datastorage_process(tmp_path / "ds").start()
    try:
        with service.client(ADMIN_TOKEN) as c:
            batch = [event_body("rr-edit"), event_body("rr-edit"), event_body("rr-other")]
            answer = c.post("/api/v1/audit/events/batch", json=batch)
            assert answer.status_code == 201
            edited = answer.json()["event_ids"][1]
            with closing(sqlite3.connect(tmp_path / "ds" / "audit.db")) as conn, conn:
                trigger = conn.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                    "AND tbl_name = 'audit_events' AND sql LIKE '%UPDATE%'"
                ).fetchall()
                for name, _ in trigger:
                    conn.execute(f'DROP TRIGGER "{name}"')
                conn.execute(
                    "UPDATE audit_events SET event_data = ? WHERE event_id = ?", (stored, edited)
                )
                for _, sql in trigger:
                    conn.execute(sql)
            page = c.get("/api/v1/audit/events", params={"limit": 10})
            assert page.status_code == 200
            events = {e["event_id"]: e for e in json.loads(page.content)["data"]}
            assert len(events) == 3
            expected = (
                json.loads(stored) if stored.startswith("{") and stored.endswith("}") else stored
            )
            assert events[edited]["event_data"] == expected
            others = [e for i, e in events.items() if i != edited]
            assert all(e["event_data"]["signal_name"] == "HighCPU" for e in others)
            check = c.get("/api/v1/audit/verify-chain", params={"correlation_id": "rr-edit"})
            assert check.json()["valid"] is False
            assert check.json()["first_broken_event_id"] == edited
    finally:
        service.stop()
