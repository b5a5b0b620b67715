"""Helpers of the DataStorage tests: tokens, a server subprocess (event bodies:
`tests.support.event_bodies`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

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
