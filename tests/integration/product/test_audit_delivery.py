"""The Gateway's audit trail survives a DataStorage outage: nothing lost, nothing twice.

Real processes: a DataStorage on SQLite and a Gateway whose in-memory audit buffer is far
smaller than what arrives while DataStorage is down, so the spool file is exercised too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from signalgate.gateway.adapters.parsing import MAX_SIGNAL_BYTES, counted_size
from tests.integration.datastorage.dstools import ADMIN_TOKEN as DS_TOKEN
from tests.integration.datastorage.dstools import datastorage_process, gateway_events_stored
from tests.support.services import ADMIN_TOKEN, ServiceProcess, alert, gateway_process, webhook

pytestmark = pytest.mark.slow
PODS, PER_POD = 20, 100


def gateway_delivering_to(
    datastorage: ServiceProcess, tmp_path: Path, token: str = DS_TOKEN, **env: str
) -> ServiceProcess:
    """A started Gateway delivering its audit events to `datastorage` with `token` (kept in
    a token file, as deployed), a flush every 100 ms unless `env` says otherwise."""
    token_file = tmp_path / "ds.token"
    token_file.write_text(f"  {token}\n")
    settings = {
        "SIGNALGATE_DATASTORAGE__URL": datastorage.api_url,
        "SIGNALGATE_DATASTORAGE__TOKENFILE": str(token_file),
        "SIGNALGATE_DATASTORAGE__FLUSHINTERVAL": "100ms",
    }
    return gateway_process(tmp_path / "gw", env={**settings, **env}).start()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    datastorage = datastorage_process(tmp_path / "ds").start()
    gateway = gateway_delivering_to(
        datastorage,
        tmp_path,
        SIGNALGATE_DATASTORAGE__BUFFERSIZE="100",
        SIGNALGATE_DATASTORAGE__BATCHSIZE="50",
        SIGNALGATE_DATASTORAGE__FLUSHINTERVAL="200ms",
        SIGNALGATE_DATASTORAGE__TIMEOUT="2s",
        SIGNALGATE_SERVER__MAXCONCURRENTREQUESTS="1000",
    )
    yield gateway, datastorage
    gateway.stop()
    datastorage.stop()


def wait_for_total(datastorage: ServiceProcess, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    total = -1
    while time.monotonic() < deadline:
        total = gateway_events_stored(datastorage)
        if total >= expected:
            return total
        time.sleep(0.5)
    return total


async def send_all(gateway: ServiceProcess) -> list[int]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
        statuses: list[int] = []
        for _ in range(PER_POD):
            batch = [
                client.post(
                    gateway.api_url + "/api/v1/signals/prometheus",
                    json=webhook(alert(pod=f"audit-{i}")),
                )
                for i in range(PODS)
            ]
            statuses += [r.status_code for r in await asyncio.gather(*batch)]
        return statuses


def test_every_audit_event_arrives_exactly_once_after_an_outage(
    stack: tuple[ServiceProcess, ServiceProcess],
) -> None:
    gateway, datastorage = stack
    with gateway.client() as c:
        assert (
            c.post("/api/v1/signals/prometheus", json=webhook(alert(pod="before"))).status_code
            == 201
        )
    assert wait_for_total(datastorage, 2, 15) == 2

    datastorage.stop()
    statuses = asyncio.run(send_all(gateway))
    assert statuses.count(201) == PODS
    assert statuses.count(202) == PODS * (PER_POD - 1)
    ready = httpx.get(f"{gateway.ops_url}/readyz").json()
    assert ready["status"] == "ready"  # DataStorage down does not make the Gateway unready
    audit = ready["checks"]["audit"]  # ...but the body says where the audit trail waits
    assert audit["reachable"] is False and audit["buffered"] <= 100 and audit["spooled"] > 0

    datastorage.start()
    expected = 2 + PODS * 2 + PODS * (PER_POD - 1)
    assert wait_for_total(datastorage, expected, 90) == expected
    time.sleep(1.5)  # a late duplicate delivery would show up as a higher total
    assert gateway_events_stored(datastorage) == expected
    assert gateway_events_stored(datastorage, event_type="gateway.signal.deduplicated") == PODS * (
        PER_POD - 1
    )

    with gateway.client() as c:
        rrs = c.get("/api/v1/remediation-requests", params={"limit": "500"}).json()["items"]
    headers = {"Authorization": f"Bearer {DS_TOKEN}"}
    for rr in rrs[:3]:
        name = rr["metadata"]["name"]
        chain = httpx.get(
            f"{datastorage.api_url}/api/v1/audit/verify-chain",
            params={"correlation_id": name},
            headers=headers,
        ).json()
        assert chain["valid"] is True
        assert chain["events"] == rr["status"]["deduplication"]["occurrenceCount"] + 1


def backlog_stack(tmp_path: Path, mode: str) -> tuple[ServiceProcess, ServiceProcess]:
    datastorage = datastorage_process(tmp_path / "ds").start()
    gateway = gateway_delivering_to(
        datastorage,
        tmp_path,
        SIGNALGATE_DATASTORAGE__SPOOLMAXBYTES="16KiB",
        SIGNALGATE_DATASTORAGE__BACKOFFMAX="500ms",
        SIGNALGATE_AUDIT__ONBACKLOGFULL=mode,
    )
    return gateway, datastorage


def test_a_full_journal_refuses_signals_with_503_until_datastorage_catches_up(
    tmp_path: Path,
) -> None:
    gateway, datastorage = backlog_stack(tmp_path, "reject")
    try:
        datastorage.stop()
        statuses: list[int] = []
        with gateway.client() as c:
            for i in range(60):
                answer = c.post("/api/v1/signals/prometheus", json=webhook(alert(pod=f"b-{i}")))
                statuses.append(answer.status_code)
                if answer.status_code == 503:
                    break
            assert answer.status_code == 503, statuses
            assert answer.headers["retry-after"] == "30"
            assert "datastorage.spoolMaxBytes" in answer.json()["detail"]
            acknowledged = statuses.count(201)
            assert acknowledged == len(statuses) - 1
        ready = httpx.get(f"{gateway.ops_url}/readyz")
        assert ready.status_code == 503
        assert "audit.onBacklogFull" in ready.json()["detail"]

        datastorage.start()
        assert wait_for_total(datastorage, 2 * acknowledged, 30) == 2 * acknowledged
        deadline = time.monotonic() + 15
        while httpx.get(f"{gateway.ops_url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the Gateway did not become ready again"
            time.sleep(0.2)
        with gateway.client() as c:
            again = c.post("/api/v1/signals/prometheus", json=webhook(alert(pod="after")))
            assert again.status_code == 201
    finally:
        gateway.stop()
        datastorage.stop()


def test_drop_mode_answers_and_counts_what_it_drops(tmp_path: Path) -> None:
    gateway, datastorage = backlog_stack(tmp_path, "drop")
    try:
        datastorage.stop()
        with gateway.client() as c:
            for i in range(60):
                answer = c.post("/api/v1/signals/prometheus", json=webhook(alert(pod=f"d-{i}")))
                assert answer.status_code == 201
        assert httpx.get(f"{gateway.ops_url}/readyz").status_code == 200
        metrics = httpx.get(f"{gateway.ops_url}/metrics").text
        line = next(
            x
            for x in metrics.splitlines()
            if x.startswith("audit_events_dropped_total") and 'reason="backlog_full"' in x
        )
        assert float(line.rsplit(" ", 1)[1]) > 0
    finally:
        gateway.stop()
        datastorage.stop()


def test_extension_events_reach_a_datastorage_that_lists_them(
    stack: tuple[ServiceProcess, ServiceProcess],
) -> None:
    gateway, datastorage = stack
    with gateway.client() as c:
        assert (
            c.post("/api/v1/signals/prometheus", json=webhook(alert(pod="ext-1"))).status_code
            == 201
        )
        resolved = webhook(alert(pod="ext-1", status="resolved"), status="resolved")
        assert c.post("/api/v1/signals/prometheus", json=resolved).status_code == 202
    deadline = time.monotonic() + 15
    while gateway_events_stored(datastorage, event_type="gateway.signal.resolved") < 1:
        assert time.monotonic() < deadline, "the resolved event did not arrive"
        time.sleep(0.3)


def test_signals_at_the_gateways_limits_keep_their_audit_trail(
    stack: tuple[ServiceProcess, ServiceProcess],
) -> None:
    """Bodies at the Gateway's size limit (an annotation filling it) and nested deeper than
    DataStorage keeps: each is answered 201 and every one of its events is stored, none
    dropped (an outside check found both answered 201 and their events refused)."""
    gateway, datastorage = stack
    filled = alert(pod="limit-1")
    filled["annotations"] = {"a": ""}
    room = MAX_SIGNAL_BYTES - counted_size(httpx.Request("POST", "/", json=webhook(filled)).content)
    filled["annotations"] = {"a": "y" * room}
    deep: dict[str, object] = {}
    inner = deep
    for _ in range(12):
        inner["x"] = {}
        inner = inner["x"]  # type: ignore[assignment]
    bodies = [webhook(filled), {**webhook(alert(pod="limit-2")), "extra": deep}]
    with gateway.client() as c:
        for body in bodies:
            answer = c.post("/api/v1/signals/prometheus", json=body)
            assert answer.status_code == 201, answer.text
    assert wait_for_total(datastorage, 4, timeout=30) == 4  # received + crd.created, twice
    metrics = httpx.get(f"{gateway.ops_url}/metrics").text
    assert "audit_events_dropped_total{" not in metrics or all(
        line.endswith(" 0.0")
        for line in metrics.splitlines()
        if line.startswith("audit_events_dropped_total{")
    ), metrics


def test_a_token_without_the_gateway_scope_is_named_where_the_operator_looks(
    tmp_path: Path,
) -> None:
    """A token holding only `audit:write` (what older versions' docs gave the Gateway) may
    not write the reserved `gateway` category: DataStorage's 403 names the scope to add, and
    the Gateway's /readyz and log carry that whole (they were cut before the scope)."""
    old_token = "ds-plain-writer"
    datastorage = datastorage_process(
        tmp_path / "ds", tokens={old_token: "audit:write", DS_TOKEN: "audit:read"}
    ).start()
    gateway = gateway_delivering_to(datastorage, tmp_path, old_token)
    try:
        with gateway.client() as c:
            answer = c.post("/api/v1/signals/prometheus", json=webhook(alert(pod="scoped")))
            assert answer.status_code == 201, answer.text
        deadline = time.monotonic() + 20
        while True:
            audit = httpx.get(f"{gateway.ops_url}/readyz", timeout=10).json()["checks"]["audit"]
            if audit.get("last_error"):
                break
            assert time.monotonic() < deadline, audit
            time.sleep(0.1)
        assert "403" in audit["last_error"], audit
        assert "'audit:write:gateway'" in audit["last_error"], audit
        assert "'audit:write:gateway'" in gateway.output()
        assert gateway_events_stored(datastorage) == 0  # refused, kept in the journal
    finally:
        gateway.stop()
        datastorage.stop()
