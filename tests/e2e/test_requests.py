"""Request rules, errors and headers over real HTTP (docs/gateway.md: "Authentication",
"What a signal request goes through", "Errors")."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.e2e.stack import unique
from tests.support.contract import SECURITY_HEADERS, problem
from tests.support.services import alert, k8s_event, rfc3339, webhook

PROMETHEUS = "/api/v1/signals/prometheus"
EVENTS = "/api/v1/signals/kubernetes-event"
LIMIT = 4 * 1024 * 1024  # server.maxBodySize: a whole webhook
SIGNAL_LIMIT = 256 * 1024  # one alert, as a webhook of its own


def a_webhook() -> dict[str, object]:
    return webhook(alert(namespace=unique("ns"), pod=unique("api")))


def padded(size: int) -> bytes:
    """A valid webhook of exactly `size` bytes (padding in an annotation)."""
    payload = a_webhook()
    base = len(json.dumps(payload, separators=(",", ":")).encode())
    payload["alerts"][0]["annotations"]["padding"] = ""  # type: ignore[index]
    overhead = len(json.dumps(payload, separators=(",", ":")).encode()) - base
    payload["alerts"][0]["annotations"]["padding"] = "x" * (size - base - overhead)  # type: ignore[index]
    body = json.dumps(payload, separators=(",", ":")).encode()
    assert len(body) == size
    return body


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"alerts": [', "JSON"),
        (b"[]", ""),
        (json.dumps({"version": "4", "alerts": []}).encode(), "alert"),
        (json.dumps({"version": "4", "alerts": {"a": 1}}).encode(), "alerts"),
    ],
    ids=["malformed-json", "not-an-object", "no-alerts", "alerts-not-an-array"],
)
def test_malformed_webhooks_are_400_problems(
    gateway: httpx.Client, body: bytes, fragment: str
) -> None:
    answer = gateway.post(PROMETHEUS, content=body, headers={"Content-Type": "application/json"})
    detail = problem(answer, 400, "validation-error")["detail"]
    assert fragment.lower() in detail.lower()


def test_missing_alertname_is_400_naming_it(gateway: httpx.Client) -> None:
    payload = a_webhook()
    del payload["alerts"][0]["labels"]["alertname"]  # type: ignore[index]
    del payload["commonLabels"]["alertname"]  # type: ignore[attr-defined]  # as Alertmanager would
    answer = gateway.post(PROMETHEUS, json=payload)
    assert "alertname" in problem(answer, 400, "validation-error")["detail"]


def test_wrong_media_type_is_415_with_accept(gateway: httpx.Client) -> None:
    answer = gateway.post(
        PROMETHEUS, content=json.dumps(a_webhook()), headers={"Content-Type": "text/plain"}
    )
    problem(answer, 415, "unsupported-media-type")
    assert answer.headers["accept"] == "application/json"

    garbled = gateway.post(PROMETHEUS, content=b"{}", headers={"Content-Type": "json"})
    problem(garbled, 400, "validation-error")

    with_charset = gateway.post(
        PROMETHEUS,
        content=json.dumps(a_webhook()),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert with_charset.status_code == 201, with_charset.text


def test_body_limit_is_exact(gateway: httpx.Client) -> None:
    many = json.dumps(webhook(*(alert(pod=unique("many")) for _ in range(3)))).encode()
    exact = many + b" " * (LIMIT - len(many))
    at_limit = gateway.post(PROMETHEUS, content=exact, headers={"Content-Type": "application/json"})
    assert at_limit.status_code == 207, at_limit.text
    assert at_limit.json()["summary"]["created"] == 3
    over = gateway.post(
        PROMETHEUS, content=exact + b" ", headers={"Content-Type": "application/json"}
    )
    problem(over, 413, "payload-too-large")


def test_one_alert_may_hold_256_kib(gateway: httpx.Client) -> None:
    """Counted as its RR stores it: an escape (its groupKey's quotes, `\\"`) one byte more."""
    headers = {"Content-Type": "application/json"}
    escapes = padded(SIGNAL_LIMIT).count(b"\\")
    assert escapes >= 2  # Alertmanager's groupKey quotes its label values
    at_limit = gateway.post(PROMETHEUS, content=padded(SIGNAL_LIMIT - escapes), headers=headers)
    assert at_limit.status_code == 201, at_limit.text
    over = gateway.post(PROMETHEUS, content=padded(SIGNAL_LIMIT - escapes + 1), headers=headers)
    problem(
        over,
        400,
        "validation-error",
        f"alerts[0]: {SIGNAL_LIMIT - escapes + 1:,} bytes as a signal of its own, 262,145 as",
    )


@pytest.mark.parametrize(
    ("offset", "fragment"),
    [(-600, "older"), (+600, "future")],
    ids=["stale", "future"],
)
def test_x_timestamp_outside_the_window_is_400(
    gateway: httpx.Client, offset: int, fragment: str
) -> None:
    stamp = str(int(time.time()) + offset)
    answer = gateway.post(PROMETHEUS, json=a_webhook(), headers={"X-Timestamp": stamp})
    assert fragment in problem(answer, 400, "validation-error")["detail"]


def test_x_timestamp_inside_the_window_and_garbage(gateway: httpx.Client) -> None:
    fresh = gateway.post(
        PROMETHEUS, json=a_webhook(), headers={"X-Timestamp": str(int(time.time()))}
    )
    assert fresh.status_code == 201, fresh.text
    garbage = gateway.post(PROMETHEUS, json=a_webhook(), headers={"X-Timestamp": "12.5"})
    assert "X-Timestamp" in problem(garbage, 400, "validation-error")["detail"]


def test_alert_starting_in_the_future_is_400(gateway: httpx.Client) -> None:
    later = rfc3339(datetime.now(UTC) + timedelta(minutes=10))
    payload = webhook(alert(starts_at=later, namespace=unique("ns"), pod=unique("api")))
    answer = gateway.post(PROMETHEUS, json=payload)
    assert "startsAt" in problem(answer, 400, "validation-error")["detail"]


@pytest.mark.parametrize("minutes", [-30, +10], ids=["stale", "future"])
def test_event_outside_the_freshness_window_is_400(gateway: httpx.Client, minutes: int) -> None:
    when = rfc3339(datetime.now(UTC) + timedelta(minutes=minutes))
    event = k8s_event("Warning", namespace=unique("ns"), name=unique("api"), last_timestamp=when)
    problem(gateway.post(EVENTS, json=event), 400, "validation-error")


def test_event_with_an_unknown_type_or_no_reason_is_400(gateway: httpx.Client) -> None:
    event = k8s_event("Sparkly", namespace=unique("ns"), name=unique("api"))
    problem(gateway.post(EVENTS, json=event), 400, "validation-error")
    event = k8s_event("Warning", namespace=unique("ns"), name=unique("api"))
    del event["reason"]
    assert "reason" in problem(gateway.post(EVENTS, json=event), 400, "validation-error")["detail"]


def test_unknown_path_is_404_and_wrong_method_is_405(
    gateway: httpx.Client, anonymous: httpx.Client
) -> None:
    problem(gateway.get("/api/v1/nothing-here"), 404, "not-found")
    wrong = anonymous.get(PROMETHEUS)  # routing comes before auth
    problem(wrong, 405, "method-not-allowed")
    assert "POST" in wrong.headers["allow"]
    problem(gateway.delete("/api/v1/remediation-requests"), 405, "method-not-allowed")


def test_no_or_unknown_token_is_401(anonymous: httpx.Client) -> None:
    problem(anonymous.post(PROMETHEUS, json=a_webhook()), 401, "unauthorized")
    for header in ("Bearer not-a-known-token", "Basic dXNlcjpwYXNz", "Bearer"):
        answer = anonymous.post(PROMETHEUS, json=a_webhook(), headers={"Authorization": header})
        problem(answer, 401, "unauthorized")
    problem(anonymous.get("/api/v1/remediation-requests"), 401, "unauthorized")


def test_token_without_the_scope_is_403(reader: httpx.Client) -> None:
    assert (
        "signals:write"
        in problem(reader.post(PROMETHEUS, json=a_webhook()), 403, "forbidden")["detail"]
    )
    assert reader.get("/api/v1/remediation-requests", params={"limit": "1"}).status_code == 200
    answer = reader.patch(
        "/api/v1/remediation-requests/rr-000000000000-00000000/status",
        json={"overallPhase": "Completed"},
    )
    problem(answer, 403, "forbidden")


def test_openapi_needs_no_token(anonymous: httpx.Client) -> None:
    answer = anonymous.get("/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    assert document["openapi"].startswith("3.1")
    assert "/api/v1/signals/prometheus" in document["paths"]


@pytest.mark.parametrize("status", [201, 400, 401, 404])
def test_security_headers_on_every_answer(
    gateway: httpx.Client, anonymous: httpx.Client, status: int
) -> None:
    answer = {
        201: lambda: gateway.post(PROMETHEUS, json=a_webhook()),
        400: lambda: gateway.post(
            PROMETHEUS, content=b"{", headers={"Content-Type": "application/json"}
        ),
        401: lambda: anonymous.post(PROMETHEUS, json=a_webhook()),
        404: lambda: gateway.get("/nope"),
    }[status]()
    assert answer.status_code == status
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers.get(name) == value, name
    assert answer.headers["x-request-id"]


def test_request_id_is_kept_when_well_formed_and_replaced_otherwise(gateway: httpx.Client) -> None:
    mine = f"e2e.{uuid.uuid4().hex}"
    kept = gateway.post(PROMETHEUS, json=a_webhook(), headers={"X-Request-ID": mine})
    assert kept.headers["x-request-id"] == mine

    bad = gateway.post(PROMETHEUS, content=b"{", headers={"X-Request-ID": "no spaces/allowed!"})
    replaced = bad.headers["x-request-id"]
    assert replaced != "no spaces/allowed!"
    assert str(uuid.UUID(replaced)) == replaced
    assert bad.json()["request_id"] == replaced

    fresh = gateway.get("/api/v1/remediation-requests", params={"limit": "1"})
    assert str(uuid.UUID(fresh.headers["x-request-id"]))
