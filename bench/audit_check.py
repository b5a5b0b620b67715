"""The ingest benchmark's check of the audit trail: what DataStorage holds after a case.

A row with the journal on is only a result if the events it promised are really stored: a
2xx from the Gateway means the signal's audit events are durable, and the relay must get
every one of them to DataStorage, once. So after each workload of a journal case the
benchmark waits until the Gateway's journal is empty (its `/readyz` shows nothing spooled or
buffered), counts the Gateway's events DataStorage holds by type, and holds the increase to
the RRs counted server-side:

- one hot alert: `signal.received` + `signal.deduplicated` = the hot RR's occurrence count
  (the first signal opened it, every other one was a duplicate), `crd.created` = 1;
- a new resource per signal: `signal.received` = `crd.created` = the new RRs, no duplicates.

Then it asks DataStorage to verify the hash chains of the hot RR and of a sample of the new
RRs (`GET /api/v1/audit/verify-chain`): each must be valid and hold one event per occurrence
of its RR plus its `crd.created`. With the DataStorage stand-in (`--audit standin`,
bench/ds_standin.py) the same counts are checked against what the stand-in took; it keeps
no chains.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.ds_standin import COUNTS_PATH
from signalgate.gateway.audit_events import CRD_CREATED, SIGNAL_DEDUPLICATED, SIGNAL_RECEIVED
from tests.integration.datastorage.dstools import ADMIN_TOKEN as DS_ADMIN_TOKEN
from tests.integration.datastorage.dstools import gateway_events_stored
from tests.support.services import ServiceProcess

EVENT_TYPES = (SIGNAL_RECEIVED, CRD_CREATED, SIGNAL_DEDUPLICATED)
CHAINS_SAMPLED = 20  # new RRs whose chain is verified per workload
DELIVERY_TIMEOUT = 180.0  # seconds for a journal's backlog to reach DataStorage


@dataclass
class Counted:
    """What the RR store holds after a workload: the figure checked against wrk's answers
    (the hot RR's occurrences, or the number of new RRs), and the RRs whose audit chain is
    checked, each with its occurrence count."""

    total: int
    chains: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditSink:
    """Where a journal case's events went: what it holds by type, and the problems with
    the given RRs' chains (None: it keeps no chains)."""

    name: str
    events: Callable[[], dict[str, int]]
    broken_chains: Callable[[dict[str, int]], list[str]] | None


def datastorage_sink(datastorage: ServiceProcess) -> AuditSink:
    return AuditSink(
        "DataStorage",
        lambda: stored_events(datastorage),
        lambda chains: verify_chains(datastorage, chains),
    )


def standin_sink(url: str) -> AuditSink:
    def taken() -> dict[str, int]:
        counts = httpx.get(url + COUNTS_PATH, timeout=10).json()
        return {t: int(counts.get(t, 0)) for t in EVENT_TYPES}

    return AuditSink("the stand-in", taken, None)


def stored_events(datastorage: ServiceProcess) -> dict[str, int]:
    """The Gateway's events DataStorage holds, by type."""
    return {t: gateway_events_stored(datastorage, event_type=t) for t in EVENT_TYPES}


def wait_delivered(gateway: ServiceProcess, timeout: float = DELIVERY_TIMEOUT) -> int:
    """Wait until the Gateway's journal holds nothing undelivered (every worker's, as its
    `/readyz` lists them); returns what is still there when `timeout` is up (0: delivered)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(f"{gateway.ops_url}/readyz", timeout=10)
        left = _undelivered(answer.json())
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _undelivered(document: Any) -> int:
    """The sum of every `spooled` and `buffered` figure anywhere in a `/readyz` document."""
    if isinstance(document, dict):
        own = sum(int(document.get(key) or 0) for key in ("spooled", "buffered"))
        return own + sum(_undelivered(value) for value in document.values())
    if isinstance(document, list):
        return sum(_undelivered(value) for value in document)
    return 0


def audit_verdict(
    what: str,
    workload: str,
    sink: AuditSink,
    before: dict[str, int],
    counted: Counted,
    undelivered: int,
) -> str:
    """The check's line for the benchmark's output, ending in `ok` or `MISMATCH`."""
    after = sink.events()
    added = {event_type: after[event_type] - before[event_type] for event_type in EVENT_TYPES}
    if workload == "duplicate":
        signals = added[SIGNAL_RECEIVED] + added[SIGNAL_DEDUPLICATED]
        expected = {"signals": counted.total, "created": len(counted.chains)}
        found = {"signals": signals, "created": added[CRD_CREATED]}
        shown = (
            f"{added[SIGNAL_RECEIVED]} received + {added[SIGNAL_DEDUPLICATED]} deduplicated for"
            f" {counted.total} occurrences, {added[CRD_CREATED]} crd.created"
        )
    else:
        expected = {"received": counted.total, "created": counted.total, "duplicates": 0}
        found = {
            "received": added[SIGNAL_RECEIVED],
            "created": added[CRD_CREATED],
            "duplicates": added[SIGNAL_DEDUPLICATED],
        }
        shown = (
            f"{added[SIGNAL_RECEIVED]} received, {added[CRD_CREATED]} crd.created,"
            f" {added[SIGNAL_DEDUPLICATED]} deduplicated for {counted.total} new RRs"
        )
    broken = [] if sink.broken_chains is None else sink.broken_chains(counted.chains)
    chains = (
        "no chains kept"
        if sink.broken_chains is None
        else f"chains verified: {len(counted.chains)}"
    )
    ok = found == expected and not broken and undelivered == 0
    notes = "".join(f"; {problem}" for problem in broken)
    if undelivered:
        notes += f"; {undelivered} events still in the journal after {DELIVERY_TIMEOUT:g}s"
    return (
        f"{what} {workload}: audit events in {sink.name}: {shown};"
        f" {chains}{notes}: {'ok' if ok else 'MISMATCH'}"
    )


def verify_chains(datastorage: ServiceProcess, chains: dict[str, int]) -> list[str]:
    """DataStorage's verification of each RR's chain, held to its expected length (a
    received or deduplicated event per occurrence, and the crd.created); the problems found
    (none: every chain is whole)."""
    problems = []
    with datastorage.client(DS_ADMIN_TOKEN) as client:
        for name, occurrences in chains.items():
            events = occurrences + 1
            answer = client.get(
                "/api/v1/audit/verify-chain", params={"correlation_id": name}, timeout=300
            )
            answer.raise_for_status()
            report = answer.json()
            if not report["valid"] or report["events"] != events:
                problems.append(
                    f"chain {name}: {report['events']} events (expected {events}),"
                    f" valid={report['valid']} {report.get('detail') or ''}".rstrip()
                )
    return problems
