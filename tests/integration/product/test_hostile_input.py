"""Hostile text and parameters get a 400 naming the field — never a 500, never stored.

Real Gateway and DataStorage processes, each on SQLite and on PostgreSQL (where a NUL in text
used to reach the database and come back as a 500).
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.datastorage.dstools import ADMIN_TOKEN as DS_TOKEN
from tests.integration.datastorage.dstools import datastorage_process
from tests.support.event_bodies import event_body
from tests.support.services import ServiceProcess, alert, gateway_process, k8s_event, webhook

PROM = "/api/v1/signals/prometheus"
RRS = "/api/v1/remediation-requests"


@pytest.fixture(params=["sqlite", "postgres"])
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "sqlite":
        return {}
    dsn = request.getfixturevalue("postgres_dsn")
    return {"SIGNALGATE_STORE__DSN": dsn, "SIGNALGATE_STORE__AUTOMIGRATE": "true"}


@pytest.fixture
def gateway(tmp_path: Path, backend_env: dict[str, str]) -> Iterator[ServiceProcess]:
    env = {k: v for k, v in backend_env.items() if "AUTOMIGRATE" not in k}
    service = gateway_process(tmp_path / "gw", env=env).start()
    yield service
    service.stop()


@pytest.fixture
def datastorage(tmp_path: Path, backend_env: dict[str, str]) -> Iterator[ServiceProcess]:
    service = datastorage_process(tmp_path / "ds", env=backend_env).start()
    yield service
    service.stop()


def refused(answer: httpx.Response, field: str) -> dict[str, Any]:
    assert answer.status_code == 400, (answer.status_code, answer.text)
    body: dict[str, Any] = answer.json()
    assert field in body["detail"], body
    return body


def test_gateway_refuses_control_characters_and_wide_integers_everywhere(
    gateway: ServiceProcess,
) -> None:
    with gateway.client() as c:
        nul_label = webhook(alert(pod="api-1", team="pay\x00ments"))
        nul_label["commonLabels"] = {}
        body = refused(c.post(PROM, json=nul_label), "alerts[0].labels.team")
        assert "U+0000" in body["detail"]
        bell = webhook(alert(pod="api-1"))
        bell["alerts"][0]["annotations"] = {"summary": "ding\x07"}  # type: ignore[index]
        refused(c.post(PROM, json=bell), "alerts[0].annotations.summary")
        event = k8s_event()
        event["message"] = "back-off\x1b[31m"
        refused(c.post("/api/v1/signals/kubernetes-event", json=event), "message")
        # read as a float, 2**100 would be stored and audited as another number
        wide = {**webhook(alert(pod="api-1")), "extra": {"n": [1, 2**100]}}
        body = refused(c.post(PROM, json=wide), "extra.n[1]")
        assert "beyond 64 bits" in body["detail"]
        assert c.get(RRS).json()["items"] == []  # nothing was stored

        # free text keeps tab, line feed and carriage return
        multiline = webhook(alert(pod="api-2"))
        multiline["alerts"][0]["annotations"] = {"summary": "a\n\tb\r\n"}  # type: ignore[index]
        created = c.post(PROM, json=multiline)
        assert created.status_code == 201, created.text
        name = created.json()["remediationRequestName"]

        refused(c.get(RRS, params={"phase": "Pend\x00ing"}), "phase")
        refused(c.get(RRS, params={"namespace": "prod\n"}), "namespace")
        refused(c.get(f"{RRS}/{name}%00"), "path")
        patch = c.patch(
            f"{RRS}/{name}/status",
            json={"message": "done\x00"},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        refused(patch, "message")


def test_gateway_parses_every_query_parameter_strictly(gateway: ServiceProcess) -> None:
    with gateway.client() as c:
        for limit in ("²", "٣", "1e3", "-1", "0", "501", "9" * 40):
            refused(c.get(RRS, params={"limit": limit}), "limit")
        for stamp in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "nonsense"):
            cursor = base64.urlsafe_b64encode(f"{stamp}|rr-x".encode()).decode().rstrip("=")
            refused(c.get(RRS, params={"cursor": cursor}), "cursor")
        refused(c.get(RRS, params={"cursor": "%%%"}), "cursor")
        # a filter nothing could match is a mistake, not an empty page
        refused(c.get(RRS, params={"phase": "Bogus"}), "phase")
        refused(c.get(RRS, params={"namespace": "Bad!"}), "namespace")
        refused(c.get(RRS, params=[("limit", "1"), ("limit", "2")]), "limit")
        assert c.get(RRS, params={"phase": "Pending", "namespace": "prod"}).status_code == 200


def test_datastorage_refuses_control_characters_wide_integers_and_loose_numbers(
    datastorage: ServiceProcess,
) -> None:
    with datastorage.client(DS_TOKEN) as c:
        bad = event_body("rr-hostile")
        bad["event_data"] = {"note": "a\x00b"}
        batch = [event_body("rr-h"), bad]
        body = refused(c.post("/api/v1/audit/events/batch", json=batch), "1.event_data.note")
        assert list(body["field_errors"]) == ["1.event_data.note"]
        wide = event_body("rr-hostile")
        wide["event_data"] = {"n": 2**64}
        body = refused(
            c.post("/api/v1/audit/events/batch", json=[event_body("rr-h"), wide]), "1.event_data.n"
        )
        assert list(body["field_errors"]) == ["1.event_data.n"]
        refused(
            c.get("/api/v1/audit/events", params={"correlation_id": "rr\x00"}), "correlation_id"
        )
        for limit in ("²", "٣"):
            refused(c.get("/api/v1/audit/events", params={"limit": limit}), "limit")
        assert (
            c.get("/api/v1/audit/events", params={"correlation_id": "rr-h"}).json()["pagination"][
                "total"
            ]
            == 0
        )


def test_datastorage_refuses_a_number_too_small_for_a_float_and_keeps_a_tiny_one(
    datastorage: ServiceProcess,
) -> None:
    """`1e-400` was read as 0.0 and stored, and hashed into the chain, as zero: a 400 naming
    the field now, nothing stored. A tiny number a float holds comes back as sent."""
    events = "/api/v1/audit/events"
    with datastorage.client(DS_TOKEN) as c:
        tiny = orjson.dumps(event_body("rr-tiny")).replace(b'"n":1', b'"n":1e-400')
        answer = c.post(events, content=tiny, headers={"Content-Type": "application/json"})
        body = refused(answer, "event_data.n")
        assert body["field_errors"] == {
            "event_data.n": "a number too small for a 64-bit float (it would be read as 0)"
        }
        batch = orjson.dumps([event_body("rr-tiny"), event_body("rr-tiny")])
        batch = batch.replace(b'"n":1}', b'"n":-2.5E-999}')
        answer = c.post(
            f"{events}/batch", content=batch, headers={"Content-Type": "application/json"}
        )
        assert list(refused(answer, "0.event_data.n")["field_errors"]) == ["0.event_data.n"]
        assert c.get(events, params={"correlation_id": "rr-tiny"}).json()["data"] == []

        kept = orjson.dumps(event_body("rr-tiny")).replace(b'"n":1', b'"n":5e-324')
        answer = c.post(events, content=kept, headers={"Content-Type": "application/json"})
        assert answer.status_code in (201, 202), answer.text
        stored = c.get(events, params={"correlation_id": "rr-tiny"}).json()["data"]
        assert [event["event_data"]["n"] for event in stored] == [5e-324]


def test_headers_whose_meaning_would_be_a_guess_are_refused(
    gateway: ServiceProcess, datastorage: ServiceProcess
) -> None:
    """Both services: `Authorization` or `Content-Type` twice (which one counts? the first
    won: a valid token then a bogus one passed), a transfer coding besides chunked (501),
    a compressed body (415, not "not valid JSON"). Nothing is stored."""
    from tests.support.services import ADMIN_TOKEN

    signal = httpx.Request("POST", "/", json=webhook(alert(pod="api-1"))).content
    batch = httpx.Request("POST", "/", json=[event_body("rr-headers")]).content
    for service, token, path, body in (
        (gateway, ADMIN_TOKEN, PROM, signal),
        (datastorage, DS_TOKEN, "/api/v1/audit/events/batch", batch),
    ):
        bearer = ("Authorization", f"Bearer {token}")
        json_type = ("Content-Type", "application/json")
        with httpx.Client(base_url=service.api_url, timeout=30) as c:
            cases = [
                ([bearer, ("Authorization", "Bearer nope"), json_type], 400, "Authorization"),
                ([bearer, json_type, ("Content-Type", "text/plain")], 400, "Content-Type"),
                ([bearer, json_type, ("Content-Encoding", "gzip")], 415, "Content-Encoding"),
            ]
            for headers, status, named in cases:
                answer = c.post(path, content=body, headers=headers)
                assert answer.status_code == status, (service.api_url, headers, answer.text)
                assert named in answer.json()["detail"]
            # written by hand: HTTP clients refuse to send a transfer coding they cannot apply
            host, port = service.api_url.removeprefix("http://").rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=30) as raw:
                raw.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                    "Content-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n"
                    "\r\n".encode()
                    + f"{len(body):x}\r\n".encode()
                    + body
                    + b"\r\n0\r\n\r\n"
                    # where that body ends is a guess: what follows is not served as a request
                    + b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                raw_answer = b""
                while chunk := raw.recv(65536):  # the server closes the connection
                    raw_answer += chunk
            assert raw_answer.startswith(b"HTTP/1.1 501 Not Implemented\r\n"), raw_answer[:200]
            assert raw_answer.count(b"HTTP/1.1 ") == 1, raw_answer[:400]
            # the same, each header once and the body plain: accepted
            fine = c.post(path, content=body, headers=[bearer, json_type])
            assert fine.status_code == 201, fine.text
