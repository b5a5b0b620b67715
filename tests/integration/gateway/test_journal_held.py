"""Two Gateway processes and one audit journal directory.

Each wrote its groups at the offsets it knew of, over the other's, and deleted segments the
other still wrote to: an outside check, two Gateways on one `datastorage.spoolPath` (as a
restart does while its predecessor's workers still drain) then both killed, lost 62 of 536
acknowledged RRs' `crd.created` events. The journal's directory is now held (flock) by the
process that opened it; another one waits for it to let go before it serves.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from e2ecov.recipes import free_port
from tests.support.services import ServiceProcess, alert, gateway_process, webhook

PROM = "/api/v1/signals/prometheus"


def _gateway(data_dir: Path, journal: Path, away: str) -> ServiceProcess:
    return gateway_process(
        data_dir,
        env={
            "SIGNALGATE_DATASTORAGE__URL": away,  # nothing delivered: the journal keeps all
            "SIGNALGATE_DATASTORAGE__SPOOLPATH": str(journal),
        },
    )


def _created(service: ServiceProcess, pod: str) -> str:
    with service.client() as client:
        answer = client.post(PROM, json=webhook(alert("Held", pod=pod)))
    assert answer.status_code == 201, answer.text
    name: str = answer.json()["remediationRequestName"]
    return name


def test_a_second_gateway_waits_for_the_journal_until_the_first_lets_go(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    away = f"http://127.0.0.1:{free_port()}"
    first = _gateway(tmp_path / "a", journal, away).start()
    second = _gateway(tmp_path / "b", journal, away)
    try:
        names = [_created(first, "held-1")]
        second.start(wait=False)
        # held: it does not serve, however long it waits (it starts in a few seconds)
        deadline = time.monotonic() + 30.0
        waiting_since = None
        while waiting_since is None or time.monotonic() < waiting_since + 2.0:
            assert time.monotonic() < deadline, f"never waited for the journal: {second.output()}"
            assert second.proc is not None and second.proc.poll() is None, second.output()
            try:
                ready = httpx.get(f"{second.ops_url}/readyz", timeout=1.0).status_code
            except httpx.HTTPError:
                ready = None
            assert ready != 200, "a second Gateway serves on a journal another one holds"
            if waiting_since is None and "audit journal held by another process" in (
                second.output()
            ):
                waiting_since = time.monotonic()
            time.sleep(0.1)
        assert first.stop() == 0
        second.wait_ready(timeout=30)  # the first let go
        names.append(_created(second, "held-2"))
        assert second.stop() == 0
    finally:
        first.stop()
        second.stop()
    created = [
        event["correlation_id"]
        for segment in sorted(journal.glob("segment-*.jsonl"))
        for line in segment.read_bytes().splitlines()
        if (event := json.loads(line))["event_type"] == "gateway.crd.created"
    ]
    assert created == names
