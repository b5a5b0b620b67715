"""The running end-to-end stack as the tests see it: URLs from e2ecov, tokens, small helpers.

Everything here talks to real processes over HTTP. The addresses come from the environment
e2ecov gives the test command (`E2E_<SERVICE>_URL`, `E2E_<SERVICE>_<PORT>_URL`,
`E2ECOV_ARTIFACTS`); the tokens are the committed TEST-ONLY ones in `e2e/tokens/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

REPO = Path(__file__).resolve().parents[2]
TOKENS = REPO / "e2e" / "tokens"
REQUIRED = (
    "E2E_GATEWAY_URL",
    "E2E_GATEWAY_OPS_URL",
    "E2E_GATEWAY_SQLITE_URL",
    "E2E_DATASTORAGE_URL",
)
NOT_UNDER_E2ECOV = (
    "tests/e2e drive the running stack that e2ecov starts from e2e/stack.toml; run them with "
    "`make e2e-coverage` (or `e2ecov run -c e2e/stack.toml` with the environment the README's "
    '"End-to-end coverage" gives it), not with plain pytest — '
    "missing environment: {missing}"
)

T = TypeVar("T")


def token(name: str) -> str:
    """A TEST-ONLY token from e2e/tokens/<name>.token."""
    return (TOKENS / f"{name}.token").read_text().strip()


@dataclass(frozen=True)
class Stack:
    gateway: str
    gateway_ops: str
    gateway_sqlite: str  # the same Gateway on its embedded default store
    datastorage: str
    datastorage_ops: str
    alertmanager: str
    artifacts: Path

    @classmethod
    def from_environ(cls) -> Stack:
        missing = [name for name in REQUIRED if not os.environ.get(name)]
        if missing:
            raise RuntimeError(NOT_UNDER_E2ECOV.format(missing=", ".join(missing)))
        env = os.environ
        return cls(
            gateway=env["E2E_GATEWAY_URL"],
            gateway_ops=env["E2E_GATEWAY_OPS_URL"],
            gateway_sqlite=env["E2E_GATEWAY_SQLITE_URL"],
            datastorage=env["E2E_DATASTORAGE_URL"],
            datastorage_ops=env.get("E2E_DATASTORAGE_OPS_URL", ""),
            alertmanager=env.get("E2E_ALERTMANAGER_URL", ""),
            artifacts=Path(env.get("E2ECOV_ARTIFACTS", REPO / "build" / "e2e")),
        )

    def run_record(self) -> dict[str, Any]:
        """e2ecov's run.json as written when the stack came up (pids, ports, start times)."""
        data: dict[str, Any] = json.loads((self.artifacts / "run.json").read_text())
        return data


def unique(prefix: str = "e2e") -> str:
    """A DNS-1123 name no other test (or run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def fingerprint(namespace: str, kind: str, name: str) -> str:
    """The contract's fingerprint (docs/gateway.md, "The fingerprint"), computed independently."""
    return hashlib.sha256(f"{namespace}:{kind}:{name}".encode()).hexdigest()


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def signal_resolved(status: dict[str, Any]) -> str | None:
    """The status ("True"/"False") of an RR status's SignalResolved condition, if any."""
    for condition in status.get("conditions") or ():
        if condition.get("type") == "SignalResolved":
            return str(condition["status"])
    return None


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        sample, _, label_text = head.partition("{")
        if sample != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


class Audit:
    """DataStorage's query API with the TEST-ONLY audit:read token."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def events(self, correlation_id: str, **filters: str) -> list[dict[str, Any]]:
        answer = self.client.get(
            "/api/v1/audit/events",
            params={"correlation_id": correlation_id, "limit": "1000", **filters},
        )
        assert answer.status_code == 200, answer.text
        data: list[dict[str, Any]] = answer.json()["data"]
        return data

    def wait_types(
        self, correlation_id: str, expected: list[str], timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """Wait until the events of `correlation_id` include every type in `expected`
        (with multiplicity); returns them oldest first."""

        def probe() -> list[dict[str, Any]] | None:
            events = list(reversed(self.events(correlation_id)))
            types = [e["event_type"] for e in events]
            if all(types.count(t) >= expected.count(t) for t in expected):
                return events
            return None

        return wait_for(probe, timeout, f"audit events {expected} for {correlation_id}")

    def verify_chain(self, correlation_id: str) -> dict[str, Any]:
        answer = self.client.get(
            "/api/v1/audit/verify-chain", params={"correlation_id": correlation_id}
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body
