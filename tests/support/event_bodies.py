"""Audit event bodies as a client sends them to DataStorage: one valid event, any field
replaced, added or removed. Shared by the unit and integration tests and the benches."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any


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
