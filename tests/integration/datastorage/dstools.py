"""Helpers of the DataStorage tests: tokens, event bodies, a server subprocess."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.support.services import ServiceProcess, service_process

WRITER_TOKEN = "ds-writer-token"
READER_TOKEN = "ds-reader-token"
ADMIN_TOKEN = "ds-admin-token"
DS_TOKENS = {
    ADMIN_TOKEN: "audit:write,audit:write:gateway,audit:read",
    WRITER_TOKEN: "audit:write,audit:write:gateway",
    READER_TOKEN: "audit:read",
}


def event_body(
    correlation_id: str = "rr-1", *, when: datetime | None = None, **overrides: Any
) -> dict[str, Any]:
    """A valid request event; `overrides` replace or add fields (None removes one)."""
    body: dict[str, Any] = {
        "version": "1.0",
        "event_type": "gateway.signal.received",
        "event_timestamp": (when or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "event_category": "gateway",
        "event_action": "received",
        "event_outcome": "success",
        "correlation_id": correlation_id,
        "event_data": {"signal_name": "HighCPU", "namespace": "prod", "n": 1},
        "event_id": str(uuid.uuid4()),
    }
    for key, value in overrides.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def minutes_ago(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


def datastorage_process(
    data_dir: Path,
    env: Mapping[str, str] | None = None,
    tokens: Mapping[str, str] | None = None,
) -> ServiceProcess:
    """`signalgate-datastorage serve` on free loopback ports with the test tokens."""
    return service_process("signalgate.datastorage.cli", data_dir, tokens or DS_TOKENS, env)


def gateway_events_stored(datastorage: ServiceProcess, **params: str) -> int:
    """How many Gateway audit events a running DataStorage holds (matching `params`)."""
    answer = httpx.get(
        f"{datastorage.api_url}/api/v1/audit/events",
        params={"event_category": "gateway", "limit": "1", **params},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    return int(answer.json()["pagination"]["total"])
