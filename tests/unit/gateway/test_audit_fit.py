"""Every event the Gateway builds is one DataStorage stores: whatever a signal's body holds
within the Gateway's own limits (256 KiB, any nesting its parser takes, annotations of 200
KiB; control characters and integers beyond 64 bits are refused with the request), the event
passes DataStorage's own validation after the trip through JSON. An event DataStorage
refused would be dropped after the signal was answered.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalgate.common.audit import MAX_EVENT_DATA_BYTES
from signalgate.datastorage.events import validate_event
from signalgate.gateway import audit_events as ev
from signalgate.gateway.adapters.alertmanager import parse_webhook
from signalgate.gateway.adapters.parsing import MAX_SIGNAL_BYTES, Freshness, counted_size
from signalgate.gateway.signal import Signal
from signalgate.remediation.model import utcnow
from tests.support.services import alert, rfc3339, webhook

BODY_LIMIT = MAX_SIGNAL_BYTES  # the most one signal (one alert's own webhook) may hold


def signals_of(body: bytes) -> list[Signal]:
    items = parse_webhook(body, utcnow(), Freshness())
    found = [item for item in items if isinstance(item, Signal)]
    assert found, items
    return found


def stored_form(signal: Signal, event_type: str = ev.SIGNAL_RECEIVED) -> dict[str, Any]:
    """The event as DataStorage receives it (through JSON), after its validation."""
    now = utcnow()
    event = ev.build_event(event_type, signal, now, correlation_id="rr-0123456789ab-01234567")
    sent = orjson.loads(orjson.dumps(event))
    validate_event(sent, now + timedelta(seconds=1))  # raises InvalidEvents when refused
    assert len(orjson.dumps(sent["event_data"])) <= MAX_EVENT_DATA_BYTES
    data: dict[str, Any] = sent["event_data"]
    return data


def body_of(payload: dict[str, Any]) -> bytes:
    body = orjson.dumps(payload)
    assert counted_size(body) <= BODY_LIMIT
    return body


def firing() -> dict[str, Any]:
    return alert(starts_at=rfc3339(utcnow()))


def test_an_ordinary_webhook_is_inlined_as_sent() -> None:
    payload = webhook(firing())
    data = stored_form(signals_of(body_of(payload))[0])
    assert data["original_payload"] == payload


def test_labels_and_annotations_filling_the_body_fit() -> None:
    """The body at the Gateway's limit, a quarter of it one label (twice: commonLabels too),
    half one annotation: what an outside check found answered 201, then every audit event
    of the RR refused by DataStorage."""
    one = firing()
    one["labels"]["l"] = ""
    one["annotations"]["a"] = ""
    room = BODY_LIMIT - counted_size(orjson.dumps(webhook(one)))
    label, annotation = room // 4, room - 2 * (room // 4)
    one["labels"]["l"] = "x" * label
    one["annotations"]["a"] = "y" * annotation
    body = body_of(webhook(one))
    assert counted_size(body) == BODY_LIMIT
    data = stored_form(signals_of(body)[0])
    assert data["original_payload"] == {
        "truncated": True,
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }


def test_an_annotation_filling_the_body_is_shortened_not_refused() -> None:
    one = firing()
    one["annotations"]["a"] = ""
    room = BODY_LIMIT - counted_size(orjson.dumps(webhook(one)))
    one["annotations"]["a"] = "y" * room
    data = stored_form(signals_of(body_of(webhook(one)))[0])
    kept = data["signal_annotations"]["a"]
    assert kept.startswith("y" * ev.KEPT_VALUE_BYTES) and f"[{room} bytes, sha256 " in kept
    assert len(kept) < 2 * ev.KEPT_VALUE_BYTES
    assert data["signal_annotations"]["summary"] == one["annotations"]["summary"]  # short: whole
    assert data["signal_labels"]["pod"] == "api-1"


def test_a_body_nested_deeper_than_datastorage_keeps_is_digested() -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(12):
        inner["x"] = {}
        inner = inner["x"]
    body = body_of({**webhook(firing()), "extra": deep})
    data = stored_form(signals_of(body)[0])
    assert data["original_payload"]["sha256"] == hashlib.sha256(body).hexdigest()


def text(size: int) -> st.SearchStrategy[str]:
    """Strings `read_body` lets through (it refuses control characters)."""
    return st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=size)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text(40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(text(8), children, max_size=4)
    ),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    extra=json_values,
    nesting=st.integers(min_value=0, max_value=30),
    annotation_bytes=st.integers(min_value=0, max_value=200_000),
    labels=st.integers(min_value=0, max_value=400),
)
def test_any_body_the_gateway_takes_gives_events_datastorage_stores(
    extra: Any, nesting: int, annotation_bytes: int, labels: int
) -> None:
    for _ in range(nesting):
        extra = {"n": extra}
    one = firing()
    one["annotations"]["big"] = "é" * (annotation_bytes // 2)
    one["labels"].update({f"label_{i}": "v" * 60 for i in range(labels)})
    payload = {**webhook(one), "extra": extra}
    body = orjson.dumps(payload)
    if counted_size(body) > BODY_LIMIT:
        return  # refused with 413 before any event exists
    for signal in signals_of(body):
        for event_type in (ev.SIGNAL_RECEIVED, ev.CRD_CREATED, ev.SIGNAL_DEDUPLICATED):
            stored_form(signal, event_type)
