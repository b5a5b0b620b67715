"""kill -9 of the Gateway under load loses no acknowledged signal's audit events.

Real processes on real sockets: a DataStorage, and a Gateway on SQLite or PostgreSQL taking
32 concurrent clients. The Gateway is SIGKILLed mid-load (with DataStorage up, and with
DataStorage down at the time of the kill), restarted on the same data directory, and then
every signal it acknowledged must have its audit events in DataStorage exactly once, with
every chain valid.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.datastorage.dstools import ADMIN_TOKEN as DS_TOKEN
from tests.integration.datastorage.dstools import WRITER_TOKEN, datastorage_process
from tests.support.services import ADMIN_TOKEN, ServiceProcess, alert, gateway_process, webhook

pytestmark = pytest.mark.slow
CLIENTS = 32
PODS = 60
KILL_AFTER = 400  # acknowledged signals before the kill


async def load_until_killed(gateway: ServiceProcess) -> list[dict[str, Any]]:
    """32 clients post signals; after KILL_AFTER acknowledgements the Gateway is SIGKILLed.
    Returns the acknowledged answers (2xx bodies)."""
    acknowledged: list[dict[str, Any]] = []
    killed = asyncio.Event()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    limits = httpx.Limits(max_connections=CLIENTS)
    url = gateway.api_url + "/api/v1/signals/prometheus"
    assert gateway.proc is not None
    pid = gateway.proc.pid

    async def client(http: httpx.AsyncClient, seed: int) -> None:
        pick = random.Random(seed)
        while not killed.is_set():
            body = webhook(alert(pod=f"crash-{pick.randrange(PODS)}"))
            try:
                answer = await http.post(url, json=body)
            except httpx.HTTPError:
                continue  # in flight at the kill, or refused after it: not acknowledged
            if answer.status_code in (201, 202):
                acknowledged.append(answer.json())
                if len(acknowledged) >= KILL_AFTER and not killed.is_set():
                    os.kill(pid, signal.SIGKILL)
                    killed.set()

    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as http:
        await asyncio.gather(*(client(http, seed) for seed in range(CLIENTS)))
    return acknowledged


def audit_counts(datastorage: ServiceProcess) -> dict[str, Counter[str]]:
    """event_type → Counter of correlation ids, over every gateway event DataStorage holds."""
    counts: dict[str, Counter[str]] = {}
    seen: set[str] = set()
    offset = 0
    with httpx.Client(headers={"Authorization": f"Bearer {DS_TOKEN}"}, timeout=30) as http:
        while True:
            page = http.get(
                f"{datastorage.api_url}/api/v1/audit/events",
                params={"event_category": "gateway", "limit": "1000", "offset": str(offset)},
            ).json()
            for event in page["data"]:
                assert event["event_id"] not in seen, f"event {event['event_id']} stored twice"
                seen.add(event["event_id"])
                counts.setdefault(event["event_type"], Counter())[event["correlation_id"]] += 1
            if not page["pagination"]["has_more"]:
                return counts
            offset += 1000


def rr_occurrences(gateway: ServiceProcess) -> dict[str, int]:
    with gateway.client() as c:
        items = c.get("/api/v1/remediation-requests", params={"limit": "500"}).json()["items"]
    return {
        rr["metadata"]["name"]: rr["status"]["deduplication"]["occurrenceCount"] for rr in items
    }


def wait_delivered(gateway: ServiceProcess, timeout: float = 90) -> None:
    """Until the restarted Gateway's journal is empty (everything confirmed by DataStorage)."""
    deadline = time.monotonic() + timeout
    audit: dict[str, Any] = {}
    while time.monotonic() < deadline:
        audit = httpx.get(f"{gateway.ops_url}/readyz", timeout=5).json()["checks"]["audit"]
        # an empty journal is a delivered one (it drops only what DataStorage confirmed); the
        # relay may never have needed to call DataStorage after the restart (reachable None)
        empty = audit["spooled"] == 0 and audit["buffered"] == 0 and audit["journalBytes"] == 0
        if empty and audit["reachable"] is not False:
            return
        time.sleep(0.3)
    raise AssertionError(f"audit journal not delivered after {timeout}s: {audit}")


@pytest.mark.parametrize("datastorage_down", [False, True], ids=["ds-up", "ds-down"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_under_load_loses_no_acknowledged_audit_event(
    tmp_path: Path, backend: str, datastorage_down: bool, request: pytest.FixtureRequest
) -> None:
    datastorage = datastorage_process(tmp_path / "ds").start()
    token_file = tmp_path / "ds.token"
    token_file.write_text(WRITER_TOKEN)
    env = {
        "SIGNALGATE_DATASTORAGE__URL": datastorage.api_url,
        "SIGNALGATE_DATASTORAGE__TOKENFILE": str(token_file),
        "SIGNALGATE_DATASTORAGE__FLUSHINTERVAL": "100ms",
        "SIGNALGATE_DATASTORAGE__TIMEOUT": "2s",
        "SIGNALGATE_DATASTORAGE__BACKOFFMAX": "1s",
    }
    if backend == "postgres":
        env["SIGNALGATE_STORE__DSN"] = request.getfixturevalue("postgres_dsn")
    gateway = gateway_process(tmp_path / "gw", env=env).start()
    try:
        if datastorage_down:
            datastorage.stop()
        acknowledged = asyncio.run(load_until_killed(gateway))
        assert gateway.proc is not None and gateway.proc.wait(10) == -signal.SIGKILL
        if datastorage_down:
            datastorage.start()
        gateway.start()
        wait_delivered(gateway)

        counts = audit_counts(datastorage)
        occurrences = rr_occurrences(gateway)
        created = [a["remediationRequestName"] for a in acknowledged if a["status"] == "created"]
        duplicates = Counter(
            a["remediationRequestName"] for a in acknowledged if a["status"] == "duplicate"
        )
        assert len(acknowledged) >= KILL_AFTER and created and duplicates
        for name in created:  # each acknowledged creation: its two events, once each
            assert counts["gateway.signal.received"][name] == 1, name
            assert counts["gateway.crd.created"][name] == 1, name
        deduplicated = counts.get("gateway.signal.deduplicated", Counter())
        for name, acked in duplicates.items():
            # every acknowledged duplicate is there; beyond them at most the ones the store
            # counted but the kill left unacknowledged
            assert acked <= deduplicated[name] <= occurrences[name] - 1, name
        for event_type in ("gateway.signal.received", "gateway.crd.created"):
            assert all(n == 1 for n in counts[event_type].values()), event_type

        with httpx.Client(headers={"Authorization": f"Bearer {DS_TOKEN}"}, timeout=30) as http:
            for name in sorted(set(created) | set(duplicates)):
                chain = http.get(
                    f"{datastorage.api_url}/api/v1/audit/verify-chain",
                    params={"correlation_id": name},
                ).json()
                assert chain["valid"] is True, (name, chain)
    finally:
        gateway.stop()
        datastorage.stop()
