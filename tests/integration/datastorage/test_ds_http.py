"""DataStorage over real HTTP: the write/query/verify contract and every 400 rule."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.integration.datastorage.dstools import READER_TOKEN, WRITER_TOKEN
from tests.support.event_bodies import event_body
from tests.support.services import ServiceProcess

BATCH = "/api/v1/audit/events/batch"
ARABIC_DIGITS = {ord("0") + n: 0x0660 + n for n in range(10)}  # another script's 0-9
EVENTS = "/api/v1/audit/events"


def ts(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


def test_single_write_query_and_verify(ds: httpx.Client) -> None:
    cid = f"rr-{uuid.uuid4().hex[:8]}"
    body = event_body(cid)
    answer = ds.post(EVENTS, json=body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["event_id"] == body["event_id"]
    assert answer.json()["event_timestamp"].endswith("Z")
    assert answer.headers["x-request-id"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    listing = ds.get(EVENTS, params={"correlation_id": cid}).json()
    assert listing["pagination"] == {"limit": 50, "offset": 0, "total": 1, "has_more": False}
    assert listing["data"][0]["event_id"] == body["event_id"]
    chain = ds.get("/api/v1/audit/verify-chain", params={"correlation_id": cid}).json()
    assert chain == {"correlation_id": cid, "events": 1, "valid": True}


def test_a_correlation_id_stored_with_control_characters_is_found_by_it(
    ds: httpx.Client,
) -> None:
    """Text is stored as written, control characters and all: a filter must find it. The
    query refused them (400), so such a chain could not be listed or verified by its id
    (an outside check). NUL, which is never stored, is still refused."""
    cid = f"rr-{uuid.uuid4().hex[:8]}\x1b[31m\n\t\r\x85"
    body = {**event_body(cid), "namespace": "ns\x07"}
    assert ds.post(EVENTS, json=body).status_code == 201
    listing = ds.get(EVENTS, params={"correlation_id": cid, "namespace": "ns\x07"}).json()
    assert [event["event_id"] for event in listing["data"]] == [body["event_id"]]
    assert listing["data"][0]["correlation_id"] == cid
    chain = ds.get("/api/v1/audit/verify-chain", params={"correlation_id": cid}).json()
    assert chain == {"correlation_id": cid, "events": 1, "valid": True}
    refused = ds.get(EVENTS, params={"correlation_id": "rr\x00"})
    assert refused.status_code == 400
    assert refused.json()["field_errors"] == {
        "correlation_id": "contains the control character U+0000"
    }


def test_escapes_that_are_not_utf8_are_refused_naming_the_parameter(ds: httpx.Client) -> None:
    """`%ff%fe` was decoded with replacement characters: the chain of '\ufffd\ufffd' was
    verified (valid, 0 events) instead of the request refused (an outside check)."""
    refused = ds.get("/api/v1/audit/verify-chain?correlation_id=%ff%fe")
    assert refused.status_code == 400, refused.text
    assert refused.json()["field_errors"] == {"correlation_id": "its %-escapes are not UTF-8 text"}
    refused = ds.get(f"{EVENTS}?limit=5&namespace=ns%C3")
    assert refused.status_code == 400
    assert "namespace" in refused.json()["field_errors"]
    # a replacement character sent as UTF-8 is text like any other
    found = ds.get(f"{EVENTS}?correlation_id=%EF%BF%BD")
    assert found.status_code == 200 and found.json()["data"] == []
    refused = ds.get(f"{EVENTS}/%ff")
    assert refused.status_code == 400 and "path" in refused.json()["field_errors"]


def test_batch_ids_in_input_order_and_idempotent_retry(ds: httpx.Client) -> None:
    cid = f"rr-{uuid.uuid4().hex[:8]}"
    batch = [event_body(cid) for _ in range(5)]
    first = ds.post(BATCH, json=batch)
    assert first.status_code == 201, first.text
    assert first.json()["event_ids"] == [e["event_id"] for e in batch]
    again = ds.post(BATCH, json=batch)
    assert again.status_code == 201
    assert ds.get(EVENTS, params={"correlation_id": cid}).json()["pagination"]["total"] == 5
    changed = {**batch[0], "event_action": "changed"}
    conflict = ds.post(EVENTS, json=changed)
    assert conflict.status_code == 409
    assert conflict.json()["type"] == "https://kubernaut.ai/problems/conflict"


def test_pagination_and_relative_since(ds: httpx.Client) -> None:
    cid = f"rr-{uuid.uuid4().hex[:8]}"
    batch = [event_body(cid, event_timestamp=ts(timedelta(minutes=-i))) for i in range(5)]
    assert ds.post(BATCH, json=batch).status_code == 201
    page = ds.get(EVENTS, params={"correlation_id": cid, "limit": 2, "offset": 2}).json()
    assert [e["event_id"] for e in page["data"]] == [batch[2]["event_id"], batch[3]["event_id"]]
    assert page["pagination"]["has_more"] is True
    recent = ds.get(EVENTS, params={"correlation_id": cid, "since": "150s"}).json()
    assert recent["pagination"]["total"] == 3
    day = datetime.now(UTC).date().isoformat()
    assert ds.get(EVENTS, params={"correlation_id": cid, "until": day}).json()["data"]


def test_a_page_of_the_largest_events_is_cut_in_bytes_and_paged_on(ds: httpx.Client) -> None:
    """Forty events near the 256 KiB limit asked for in one page of 1,000 would be 10 MB in
    the answer (and a page of 1,000 such events 256 MB): the page ends at 8 MiB of
    event_data, says more follow, and the next offset gets the rest."""
    from signalgate.datastorage.paging import PAGE_BYTES

    cid = f"rr-{uuid.uuid4().hex[:8]}"
    pad = 250 * 1024
    written: list[dict[str, object]] = []
    for _ in range(4):
        batch = [
            event_body(cid, event_data={"pad": "x" * pad, "n": len(written) + i}) for i in range(10)
        ]
        assert ds.post(BATCH, json=batch).status_code == 201
        written.extend(batch)
    first = ds.get(EVENTS, params={"correlation_id": cid, "limit": 1000}).json()
    assert first["pagination"]["total"] == 40 and first["pagination"]["has_more"] is True
    # each event's stored event_data is {"n":…,"pad":"…"}: pad + 16 or 17 bytes; rows are
    # taken while those before hold less than PAGE_BYTES (33 here)
    assert len(first["data"]) == -(-PAGE_BYTES // (pad + 17))
    rest = ds.get(
        EVENTS, params={"correlation_id": cid, "limit": 1000, "offset": len(first["data"])}
    ).json()
    assert rest["pagination"]["has_more"] is False
    seen = {event["event_id"] for event in [*first["data"], *rest["data"]]}
    assert seen == {event["event_id"] for event in written}
    chain = ds.get("/api/v1/audit/verify-chain", params={"correlation_id": cid}).json()
    assert chain == {"correlation_id": cid, "events": 40, "valid": True}


# Every 400 rule of section 2: (what to change, the field_errors key expected)
BAD_FIELDS = [
    ({"event_timestamp": ts(timedelta(hours=3))}, "event_timestamp"),
    ({"event_timestamp": ts(timedelta(days=-7, minutes=-1))}, "event_timestamp"),
    ({"event_timestamp": "yesterday"}, "event_timestamp"),
    ({"event_timestamp": "2024-05-01T12:00:00"}, "event_timestamp"),  # no offset
    ({"event_category": "billing"}, "event_category"),
    ({"event_outcome": "maybe"}, "event_outcome"),
    ({"version": None}, "version"),
    ({"event_type": None}, "event_type"),
    ({"event_timestamp": None}, "event_timestamp"),
    ({"event_category": None}, "event_category"),
    ({"event_action": None}, "event_action"),
    ({"event_outcome": None}, "event_outcome"),
    ({"correlation_id": None}, "correlation_id"),
    ({"event_data": None}, "event_data"),
    ({"version": "x" * 21}, "version"),
    ({"event_type": "t" * 101}, "event_type"),
    ({"event_action": ""}, "event_action"),
    ({"correlation_id": "c" * 256}, "correlation_id"),
    ({"event_data": ["not", "an", "object"]}, "event_data"),
    ({"event_data": {"blob": "x" * (256 * 1024)}}, "event_data"),
    (
        {"event_data": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {}}}}}}}}}}}},
        "event_data",
    ),
    ({"event_id": "not-a-uuid"}, "event_id"),
    ({"retention_days": 0}, "retention_days"),
    ({"retention_days": 2**31}, "retention_days"),
    ({"duration_ms": "12"}, "duration_ms"),
    ({"parent_event_id": str(uuid.uuid4())}, "parent_event_id"),
    ({"actor_ip": "a" * 46}, "actor_ip"),
    ({"error_message": "nul \u0000 here"}, "error_message"),
    # another script's digits: RFC 3339 has ASCII ones only (they were taken, an outside check)
    ({"event_timestamp": "2026-12-02T13:25:33Z".translate(ARABIC_DIGITS)}, "event_timestamp"),
]


@pytest.mark.parametrize(("change", "field"), BAD_FIELDS, ids=[f for _, f in BAD_FIELDS])
def test_each_bad_field_is_a_400_naming_it(
    ds: httpx.Client, change: dict[str, object], field: str
) -> None:
    body = event_body("rr-bad")
    for key, value in change.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    single = ds.post(EVENTS, json=body)
    assert single.status_code == 400, single.text
    assert single.json()["type"] == "https://kubernaut.ai/problems/validation-error"
    assert field in single.json()["field_errors"]
    batch = ds.post(BATCH, json=[event_body("rr-bad"), body])
    assert batch.status_code == 400
    assert f"1.{field}" in batch.json()["field_errors"]
    assert batch.json()["detail"].startswith(f"1.{field}")


def test_mixed_batch_lists_every_bad_item_and_writes_nothing(ds: httpx.Client) -> None:
    cid = f"rr-{uuid.uuid4().hex[:8]}"
    good = event_body(cid)
    batch = [
        good,
        event_body(cid, event_outcome="maybe"),
        event_body(cid),
        event_body(cid, event_category="billing", version=""),
        "not an object",
        {**event_body(cid), "event_id": good["event_id"]},
    ]
    answer = ds.post(BATCH, json=batch)
    assert answer.status_code == 400
    errors = answer.json()["field_errors"]
    assert errors["1.event_outcome"] == "must be one of success, failure, pending"
    assert {"3.event_category", "3.version", "4", "5.event_id"} <= set(errors)
    assert "0.event_id" not in errors
    assert answer.json()["detail"].startswith("1.event_outcome")
    assert ds.get(EVENTS, params={"correlation_id": cid}).json()["pagination"]["total"] == 0


@pytest.mark.parametrize(
    "body", [b"{}", b'"text"', b"[]", b"null"], ids=["object", "string", "empty", "null"]
)
def test_batch_must_be_a_non_empty_array(ds: httpx.Client, body: bytes) -> None:
    answer = ds.post(BATCH, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["type"] == "https://kubernaut.ai/problems/batch-size-exceeded"


def test_batch_over_500_is_refused(ds: httpx.Client) -> None:
    answer = ds.post(BATCH, json=[event_body("rr-big") for _ in range(501)])
    assert answer.status_code == 400
    assert answer.json()["type"] == "https://kubernaut.ai/problems/batch-size-exceeded"
    assert "501" in answer.json()["detail"]


def test_batch_of_exactly_500_is_stored(ds: httpx.Client) -> None:
    cid = f"rr-{uuid.uuid4().hex[:8]}"
    answer = ds.post(BATCH, json=[event_body(cid) for _ in range(500)])
    assert answer.status_code == 201
    assert len(answer.json()["event_ids"]) == 500


def test_body_over_5_mib_is_413(ds: httpx.Client) -> None:
    body = b"[" + b" " * (5 * 1024 * 1024) + b"]"
    answer = ds.post(BATCH, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["type"] == "https://kubernaut.ai/problems/payload-too-large"


def test_malformed_json_and_media_type(ds: httpx.Client) -> None:
    answer = ds.post(EVENTS, content=b"{nope", headers={"content-type": "application/json"})
    assert answer.status_code == 400
    answer = ds.post(EVENTS, content=b"{}", headers={"content-type": "text/plain"})
    assert answer.status_code == 415
    assert ds.post(EVENTS, content=b"{}", headers={"content-type": "??"}).status_code == 400


def test_duplicate_id_in_one_batch_is_400(ds: httpx.Client) -> None:
    event = event_body("rr-dup")
    answer = ds.post(BATCH, json=[event, event])
    assert answer.status_code == 400
    assert "1.event_id" in answer.json()["field_errors"]


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"since": "last tuesday"}, "since"),
        ({"until": "2024-13-45"}, "until"),
        ({"event_category": "billing"}, "event_category"),
        ({"event_outcome": "maybe"}, "event_outcome"),
        ({"detail_key": "a.b", "detail_value": "x"}, "detail_key"),
        ({"detail_key": "a"}, "detail_value"),
        ({"correlationId": "x"}, "correlationId"),
        ({"since": "\u0662\u0664h"}, "since"),
        ({"until": "\u0662\u0660\u0662\u0666-\u0661\u0662-\u0660\u0662"}, "until"),
    ],
)
def test_bad_query_parameters_name_themselves(
    ds: httpx.Client, params: dict[str, str], name: str
) -> None:
    answer = ds.get(EVENTS, params=params)
    assert answer.status_code == 400
    assert f"'{name}'" in answer.json()["detail"]


def test_scopes_and_tokens(sqlite_server: ServiceProcess) -> None:
    with sqlite_server.client(None) as anonymous:
        assert anonymous.get(EVENTS).status_code == 401
        assert anonymous.get("/openapi.json").status_code == 200
    with sqlite_server.client("wrong-token") as stranger:
        assert stranger.post(EVENTS, json=event_body()).status_code == 401
    with sqlite_server.client(READER_TOKEN) as reader:
        assert reader.get(EVENTS).status_code == 200
        assert reader.post(EVENTS, json=event_body()).status_code == 403
    with sqlite_server.client(WRITER_TOKEN) as writer:
        assert writer.post(EVENTS, json=event_body()).status_code == 201
        assert writer.get(EVENTS).status_code == 403


def test_routing_errors_are_problems(ds: httpx.Client) -> None:
    assert ds.get("/api/v1/nothing").status_code == 404
    answer = ds.delete(EVENTS)
    assert answer.status_code == 405
    assert "POST" in answer.headers["allow"] and "GET" in answer.headers["allow"]
    assert answer.headers["content-type"] == "application/problem+json"


def test_sigterm_drains_and_exits_zero(tmp_path: object) -> None:
    from pathlib import Path

    from e2ecov.recipes import free_port
    from tests.integration.datastorage.dstools import ADMIN_TOKEN, datastorage_process

    metrics_address = f"127.0.0.1:{free_port()}"
    process = datastorage_process(
        Path(str(tmp_path)) / "ds", env={"SIGNALGATE_SERVER__METRICSLISTEN": metrics_address}
    ).start()
    try:
        with process.client(ADMIN_TOKEN) as client:
            assert client.post(EVENTS, json=event_body("rr-term")).status_code == 201
        metrics = httpx.get(f"{process.ops_url}/metrics").text
        assert "audit_dlq_depth 0.0" in metrics
        assert 'datastorage_audit_writes_total{outcome="stored"} 1.0' in metrics
        assert "event_loop_lag_seconds_count " in metrics  # the loop is watched
        # every request by route template, method and status: a refused writer shows
        with process.client("a-rotated-out-token") as stale:
            assert stale.post(BATCH, json=[event_body("rr-term")]).status_code == 401
        metrics = httpx.get(f"{process.ops_url}/metrics").text
        assert (
            'datastorage_http_request_duration_seconds_count{endpoint="/api/v1/audit/events/batch",'
            'method="POST",status="401"} 1.0'
        ) in metrics
        assert (
            'datastorage_http_request_duration_seconds_count{endpoint="/api/v1/audit/events",'
            'method="POST",status="201"} 1.0'
        ) in metrics
        # the same routes on the second ops address (Kubernaut's charts scrape port 9090)
        scraped = httpx.get(f"http://{metrics_address}/metrics").text
        assert 'datastorage_audit_writes_total{outcome="stored"} 1.0' in scraped
        assert httpx.get(f"http://{metrics_address}/healthz").status_code == 200
    finally:
        code = process.stop()
    assert code == 0
    assert '"msg":"stopped"' in process.output()


def test_a_slow_body_gets_408_and_an_unfinished_head_is_closed(tmp_path: object) -> None:
    import socket
    from pathlib import Path

    from tests.integration.datastorage.dstools import datastorage_process
    from tests.support.services import read_answer

    process = datastorage_process(
        Path(str(tmp_path)) / "ds",
        env={
            "SIGNALGATE_SERVER__BODYREADTIMEOUT": "1s",
            "SIGNALGATE_SERVER__HEADERREADTIMEOUT": "1s",
        },
    ).start()
    try:
        host, port = process.api_url.removeprefix("http://").split(":")
        # a client that never finishes its request head is closed, unanswered (slowloris)
        no_head = socket.create_connection((host, int(port)))
        no_head.sendall(f"POST {EVENTS} HTTP/1.1\r\nHost: x\r\n".encode())
        stalled = socket.create_connection((host, int(port)))
        stalled.sendall(
            f"POST {EVENTS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WRITER_TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[".encode()
        )
        answer = read_answer(stalled)
        stalled.close()
        assert answer.startswith("HTTP/1.1 408"), answer[:200]
        assert "request-timeout" in answer and "did not arrive within 1s" in answer
        with process.client(WRITER_TOKEN) as client:  # the service goes on answering
            assert client.post(EVENTS, json=event_body("rr-slow")).status_code == 201
        no_head.settimeout(10)
        assert no_head.recv(1024) == b""
        no_head.close()
    finally:
        process.stop()


def _raw_exchange(server: ServiceProcess, request: bytes, close_after: bool = False) -> bytes:
    """`request` sent as it is on one connection; what the server answers until it closes (or,
    `close_after`, what it answered before the client shut its sending side)."""
    address = urlsplit(server.api_url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(request)
        if close_after:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


@pytest.mark.parametrize("ending", [b"zz\r\n", b""], ids=["bad chunk framing", "cut short"])
def test_a_chunked_body_that_does_not_end_stores_nothing(
    sqlite_server: ServiceProcess, ds: httpx.Client, ending: bytes
) -> None:
    """A whole event in the first chunk, then bad framing (answered 400) or the client's end:
    the body never ended, so nothing is stored. The body read took a chunked body cut short
    as whole, and the event was stored while its sender was told 400 (an outside check)."""
    cid = f"rr-{uuid.uuid4().hex[:8]}"
    body = orjson.dumps(event_body(cid))
    request = (
        f"POST {EVENTS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WRITER_TOKEN}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n"
        + ending
    )
    answer = _raw_exchange(sqlite_server, request, close_after=not ending)
    if ending:
        assert answer.startswith(b"HTTP/1.1 400 Bad Request"), answer[:200]
    time.sleep(0.5)  # a request still processed would have stored its event by now
    assert ds.get(EVENTS, params={"correlation_id": cid}).json()["pagination"]["total"] == 0
