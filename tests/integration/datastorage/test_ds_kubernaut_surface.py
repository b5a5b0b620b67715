"""The DataStorage surface Kubernaut's services call, over real HTTP.

- `GET /readyz` (and `/healthz`) on the API listener, no token: Kubernaut's prober
  (`pkg/audit/datastorage_prober.go`) asks there; 200 while the database answers, 503 with a
  real PostgreSQL stopped.
- `POST /api/v1/audit/verify-chain` with Kubernaut's request and response shapes.
- `GET /api/v1/audit/capabilities`: the event types writers can count on.
- Every event type Kubernaut's DataStorage knows is accepted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2ecov.recipes import PostgresServer
from signalgate.datastorage.app import NOT_PROVIDED
from signalgate.datastorage.capabilities import EXTENSION_EVENT_TYPES, KUBERNAUT_EVENT_TYPES
from signalgate.datastorage.events import CATEGORIES
from tests.integration.datastorage.dstools import (
    ADMIN_TOKEN,
    READER_TOKEN,
    WRITER_TOKEN,
    datastorage_process,
)
from tests.support.event_bodies import event_body
from tests.support.services import ServiceProcess

VERIFY = "/api/v1/audit/verify-chain"
BATCH = "/api/v1/audit/events/batch"


def test_probes_answer_on_the_api_listener_without_a_token(
    sqlite_server: ServiceProcess,
) -> None:
    ready = httpx.get(f"{sqlite_server.api_url}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert ready.json()["checks"]["database"] == "ok"
    healthy = httpx.get(f"{sqlite_server.api_url}/healthz")
    assert healthy.status_code == 200 and healthy.json()["status"] == "healthy"


def test_kubernauts_health_server_paths_answer_on_the_ops_listener(
    sqlite_server: ServiceProcess,
) -> None:
    """Kubernaut's DataStorage serves /health, /health/live and /health/ready on its health
    port; probes and charts written for it find them on the ops listener."""
    ops = sqlite_server.ops_url
    for path in ("/health", "/health/live"):
        live = httpx.get(ops + path)
        assert live.status_code == 200 and live.json()["status"] == "healthy", path
    ready = httpx.get(ops + "/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


@pytest.mark.parametrize(("path", "methods", "what"), NOT_PROVIDED)
def test_kubernaut_operations_not_provided_are_501_not_404(
    ds: httpx.Client, path: str, methods: list[str], what: str
) -> None:
    """A client generated from Kubernaut's OpenAPI document reads a 404 on most of these as
    its own "not found" (no such correlation id): a 501 is an error it cannot mistake."""
    concrete = path.replace("{correlation_id}", "rr-x")
    for method in methods:
        anonymous = httpx.request(method, str(ds.base_url.join(concrete)))
        assert anonymous.status_code == 401, anonymous.text  # as on every other route
        answer = ds.request(method, concrete)
        assert answer.status_code == 501, (method, concrete, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert what in answer.json()["detail"]


def test_verify_chain_post_answers_in_kubernauts_shape(ds: httpx.Client) -> None:
    cid = f"rr-{uuid.uuid4().hex[:8]}"
    assert ds.post(BATCH, json=[event_body(cid) for _ in range(3)]).status_code == 201
    answer = ds.post(VERIFY, json={"correlation_id": cid})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["correlation_id"] == cid
    assert body["is_valid"] is True
    assert (body["total_events"], body["verified_events"]) == (3, 3)
    assert body["verification_time"].endswith("Z") and body["message"]
    assert "tampered_events" not in body
    # the GET form stays as it was
    assert ds.get(VERIFY, params={"correlation_id": cid}).json()["valid"] is True
    unknown = ds.post(VERIFY, json={"correlation_id": "rr-never-written"}).json()
    assert (unknown["is_valid"], unknown["total_events"]) == (True, 0)
    assert "no event is stored" in unknown["message"]  # not "intact": a mistyped id?


@pytest.mark.parametrize("body", [{}, {"correlation_id": ""}, {"correlation_id": 7}, []])
def test_verify_chain_post_names_the_missing_field(ds: httpx.Client, body: object) -> None:
    answer = ds.post(VERIFY, json=body)
    assert answer.status_code == 400
    assert "correlation_id" in answer.json()["detail"]


def test_verify_chain_post_needs_audit_read(sqlite_server: ServiceProcess) -> None:
    with sqlite_server.client(None) as anonymous:
        assert anonymous.post(VERIFY, json={"correlation_id": "x"}).status_code == 401
    with sqlite_server.client(WRITER_TOKEN) as writer:
        assert writer.post(VERIFY, json={"correlation_id": "x"}).status_code == 403
    with sqlite_server.client(READER_TOKEN) as reader:
        assert reader.post(VERIFY, json={"correlation_id": "x"}).status_code == 200


def test_capabilities_list_kubernauts_types_and_ours(sqlite_server: ServiceProcess) -> None:
    answer = httpx.get(f"{sqlite_server.api_url}/api/v1/audit/capabilities")
    assert answer.status_code == 200, answer.text
    types = answer.json()["eventTypes"]
    assert types == sorted(types)
    assert {"gateway.signal.resolved", "gateway.signal.rejected"} <= set(types)
    assert {"gateway.signal.received", "orchestrator.lifecycle.completed"} <= set(types)
    assert set(types) == KUBERNAUT_EVENT_TYPES | EXTENSION_EVENT_TYPES


def _category(event_type: str) -> str:
    prefix = event_type.split(".", 1)[0]
    aliases = {"orchestrator": "orchestration", "aianalysis": "analysis", "webhook": "approval"}
    category = aliases.get(prefix, prefix)
    return category if category in CATEGORIES else "workflow"


def test_every_kubernaut_event_type_is_accepted(ds: httpx.Client) -> None:
    cid = f"rr-{uuid.uuid4().hex[:8]}"
    batch = [
        event_body(cid, event_type=event_type, event_category=_category(event_type))
        for event_type in sorted(KUBERNAUT_EVENT_TYPES | EXTENSION_EVENT_TYPES)
    ]
    answer = ds.post(BATCH, json=batch)
    assert answer.status_code == 201, answer.text
    assert len(answer.json()["event_ids"]) == len(batch)
    stored = ds.get("/api/v1/audit/events", params={"correlation_id": cid, "limit": 1000})
    assert {e["event_type"] for e in stored.json()["data"]} == {e["event_type"] for e in batch}


@pytest.fixture
def pg_datastorage(tmp_path: Path, private_postgres: PostgresServer) -> Iterator[ServiceProcess]:
    process = datastorage_process(
        tmp_path / "ds",
        env={
            "SIGNALGATE_STORE__DSN": private_postgres.create_database("audit"),
            "SIGNALGATE_STORE__AUTOMIGRATE": "true",
            "SIGNALGATE_STORE__TIMEOUT": "3s",
        },
    ).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.slow
def test_kubernauts_prober_gets_503_while_postgresql_is_stopped(
    pg_datastorage: ServiceProcess, private_postgres: PostgresServer
) -> None:
    probe = f"{pg_datastorage.api_url}/readyz"  # the prober's GET https?://<ds>:<api>/readyz
    assert httpx.get(probe).status_code == 200
    private_postgres.stop()
    down = httpx.get(probe, timeout=10.0)
    assert down.status_code == 503, down.text
    assert down.headers["content-type"].startswith("application/problem+json")
    assert down.json()["checks"]["database"].startswith("unavailable")
    # writes still land in the dead-letter file meanwhile, so the ops listener (kubelet's
    # rotation decision) stays ready
    assert httpx.get(f"{pg_datastorage.ops_url}/readyz").status_code == 200
    with pg_datastorage.client(ADMIN_TOKEN) as client:
        assert client.post(BATCH, json=[event_body("rr-outage")]).status_code == 202
    private_postgres.start()
    # ready again once a write lands in the database, or the failed one is 5 s old (a ping
    # alone answers on a full disk too)
    deadline = time.monotonic() + 15
    while (back := httpx.get(probe, timeout=10.0)).status_code != 200:
        assert time.monotonic() < deadline, back.text
        time.sleep(0.2)


def test_cors_preflight_on_datastorage(tmp_path: Path, sqlite_server: ServiceProcess) -> None:
    preflight = {
        "Origin": "https://console.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    off = httpx.options(f"{sqlite_server.api_url}{VERIFY}", headers=preflight)
    assert off.status_code == 405 and "access-control-allow-origin" not in off.headers
    assert off.headers["x-xss-protection"] == "1; mode=block"
    process = datastorage_process(
        tmp_path / "ds-cors",
        env={"SIGNALGATE_SERVER__CORSALLOWEDORIGINS": "https://console.example"},
    ).start()
    try:
        on = httpx.options(f"{process.api_url}{VERIFY}", headers=preflight)
        assert on.status_code == 200, on.text
        assert on.headers["access-control-allow-origin"] == "https://console.example"
    finally:
        process.stop()


def test_kubernauts_parent_event_date_is_accepted_and_checked(ds: httpx.Client) -> None:
    """Kubernaut's services send `parent_event_date` (nullable) with `parent_event_id`; it was
    refused as an unknown field, so their child events could not be written."""
    cid = f"rr-{uuid.uuid4().hex[:8]}"
    parent = ds.post(BATCH, json=[event_body(cid)]).json()["event_ids"][0]
    parent_day = ds.get("/api/v1/audit/events", params={"correlation_id": cid}).json()["data"][0][
        "event_date"
    ]
    child = event_body(cid, parent_event_id=parent, parent_event_date=parent_day)
    assert ds.post(BATCH, json=[child]).status_code == 201
    nulled = event_body(cid, parent_event_id=parent, parent_event_date=None)
    nulled["parent_event_date"] = None  # event_body drops None overrides: sent as null
    assert ds.post(BATCH, json=[nulled]).status_code == 201
    bad = event_body(cid, parent_event_id=parent, parent_event_date="2026-13-45")
    answer = ds.post(BATCH, json=[bad])
    assert answer.status_code == 400
    assert list(answer.json()["field_errors"]) == ["0.parent_event_date"]
    stored = ds.get("/api/v1/audit/events", params={"correlation_id": cid}).json()["data"]
    assert len(stored) == 3
    assert all("parent_event_date" not in event for event in stored)
    assert ds.get(VERIFY, params={"correlation_id": cid}).json()["valid"] is True
