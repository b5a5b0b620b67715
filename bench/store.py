"""Micro-benchmark of the RR stores: record_firing per second, duplicates and new RRs.

    python3 bench/store.py [--seconds 3] [--concurrency 32] [--payload-bytes 2000]

Runs each backend in-process (SQLite in a temporary directory; PostgreSQL on a throwaway
server from the system binaries, started by e2ecov's recipe with fsync off — so the figures
show the store's own cost, not the disk's). "dup" bumps one hot row; "new" creates an RR per
call (distinct fingerprints).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lifecycle import stop_servers_on_sigterm
from e2ecov.recipes import PostgresServer
from signalgate.remediation.model import Deduplication, RemediationRequest
from signalgate.remediation.postgres import PostgresRemediationStore
from signalgate.remediation.sqlite import SqliteRemediationStore
from signalgate.remediation.store import RemediationStore


def candidate(resource: str, payload: str) -> RemediationRequest:
    now = datetime.now(UTC)
    fp = hashlib.sha256(f"prod:Pod:{resource}".encode()).hexdigest()
    return RemediationRequest(
        name=f"rr-{fp[:12]}-{secrets.token_hex(4)}",
        namespace="kubernaut-system",
        fingerprint=fp,
        created_at=now,
        spec={
            "signalFingerprint": fp,
            "signalName": "KubePodCrashLooping",
            "severity": "critical",
            "signalType": "alert",
            "signalSource": "prometheus",
            "targetType": "kubernetes",
            "targetResource": {"kind": "Pod", "name": resource, "namespace": "prod"},
            "firingTime": "2026-03-01T11:59:00Z",
            "receivedTime": "2026-03-01T12:00:00Z",
            "signalLabels": {"alertname": "KubePodCrashLooping", "pod": resource},
            "signalAnnotations": {"summary": "crash looping"},
            "originalPayload": payload,
        },
        deduplication=Deduplication(now, now, 1),
    )


async def measure(
    store: RemediationStore, make: Callable[[], RemediationRequest], seconds: float, workers: int
) -> tuple[float, float, float]:
    """Calls per second, p50 and p99 latency in ms, with `workers` concurrent callers."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            rr = make()
            started = time.perf_counter()
            await store.record_firing(rr, rr.created_at)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - started
    qs = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, qs[49] * 1000, qs[98] * 1000


async def run(name: str, store: RemediationStore, args: argparse.Namespace) -> None:
    payload = "x" * args.payload_bytes
    counter = itertools.count()
    await store.open()
    try:
        for label, make in (
            ("dup", lambda: candidate("hot", payload)),
            ("new", lambda: candidate(f"pod-{next(counter)}", payload)),
        ):
            rate, p50, p99 = await measure(store, make, args.seconds, args.concurrency)
            print(f"{name:10} {label}  {rate:8.0f}/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--payload-bytes", type=int, default=2000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    args = parser.parse_args()
    if args.backend in ("sqlite", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            await run("sqlite", SqliteRemediationStore(Path(tmp) / "rr.db"), args)
    if args.backend in ("postgres", "all"):
        server = PostgresServer()
        await asyncio.to_thread(server.start)
        try:
            dsn = await asyncio.to_thread(server.create_database, "bench")
            await run("postgres", PostgresRemediationStore(dsn, max_size=10), args)
        finally:
            await asyncio.to_thread(server.cleanup)


if __name__ == "__main__":
    stop_servers_on_sigterm()
    try:
        import uvloop  # the Gateway runs on uvloop when it is installed
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
