"""Small parsing rules every adapter shares: JSON objects, maps of strings (labels,
annotations), timestamps and freshness. A new adapter takes its rules from here, not from
another adapter's private helpers, so a 400 reads the same whichever route refused it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from signalgate.common.text import json_error
from signalgate.kube.sizes import stored_json_size


class PayloadError(ValueError):
    """The whole request is invalid (400); the message names the field."""


# What one signal may hold: its own payload (one alert as a webhook of its own, or one
# Event) is kept whole in its RR, and in Kubernetes mode an RR is an etcd object (at most
# 1.5 MiB with the rest of it). A webhook may carry many alerts (`server.maxBodySize`).
# Counted as the API server stores it (`stored_json_size`: `<`, `>` and `&` take 6 bytes
# each), in every mode, so that a signal under the bound is one every store can hold: 200,000
# `<` passed a count of the bytes sent, and its RR was 2.4 MB, refused by etcd on every retry.
# A backslash (which starts every escape already in the text: `\"`, `\\`, `\n`) counts one
# byte more: an RR keeps the text in JSON strings of JSON too (its provider data and original
# payload), where each escape is escaped again, so a label key of 130,800 `"` counted 2
# bytes each was stored at 12 each, a 1.3 MB RR that fit etcd only because the API server
# retried it without its managed fields (an outside check). So counted, every signal under
# the bound is an RR within about four times it.
MAX_SIGNAL_BYTES = 256 * 1024


def counted_size(payload: bytes) -> int:
    """What a signal's own payload counts against `MAX_SIGNAL_BYTES`."""
    return stored_json_size(payload) + payload.count(b"\\")


def check_signal_size(payload: bytes, where: str) -> None:
    stored = counted_size(payload)
    if stored <= MAX_SIGNAL_BYTES:
        return
    if stored == len(payload):
        raise PayloadError(
            f"{where}: {len(payload):,} bytes as a signal of its own, over the "
            f"{MAX_SIGNAL_BYTES:,} one signal may hold"
        )
    raise PayloadError(
        f"{where}: {len(payload):,} bytes as a signal of its own, {stored:,} as the Kubernetes "
        "API server stores it ('<', '>' and '&' take 6 bytes each there, an escape one "
        "more, as it is escaped again in the RR's copies of the payload), over the "
        f"{MAX_SIGNAL_BYTES:,} one signal may hold"
    )


@dataclass(frozen=True)
class Freshness:
    """Accepted window for signal timestamps around the receive time."""

    tolerance: timedelta = timedelta(minutes=5)
    future_skew: timedelta = timedelta(minutes=2)


def parse_object(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {json_error(body, exc)}") from exc
    if not isinstance(payload, dict):
        raise PayloadError(f"body must be a JSON object, not {json_type(payload)}")
    return payload


def case_hint(obj: dict[str, Any], key: str) -> str:
    """For the 400 of a field `key` missing from `obj`: the key sent instead that differs
    from it in case only, if any ("; keys are case-sensitive: 'Reason' is not 'reason'").
    Kubernaut's Gateway (Go's encoding/json) reads `Reason` as `reason`; signalgate reads
    keys as sent (README, "Differences from Kubernaut"), and says so where it matters."""
    folded = key.casefold()
    near = next((k for k in obj if k != key and k.casefold() == folded), None)
    if near is None:
        return ""
    return f"; keys are case-sensitive: {near[:60]!r} is not {key!r}"


def string_map(value: object, where: str) -> dict[str, str]:
    """An object of strings (labels, annotations) at `where`; absent or null: empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{where}: must be an object of strings, not {json_type(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise PayloadError(f"{where}.{key}: must be a string, not {json_type(item)}")
    return value


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def parse_timestamp(value: object, field: str) -> datetime | None:
    """An RFC 3339 timestamp as aware UTC; None for null/absent; `PayloadError` otherwise."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{field}: must be an RFC 3339 timestamp string, not {json_type(value)}")
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError as exc:
        raise PayloadError(f"{field}: {value[:64]!r} is not an RFC 3339 timestamp") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:
        raise PayloadError(f"{field}: {value[:64]!r} is out of range") from exc


def check_not_future(when: datetime, now: datetime, freshness: Freshness, field: str) -> None:
    if when > now + freshness.future_skew:
        raise PayloadError(
            f"{field}: {when.isoformat()} is more than "
            f"{_seconds(freshness.future_skew)} in the future "
            "(the setting freshness.futureSkew; check the sender's clock)"
        )


def check_fresh(when: datetime, now: datetime, freshness: Freshness, field: str) -> None:
    check_not_future(when, now, freshness, field)
    if when < now - freshness.tolerance:
        raise PayloadError(
            f"{field}: {when.isoformat()} is older than {_seconds(freshness.tolerance)} "
            "(the setting freshness.tolerance; send the event when it happens or raise it)"
        )


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():g}s"
