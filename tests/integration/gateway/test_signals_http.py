"""Signal routes over real HTTP: responses, every error row of section 8, request rules."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from signalgate.gateway.adapters.parsing import MAX_SIGNAL_BYTES
from signalgate.gateway.settings import GatewaySettings
from tests.support.contract import SECURITY_HEADERS, problem
from tests.support.services import (
    ADMIN_TOKEN,
    READER_TOKEN,
    SIGNALS_TOKEN,
    ServiceProcess,
    alert,
    k8s_event,
    rfc3339,
    webhook,
)

PROM = "/api/v1/signals/prometheus"
EVENTS = "/api/v1/signals/kubernetes-event"


@pytest.fixture
def client(gateway: ServiceProcess) -> Iterator[httpx.Client]:
    with gateway.client() as c:
        yield c


def in_flight(ops_url: str, requests: int) -> None:
    """Wait until the Gateway's metrics show `requests` requests in flight."""
    deadline = time.monotonic() + 15
    while (
        f"gateway_inflight_requests {requests}.0"
        not in httpx.get(f"{ops_url}/metrics", timeout=5).text
    ):
        assert time.monotonic() < deadline, f"{requests} request(s) never got in flight"
        time.sleep(0.05)


def test_created_then_duplicate_response_shapes(client: httpx.Client) -> None:
    body = webhook(alert(pod="shape-1"))
    first = client.post(PROM, json=body)
    assert first.status_code == 201, first.text
    created = first.json()
    assert created["status"] == "created" and created["duplicate"] is False
    assert created["fingerprint"] == hashlib.sha256(b"prod:Pod:shape-1").hexdigest()
    assert created["remediationRequestName"].startswith("rr-" + created["fingerprint"][:12] + "-")
    assert created["remediationRequestNamespace"] == "kubernaut-system"

    second = client.post(PROM, json=body)
    assert second.status_code == 202
    dup = second.json()
    assert dup["duplicate"] is True
    assert dup["remediationRequestName"] == created["remediationRequestName"]
    meta = dup["metadata"]
    assert meta["count"] == 2
    assert meta["remediationRequestRef"] == f"kubernaut-system/{created['remediationRequestName']}"
    assert meta["firstOccurrence"] <= meta["lastOccurrence"]


def test_stored_rr_has_the_contract_spec(client: httpx.Client) -> None:
    raw = orjson.dumps(
        webhook(alert(pod="spec-1", cluster="eu-1", team="é" * 40, severity="warning"))
    )
    created = client.post(PROM, content=raw, headers={"content-type": "application/json"}).json()
    rr = client.get(f"/api/v1/remediation-requests/{created['remediationRequestName']}").json()
    assert rr["apiVersion"] == "kubernaut.ai/v1alpha1" and rr["kind"] == "RemediationRequest"
    assert rr["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gateway-service"
    spec = rr["spec"]
    assert spec["signalFingerprint"] == hashlib.sha256(b"eu-1:prod:Pod:spec-1").hexdigest()
    assert spec["clusterID"] == "eu-1"
    assert spec["signalName"] == "PodCrashLooping" and spec["severity"] == "warning"
    assert spec["signalType"] == "alert" and spec["signalSource"] == "prometheus"
    assert spec["targetType"] == "kubernetes"
    assert spec["targetResource"] == {
        "kind": "Pod",
        "name": "spec-1",
        "namespace": "prod",
        "apiVersion": "v1",
    }
    # 40 two-byte characters truncated to 63 bytes: 31 whole characters, never half of one
    assert spec["signalLabels"]["team"] == "é" * 31
    assert spec["originalPayload"] == raw.decode()
    assert rr["status"]["overallPhase"] == "Pending"
    assert rr["status"]["deduplication"]["occurrenceCount"] == 1


def test_kubernetes_events(client: httpx.Client) -> None:
    warning = client.post(EVENTS, json=k8s_event(name="ev-1"))
    assert warning.status_code == 201, warning.text
    assert client.post(EVENTS, json=k8s_event("Error", name="ev-1")).status_code == 202
    normal = client.post(EVENTS, json=k8s_event("Normal", name="ev-1"))
    assert normal.status_code == 200 and normal.json()["status"] == "ignored"


def test_alert_and_event_on_the_same_pod_share_one_rr(client: httpx.Client) -> None:
    first = client.post(PROM, json=webhook(alert(pod="shared-1"))).json()
    second = client.post(EVENTS, json=k8s_event(name="shared-1")).json()
    assert second["status"] == "duplicate"
    assert second["remediationRequestName"] == first["remediationRequestName"]


def test_multi_alert_webhook_answers_207_in_input_order(client: httpx.Client) -> None:
    body = webhook(
        alert(pod="multi-1"),
        alert(pod="multi-1"),
        alert(pod="", alertname="NoTarget"),
        {"labels": {"pod": "x"}},
        alert(pod="multi-2", status="resolved"),
    )
    response = client.post(PROM, json=body)
    assert response.status_code == 207
    results = response.json()["results"]
    assert [r["status"] for r in results] == [
        "created",
        "duplicate",
        "rejected",
        "rejected",  # invalid: rejected with its error, as Kubernaut reports it
        "ignored",
    ]
    assert "alertname" in results[3]["error"]
    assert response.json()["summary"] == {
        "total": 5,
        "created": 1,
        "deduplicated": 1,
        "resolved": 0,
        "rejected": 2,
        "ignored": 1,
        "failed": 0,
    }


def test_no_target_is_rejected_with_a_fix(client: httpx.Client) -> None:
    response = client.post(PROM, json=webhook(alert(pod="", alertname="HighLatency")))
    assert response.status_code == 200
    rejection = response.json()["rejection"]
    assert rejection["reason"] == "no_target_resource"
    assert "deployment" in rejection["message"] and "pod" in rejection["action"]
    # a label that names a kind with a value that is not a name: the message says which
    response = client.post(PROM, json=webhook(alert(pod="\uff50od-1", alertname="HighLatency")))
    rejection = response.json()["rejection"]
    assert rejection["reason"] == "no_target_resource"
    assert "pod='\uff50od-1' is not a resource name" in rejection["message"], rejection
    assert "set one of the labels" not in rejection["message"]


def test_opt_out_label_rejects_as_unmanaged(client: httpx.Client) -> None:
    response = client.post(PROM, json=webhook(alert(pod="opt-1", kubernaut_managed="false")))
    body = response.json()
    assert response.status_code == 200 and body["status"] == "rejected"
    assert body["rejection"]["reason"] == "unmanaged_resource"
    assert body["fingerprint"] == hashlib.sha256(b"prod:Pod:opt-1").hexdigest()


# -- every error row of section 8 -------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"alerts": []}', "at least one alert"),
        (b'{"alerts": "x"}', "alerts: must be an array"),
        (b'{"alerts": [{"labels": {"pod": "a"}}]}', "alertname: required"),
    ],
)
def test_400_validation(client: httpx.Client, content: bytes, detail: str) -> None:
    response = client.post(PROM, content=content, headers={"content-type": "application/json"})
    problem(response, 400, "validation-error", detail)


def test_400_bad_content_type_syntax_and_415_other_media(client: httpx.Client) -> None:
    body = orjson.dumps(webhook(alert(pod="ct-1")))
    bad = client.post(PROM, content=body, headers={"content-type": "application/"})
    problem(bad, 400, "validation-error", "Content-Type")
    other = client.post(PROM, content=body, headers={"content-type": "text/plain"})
    problem(other, 415, "unsupported-media-type")
    assert other.headers["accept"] == "application/json"
    with_charset = client.post(
        PROM, content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert with_charset.status_code == 201
    absent = httpx.post(
        client.base_url.join(PROM),
        content=body,
        headers={"authorization": client.headers["authorization"]},
    )
    assert absent.status_code == 202


def test_401_and_403(gateway: ServiceProcess) -> None:
    body = webhook(alert(pod="auth-1"))
    with gateway.client(token=None) as anonymous:
        problem(anonymous.post(PROM, json=body), 401, "unauthorized", "missing")
        wrong = anonymous.post(PROM, json=body, headers={"authorization": "Bearer nope"})
        problem(wrong, 401, "unauthorized", "unknown token")
        basic = anonymous.post(PROM, json=body, headers={"authorization": "Basic dXNlcg=="})
        problem(basic, 401, "unauthorized")
    with gateway.client(token=READER_TOKEN) as reader:
        problem(reader.post(PROM, json=body), 403, "forbidden", "signals:write")
        assert reader.get("/api/v1/remediation-requests").status_code == 200
    with gateway.client(token=SIGNALS_TOKEN) as sender:
        assert sender.post(PROM, json=body).status_code == 201
        problem(sender.get("/api/v1/remediation-requests"), 403, "forbidden")


def test_404_and_405_come_before_auth(gateway: ServiceProcess) -> None:
    with gateway.client(token=None) as anonymous:
        problem(anonymous.get("/api/v1/nothing"), 404, "not-found")
        wrong = anonymous.get(PROM)
        problem(wrong, 405, "method-not-allowed")
        assert wrong.headers["allow"] == "POST"
        assert anonymous.get("/openapi.json").status_code == 200


def test_404_unknown_rr(client: httpx.Client) -> None:
    problem(client.get("/api/v1/remediation-requests/rr-nope"), 404, "not-found", "rr-nope")


def test_413_limit_is_exact(client: httpx.Client) -> None:
    limit = GatewaySettings().server.max_body_size
    base = orjson.dumps(webhook(alert(pod="size-1"), alert(pod="size-2")))
    # pad the JSON with whitespace to exactly the limit, then one byte more
    exact = base + b" " * (limit - len(base))
    ok = client.post(PROM, content=exact, headers={"content-type": "application/json"})
    assert ok.status_code == 207, ok.text
    assert ok.json()["summary"]["total"] == 2
    over = client.post(PROM, content=exact + b" ", headers={"content-type": "application/json"})
    problem(over, 413, "payload-too-large")


def test_one_alert_over_what_a_signal_may_hold_is_named(client: httpx.Client) -> None:
    """A webhook may be megabytes; one alert is stored whole in its RR (an etcd object in
    Kubernetes mode), so it may hold MAX_SIGNAL_BYTES: over that, that alert is refused and
    the others are decided."""
    big = alert(pod="huge-1")
    big["annotations"] = {"dump": "x" * MAX_SIGNAL_BYTES}
    answer = client.post(PROM, json=webhook(alert(pod="fine-1"), big))
    assert answer.status_code == 207, answer.text
    first, second = answer.json()["results"]
    assert first["status"] == "created"
    assert second["error"].startswith("alerts[1]: ")
    assert f"over the {MAX_SIGNAL_BYTES:,} one signal may hold" in second["error"]
    alone = client.post(PROM, json=webhook(big))
    problem(alone, 400, "validation-error", "alerts[0]: ")


def test_413_without_content_length(client: httpx.Client) -> None:
    limit = GatewaySettings().server.max_body_size

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 1024 + 1):
            yield b" " * 1024

    response = client.post(PROM, content=chunks(), headers={"content-type": "application/json"})
    problem(response, 413, "payload-too-large")


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("abc", "base-10 integer"),
        ("-5", "base-10 integer"),
        ("1.5", "base-10 integer"),
        ("now-400", "older than"),
        ("now+400", "in the future"),
        ("999999999999", "in the future"),  # past the last year a date holds
    ],
)
def test_x_timestamp_rules(client: httpx.Client, value: str, detail: str) -> None:
    if value.startswith("now"):  # made when the test runs (collection may be minutes before)
        value = str(int(time.time()) + int(value[3:]))
    response = client.post(PROM, json=webhook(alert(pod="ts-1")), headers={"x-timestamp": value})
    problem(response, 400, "validation-error", "X-Timestamp")
    assert detail in response.json()["detail"]


def test_x_timestamp_fresh_passes(client: httpx.Client) -> None:
    response = client.post(
        PROM, json=webhook(alert(pod="ts-2")), headers={"x-timestamp": str(int(time.time()))}
    )
    assert response.status_code == 201


def test_freshness_through_http(client: httpx.Client) -> None:
    now = datetime.now(UTC)
    future = client.post(
        PROM, json=webhook(alert(pod="fr-1", starts_at=rfc3339(now + timedelta(minutes=3))))
    )
    problem(future, 400, "validation-error", "startsAt")
    old_alert = client.post(
        PROM, json=webhook(alert(pod="fr-2", starts_at=rfc3339(now - timedelta(days=2))))
    )
    assert old_alert.status_code == 201
    stale = client.post(
        EVENTS, json=k8s_event(name="fr-3", last_timestamp=rfc3339(now - timedelta(minutes=6)))
    )
    problem(stale, 400, "validation-error", "older than")
    ahead = client.post(
        EVENTS, json=k8s_event(name="fr-4", last_timestamp=rfc3339(now + timedelta(minutes=3)))
    )
    problem(ahead, 400, "validation-error", "in the future")
    missing = k8s_event(name="fr-5")
    missing["firstTimestamp"] = missing["lastTimestamp"] = None
    problem(client.post(EVENTS, json=missing), 400, "validation-error", "lastTimestamp")
    problem(client.post(EVENTS, json={"type": "Info"}), 400, "validation-error", "type")


def test_request_id_and_security_headers(client: httpx.Client) -> None:
    kept = client.get("/api/v1/remediation-requests", headers={"x-request-id": "abc.DEF_123-x"})
    assert kept.headers["x-request-id"] == "abc.DEF_123-x"
    replaced = client.get("/api/v1/remediation-requests", headers={"x-request-id": "bad id!"})
    assert (
        replaced.headers["x-request-id"] != "bad id!"
        and len(replaced.headers["x-request-id"]) == 36
    )
    for response in (kept, client.get("/nope"), client.post(PROM, content=b"{")):
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value


def test_503_when_too_many_requests_are_in_flight(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.services import ADMIN_TOKEN, gateway_process

    service = gateway_process(
        tmp_path, env={"SIGNALGATE_SERVER__MAXCONCURRENTREQUESTS": "1"}
    ).start()
    try:
        # a request held up in the store (its write lock taken by someone else) is in flight
        database = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
        database.execute("BEGIN IMMEDIATE")
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(
                httpx.post,
                service.api_url + PROM,
                json=webhook(alert(pod="held-1")),
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=30,
            )
            in_flight(service.ops_url, 1)
            with service.client() as c:
                response = c.post(PROM, json=webhook(alert(pod="busy-1")))
            # 503, which Alertmanager retries (a 429 it would give up until group_interval)
            problem(response, 503, "service-unavailable")
            assert response.headers["retry-after"] == "1"
            assert "server.maxConcurrentRequests" in response.json()["detail"]
            database.execute("ROLLBACK")
            assert held.result().status_code == 201
        database.close()
        with service.client() as c:
            assert c.post(PROM, json=webhook(alert(pod="busy-1"))).status_code == 201
    finally:
        service.stop()


def test_a_slow_body_holds_no_slot_and_gets_408(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.services import ADMIN_TOKEN, gateway_process, read_answer

    service = gateway_process(
        tmp_path,
        env={
            "SIGNALGATE_SERVER__MAXCONCURRENTREQUESTS": "1",
            "SIGNALGATE_SERVER__BODYREADTIMEOUT": "1s",
        },
    ).start()
    try:
        host, port = service.api_url.removeprefix("http://").split(":")
        # clients that send headers and part of their body, then stall
        stalled = [socket.create_connection((host, int(port))) for _ in range(3)]
        for connection in stalled:
            connection.sendall(
                f"POST {PROM} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode()
            )
        with service.client() as c:  # the one slot is free: the stalled bodies hold none
            assert c.post(PROM, json=webhook(alert(pod="busy-1"))).status_code == 201
        for connection in stalled:
            answer = read_answer(connection)
            assert answer.startswith("HTTP/1.1 408"), answer[:200]
            assert "request-timeout" in answer and "did not arrive within 1s" in answer
            connection.close()
        # a client that declares more than it sends and goes away is refused, not processed
        short = socket.create_connection((host, int(port)))
        short.sendall(
            f"POST {PROM} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode()
            + json.dumps(webhook(alert(pod="short-1"))).encode()
        )
        short.shutdown(socket.SHUT_WR)
        short.close()
        time.sleep(0.5)
        with service.client() as c:
            listed = c.get("/api/v1/remediation-requests").json()["items"]
        assert all(rr["spec"]["targetResource"]["name"] != "short-1" for rr in listed)
    finally:
        service.stop()


def test_connections_without_a_request_head_are_closed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Slowloris: connections that send nothing, or a request head they never finish, are
    closed after `server.headerReadTimeout`, on both listeners; a request meanwhile is
    answered."""
    from tests.support.services import gateway_process

    service = gateway_process(tmp_path, env={"SIGNALGATE_SERVER__HEADERREADTIMEOUT": "1s"}).start()
    try:
        stalled = []
        for url in (service.api_url, service.ops_url):
            host, port = url.removeprefix("http://").split(":")
            for sent in (b"", f"POST {PROM} HTTP/1.1\r\nHost: x\r\nContent-Ty".encode()):
                connection = socket.create_connection((host, int(port)))
                connection.sendall(sent)
                stalled.append(connection)
        started = time.monotonic()
        with service.client() as c:
            assert c.post(PROM, json=webhook(alert(pod="head-1"))).status_code == 201
        for connection in stalled:
            connection.settimeout(10)
            assert connection.recv(1024) == b""  # closed by the server, nothing answered
            connection.close()
        assert 0.9 <= time.monotonic() - started < 5
    finally:
        service.stop()


def test_malformed_requests_get_a_problem_and_one_log_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Garbage sent to the API listener is answered 400 with a problem document each time,
    and logged once (uvicorn's warning per request would let any client fill the logs)."""
    from tests.support.services import gateway_process, read_answer

    service = gateway_process(tmp_path).start()
    try:
        host, port = service.api_url.removeprefix("http://").split(":")
        for _ in range(20):
            connection = socket.create_connection((host, int(port)))
            connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            answer = read_answer(connection)
            connection.close()
            assert answer.startswith("HTTP/1.1 400 Bad Request"), answer[:200]
            assert "application/problem+json" in answer and "not valid HTTP/1.1" in answer
        with service.client() as c:  # still serving
            assert c.post(PROM, json=webhook(alert(pod="after-garbage"))).status_code == 201
    finally:
        service.stop()
    assert service.output().count("Invalid HTTP request received.") == 1


def test_ops_listener(gateway: ServiceProcess) -> None:
    health = httpx.get(f"{gateway.ops_url}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    assert datetime.fromisoformat(health.json()["timestamp"].replace("Z", "+00:00"))
    ready = httpx.get(f"{gateway.ops_url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_metrics_move_as_signals_arrive(gateway: ServiceProcess, client: httpx.Client) -> None:
    def sample(name: str, **labels: str) -> float:
        text = httpx.get(f"{gateway.ops_url}/metrics").text
        wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in text.splitlines():
            if line.startswith(name) and (not labels or "{" + wanted + "}" in line):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before_created = sample(
        "gateway_crds_created_total", source_type="prometheus", status="created"
    )
    before_dedup = sample("gateway_signals_deduplicated_total", signal_name="MetricsAlert")
    client.post(PROM, json=webhook(alert(alertname="MetricsAlert", pod="met-1")))
    client.post(PROM, json=webhook(alert(alertname="MetricsAlert", pod="met-1")))
    assert (
        sample("gateway_crds_created_total", source_type="prometheus", status="created")
        == before_created + 1
    )
    assert (
        sample("gateway_signals_deduplicated_total", signal_name="MetricsAlert") == before_dedup + 1
    )
    text = httpx.get(f"{gateway.ops_url}/metrics").text
    assert 'endpoint="/api/v1/signals/prometheus"' in text
    assert "gateway_inflight_requests" in text


def test_the_bytes_of_webhooks_being_decided_are_bounded_together(tmp_path: Path) -> None:
    """Each webhook may be server.maxBodySize; two full ones at once are the most decided
    together (each takes seconds of a core, its alerts ~15 times its size in memory): the
    next is 503. Twenty full webhooks at once all passed the deadline (504) with part of
    each stored, and took the Gateway to 1.2 GB."""
    from tests.support.services import ADMIN_TOKEN, gateway_process

    limit = 16 * 1024

    def full(pod: str) -> bytes:
        base = orjson.dumps(webhook(alert(pod=pod), alert(pod=pod + "-b")))
        return base + b" " * (limit - len(base))

    service = gateway_process(tmp_path, env={"SIGNALGATE_SERVER__MAXBODYSIZE": str(limit)}).start()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    try:
        database = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
        database.execute("BEGIN IMMEDIATE")  # every decision waits: the webhooks stay in flight
        with ThreadPoolExecutor(2) as pool:
            held = [
                pool.submit(
                    httpx.post,
                    service.api_url + PROM,
                    content=full(f"held-{i}"),
                    headers=headers,
                    timeout=30,
                )
                for i in range(2)
            ]
            in_flight(service.ops_url, 2)  # both held webhooks are being decided
            time.sleep(0.2)
            with service.client() as c:
                refused = c.post(PROM, content=full("third"), headers=headers)
            problem(refused, 503, "service-unavailable", "bytes of webhooks being decided")
            assert refused.headers["retry-after"] == "1"
            database.execute("ROLLBACK")
            assert [f.result().status_code for f in held] == [207] * 2
        database.close()
        with service.client() as c:
            assert c.post(PROM, content=full("third"), headers=headers).status_code == 207
    finally:
        service.stop()


def test_paths_are_matched_as_sent(client: httpx.Client) -> None:
    """A trailing slash is not redirected (Starlette built the 307's URL from the `Host`
    header: anyone's host), and an encoded '/' is not decoded into a route."""
    slash = client.get("/api/v1/remediation-requests/", headers={"Host": "evil.example"})
    problem(slash, 404, "not-found")
    assert "location" not in slash.headers
    name = client.post(PROM, json=webhook(alert(pod="slash-1"))).json()["remediationRequestName"]
    encoded = client.patch(
        f"/api/v1/remediation-requests/{name}%2Fstatus", json={"overallPhase": "Processing"}
    )
    problem(encoded, 400, "validation-error", "%2F")
    assert client.get(f"/api/v1/remediation-requests/{name}").json()["status"]["overallPhase"] == (
        "Pending"
    )
    null = client.patch(f"/api/v1/remediation-requests/{name}/status", json={"overallPhase": None})
    problem(null, 400, "validation-error", "overallPhase: null is not a phase")


def test_refused_requests_log_one_line_in_a_while_not_one_each(tmp_path: Path) -> None:
    """A sender's mistakes (or a busy sender while DataStorage is away) must not fill the
    log: one line per kind and interval, the next one counting what it held back."""
    from tests.support.services import gateway_process

    with gateway_process(tmp_path).start() as gateway, gateway.client() as c:
        started = time.monotonic()
        for i in range(300):
            answer = c.post(PROM, json=webhook(alert(pod=f"x-{i}", namespace="Not_A_NS")))
            assert answer.status_code == 400
        intervals = 1 + int((time.monotonic() - started) // 10)  # one line per 10 s at most
        written = gateway.output().count('"msg":"request refused"')
    assert 1 <= written <= intervals, (written, intervals)


def test_refused_tokens_are_logged_sampled_and_never_shown(tmp_path: Path) -> None:
    """An operator finds the sender still using a rotated-out token in the log (401 and
    403 were never logged): one line per kind and interval, never the token."""
    from tests.support.services import gateway_process

    with gateway_process(tmp_path).start() as gateway:
        for n in range(50):
            with gateway.client(f"a-guessed-token-{n}") as c:
                assert c.post(PROM, json=webhook(alert(pod="tok-1"))).status_code == 401
        logged = gateway.output()
    refused = [line for line in logged.splitlines() if '"msg":"request refused"' in line]
    assert len(refused) == 1 and '"status":401' in refused[0], refused
    assert "unknown token" in refused[0] and "a-guessed-token" not in logged


def test_a_400_names_its_field_in_field_errors_too(client: httpx.Client) -> None:
    """As DataStorage's 400s do: a client reads the field without parsing the detail."""
    answer = client.post(PROM, json=webhook(alert(pod="fe-1", namespace="Not_A_NS")))
    body = problem(answer, 400, "validation-error", "alerts[0].labels.namespace")
    assert list(body["field_errors"]) == ["alerts[0].labels.namespace"]
    limit = problem(client.get("/api/v1/remediation-requests?limit=0"), 400, "validation-error")
    assert list(limit["field_errors"]) == ["limit"]


def one_answer(connection: socket.socket) -> tuple[str, dict[str, str], bytes]:
    """The next answer on `connection`: status line, headers (lowercased names), body."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = connection.recv(65536)
        assert chunk, f"closed before an answer: {raw!r}"
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = connection.recv(65536)
        assert chunk, "closed in the middle of an answer"
        body += chunk
    return status, headers, body


def wait_closed(connection: socket.socket) -> None:
    """Until the server closes `connection` (the socket's timeout fails the test if never)."""
    with contextlib.suppress(ConnectionResetError):
        while connection.recv(65536):
            pass


def test_an_error_after_the_body_arrived_keeps_the_connection(gateway: ServiceProcess) -> None:
    """A 400 (or 415) to a request whose body is in: the next request is answered on the
    same connection. Every such error said `Connection: close`, and each sender
    (Alertmanager, Kubernaut's) reconnected for its next request."""
    host, port = gateway.api_url.removeprefix("http://").split(":")
    auth = f"Authorization: Bearer {ADMIN_TOKEN}\r\n"
    bad = json.dumps(webhook(alert(pod="kept-1", namespace="Not_A_NS"))).encode()
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        for kind in ("application/json", "text/plain"):  # a 400 read whole, a 415 unread
            connection.sendall(
                f"POST {PROM} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: {kind}\r\n"
                f"Content-Length: {len(bad)}\r\n\r\n".encode()
                + bad
            )
            status, headers, _ = one_answer(connection)
            assert status.split()[1] in ("400", "415") and "connection" not in headers, status
        connection.sendall(
            f"GET /api/v1/remediation-requests HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()
        )
        status, headers, _ = one_answer(connection)  # on the same connection
        assert status.startswith("HTTP/1.1 200 ") and "connection" not in headers


def test_an_error_before_the_body_arrived_closes_the_connection(gateway: ServiceProcess) -> None:
    """A 413 to a body over the bound, or a 401, answered while the body still arrives: the
    connection cannot serve another request, and the answer says so (a client does not send
    its next request into it: "server disconnected without a response")."""
    host, port = gateway.api_url.removeprefix("http://").split(":")
    over = GatewaySettings().server.max_body_size + 1
    for token, expected in ((ADMIN_TOKEN, "413"), ("not-a-token", "401")):
        with socket.create_connection((host, int(port)), timeout=30) as connection:
            connection.sendall(
                f"POST {PROM} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {over}\r\n\r\n{{".encode()
            )
            status, headers, _ = one_answer(connection)
            assert status.split()[1] == expected and headers["connection"] == "close", status
            wait_closed(connection)
