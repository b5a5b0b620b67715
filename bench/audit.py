"""Audit write throughput: batches of 100 events at concurrency 8 against a real DataStorage
process on PostgreSQL (or its embedded SQLite store). Prints events/s, batch latency
percentiles, and DataStorage's CPU µs per event (utime + stime from /proc) and, on
PostgreSQL, the server's beside it (every backend's: what each stored event costs it).

    python bench/audit.py [--seconds 15] [--concurrency 8] [--batch 100]
                          [--backend postgres|sqlite] [--query-pages 20]
                          [--shape small|gateway]

After the writes, `--query-pages` full pages of the query API (`limit=1000`, newest first)
are read one after another: the time and DataStorage's CPU per page.

Starts its own PostgreSQL (e2ecov recipe; not for `--backend sqlite`) and
`signalgate-datastorage serve`; the load comes from a separate process (`--load`) so client
and server do not share an event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import proc_cpu_seconds
from bench.lifecycle import stop_servers_on_sigterm
from e2ecov.recipes import PostgresServer, free_port

TOKEN = "bench-token"
CORRELATION_POOL = 2000


def _alert_body(rr: int) -> dict[str, Any]:
    """An Alertmanager webhook of one alert, as the Gateway inlines it in its events
    (`original_payload`): ~2 KB of labels, annotations and timestamps."""
    labels = {"alertname": "HighCPU", "namespace": "prod", "pod": f"api-{rr}"}
    labels.update({f"label_{i}": f"value-{i}" for i in range(9)})
    return {
        "receiver": "signalgate",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "CPU above 90% " * 10, "runbook": "https://x/" * 20},
                "startsAt": "2026-12-03T12:00:00.123456789Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=rate%28cpu%5B5m%5D%29",
                "fingerprint": f"{rr:016x}",
            }
        ],
        "groupLabels": {"alertname": "HighCPU"},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}:{alertname="HighCPU"}',
        "truncatedAlerts": 0,
    }


def batch_body(size: int, rng_offset: int, shape: str = "small") -> bytes:
    """A Gateway-like batch: events spread over ~10 remediation requests. `shape` "gateway"
    gives each the size the Gateway's have (the alert's body inlined, labels and
    annotations); "small", a few fields."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    events = []
    for i in range(size):
        rr = (rng_offset + i // 10) % CORRELATION_POOL
        data: dict[str, Any] = {
            "signal_name": "HighCPU",
            "fingerprint": hashlib.sha256(str(rr).encode()).hexdigest(),
            "namespace": "prod",
            "resource_kind": "Pod",
            "resource_name": f"api-{rr}",
            "occurrence_count": 1,
            "signal_labels": {"alertname": "HighCPU", "severity": "critical"},
            "signal_annotations": {},
        }
        if shape == "gateway":
            body = _alert_body(rr)
            data["original_payload"] = body
            data["signal_labels"] = body["commonLabels"]
            data["signal_annotations"] = body["alerts"][0]["annotations"]
        events.append(
            {
                "version": "1.0",
                "event_type": "gateway.signal.received",
                "event_timestamp": now,
                "event_category": "gateway",
                "event_action": "received",
                "event_outcome": "success",
                "correlation_id": f"rr-bench-{rr}",
                "event_id": str(uuid.uuid4()),
                "namespace": "prod",
                "event_data": data,
            }
        )
    return orjson.dumps(events)


async def load(
    url: str, seconds: float, concurrency: int, size: int, shape: str
) -> dict[str, float]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as c:

        async def worker(number: int) -> None:
            offset = number * 997
            while time.perf_counter() < deadline:
                body = batch_body(size, offset, shape)
                offset += 131
                started = time.perf_counter()
                answer = await c.post("/api/v1/audit/events/batch", content=body)
                latencies.append(time.perf_counter() - started)
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    stored = statuses.get(201, 0) * size

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "batches": len(latencies),
        "events_per_second": stored / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "statuses": statuses,  # type: ignore[dict-item]
    }


def query_pages(url: str, pid: int, pages: int) -> str:
    """Read `pages` full pages of the query API in turn: the time and CPU of one."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        client.get("/api/v1/audit/events", params={"limit": 1000}).raise_for_status()
        spent, started = proc_cpu_seconds(pid), time.perf_counter()
        size = 0
        for _ in range(pages):
            answer = client.get("/api/v1/audit/events", params={"limit": 1000})
            answer.raise_for_status()
            size += len(answer.content)
        elapsed, spent = time.perf_counter() - started, proc_cpu_seconds(pid) - spent
    return (
        f"  query pages of 1,000 events ({size / pages / 1e6:.1f} MB each): "
        f"{elapsed * 1e3 / pages:.1f} ms and {spent * 1e3 / pages:.1f} ms of DataStorage CPU each"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--query-pages", type=int, default=20)
    parser.add_argument(
        "--shape",
        choices=("small", "gateway"),
        default="small",
        help="events of a few fields, or the size of the Gateway's (the alert's body inlined)",
    )
    parser.add_argument("--load", help=argparse.SUPPRESS)  # internal: run only the client
    args = parser.parse_args()
    if args.load:
        result = asyncio.run(
            load(args.load, args.seconds, args.concurrency, args.batch, args.shape)
        )
        print(json.dumps(result))
        return 0

    postgres = PostgresServer().start() if args.backend == "postgres" else None
    work = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    server: subprocess.Popen[bytes] | None = None
    try:
        dsn = (
            postgres.create_database("audit")
            if postgres is not None
            else f"sqlite:///{work / 'audit.db'}"
        )
        tokens = work / "tokens"
        digest = hashlib.sha256(TOKEN.encode()).hexdigest()
        tokens.write_text(f"{digest} audit:write,audit:write:gateway,audit:read\n")
        api, ops = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE_")}
        env.update(
            {
                "SIGNALGATE_STORE__DSN": dsn,
                "SIGNALGATE_STORE__AUTOMIGRATE": "true",
                "SIGNALGATE_AUTH__TOKENSFILE": str(tokens),
                "SIGNALGATE_DATADIR": str(work),
                "SIGNALGATE_LOGGING__LEVEL": "warning",
            }
        )
        command = [sys.executable, "-m", "signalgate.datastorage.cli", "serve"]
        command += ["--listen", f"127.0.0.1:{api}", "--ops-listen", f"127.0.0.1:{ops}"]
        log = open(work / "server.log", "wb")  # noqa: SIM115
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{ops}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print((work / "server.log").read_text()[-2000:], file=sys.stderr)
                return 1
            time.sleep(0.1)
        client = [sys.executable, __file__, "--load", f"http://127.0.0.1:{api}"]
        client += ["--seconds", str(args.seconds), "--concurrency", str(args.concurrency)]
        client += ["--batch", str(args.batch), "--shape", args.shape]
        # warm-up (connection pool, statement caches), then the measured run
        subprocess.run([*client[:4], "--seconds", "2"], check=True, capture_output=True)
        spent = proc_cpu_seconds(server.pid)
        pg_pid = postgres.pid if postgres is not None else None
        pg_spent = proc_cpu_seconds(pg_pid) if pg_pid is not None else 0.0
        output = subprocess.run(client, check=True, capture_output=True, text=True).stdout
        spent = proc_cpu_seconds(server.pid) - spent
        if pg_pid is not None:
            pg_spent = proc_cpu_seconds(pg_pid) - pg_spent
        result = json.loads(output)
        events = result["batches"] * args.batch
        print(
            f"audit batch writes on {'PostgreSQL' if postgres else 'SQLite'} "
            f"({args.shape} events): batch {args.batch}, concurrency {args.concurrency}, "
            f"{args.seconds:.0f}s on {os.cpu_count()} CPUs\n"
            f"  {result['events_per_second']:,.0f} events/s   "
            f"p50 {result['p50_ms']:.1f} ms   p99 {result['p99_ms']:.1f} ms per batch   "
            f"({result['batches']} batches, statuses {result['statuses']})\n"
            f"  DataStorage CPU {spent * 1e6 / max(events, 1):.1f} µs per event"
            + (
                f", PostgreSQL CPU {pg_spent * 1e6 / max(events, 1):.1f} µs per event"
                if pg_pid is not None
                else ""
            )
        )
        if args.query_pages:
            print(query_pages(f"http://127.0.0.1:{api}", server.pid, args.query_pages))
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        if postgres is not None:
            postgres.cleanup()


if __name__ == "__main__":
    stop_servers_on_sigterm()
    sys.exit(main())
