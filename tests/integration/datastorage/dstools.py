"""Helpers of the DataStorage tests: tokens, event bodies, a server subprocess."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from e2ecov.recipes import free_port
from tests.support.services import ServiceProcess, write_tokens_file

WRITER_TOKEN = "ds-writer-token"
READER_TOKEN = "ds-reader-token"
ADMIN_TOKEN = "ds-admin-token"
DS_TOKENS = {
    ADMIN_TOKEN: "audit:write,audit:read",
    WRITER_TOKEN: "audit:write",
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
    data_dir.mkdir(parents=True, exist_ok=True)
    api_port, ops_port = free_port(), free_port()
    tokens_file = write_tokens_file(data_dir / "test-tokens", tokens or DS_TOKENS)
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE_")},
        "SIGNALGATE_SERVER__LISTEN": f"127.0.0.1:{api_port}",
        "SIGNALGATE_SERVER__OPSLISTEN": f"127.0.0.1:{ops_port}",
        "SIGNALGATE_DATADIR": str(data_dir),
        "SIGNALGATE_AUTH__TOKENSFILE": str(tokens_file),
        **(env or {}),
    }
    return ServiceProcess(
        command=[sys.executable, "-m", "signalgate.datastorage.cli", "serve"],
        env=full_env,
        api_url=f"http://127.0.0.1:{api_port}",
        ops_url=f"http://127.0.0.1:{ops_port}",
        log_path=data_dir / "datastorage.log",
    )
