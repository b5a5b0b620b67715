"""Large-webhook benchmark: how long one Alertmanager webhook of many alerts takes.

A full webhook (the default 4 MiB body limit holds about 5,500 alerts shaped as
kube-state-metrics sends them, ~750 bytes each) must be answered well inside the processing
deadline (15 s). Prints, per backend, the time to answer one webhook of N distinct alerts
(every one a new RR) and then the same webhook again (every one a duplicate), and checks the
answer: a 207 whose summary counts every alert.

    python bench/webhook.py [--alerts 5500] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lifecycle import stop_servers_on_sigterm
from e2ecov.recipes import PostgresServer
from signalgate.gateway.settings import GatewaySettings
from tests.support.services import ADMIN_TOKEN, gateway_process, rfc3339

MAX_BODY = GatewaySettings().server.max_body_size


def webhook(count: int, run: str) -> bytes:
    """Alerts as kube-state-metrics' rules and Prometheus send them (labels, annotations,
    generator URL, fingerprint)."""
    starts = rfc3339()
    alerts = [
        {
            "status": "firing",
            "labels": {
                "alertname": "KubePodCrashLooping",
                "severity": "warning",
                "namespace": "bench",
                "pod": f"p{run}-{i}",
                "container": "app",
                "job": "kube-state-metrics",
                "instance": "10.0.0.1:8080",
                "prometheus": "monitoring/k8s",
            },
            "annotations": {
                "description": f"Pod bench/p{run}-{i} (app) is in waiting state "
                "(reason: CrashLoopBackOff).",
                "runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/"
                "kubepodcrashlooping",
                "summary": "Pod is crash looping.",
            },
            "startsAt": starts,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=max_over_time%28kube_pod_"
            "container_status_waiting_reason%5B5m%5D%29&g0.tab=1",
            "fingerprint": f"{i:016x}",
        }
        for i in range(count)
    ]
    return orjson.dumps({"version": "4", "status": "firing", "alerts": alerts})


def largest_webhook(run: str, wanted: int) -> tuple[bytes, int]:
    """`wanted` alerts, or as many as fit the body limit."""
    count = wanted
    body = webhook(count, run)
    while len(body) > MAX_BODY:
        count = int(count * MAX_BODY / len(body) * 0.99)
        body = webhook(count, run)
    return body, count


def post(url: str, body: bytes) -> tuple[float, dict[str, object]]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    started = time.perf_counter()
    answer = httpx.post(
        f"{url}/api/v1/signals/prometheus", content=body, headers=headers, timeout=60
    )
    elapsed = time.perf_counter() - started
    assert answer.status_code == 207, (answer.status_code, answer.text[:300])
    summary: dict[str, object] = answer.json()["summary"]
    return elapsed, summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=5500)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="signalgate-bench-") as tmp:
        for backend in args.backends.split(","):
            postgres = PostgresServer().start() if backend == "postgres" else None
            env = {"SIGNALGATE_LOGGING__LEVEL": "warning"}
            if postgres is not None:
                env["SIGNALGATE_STORE__DSN"] = postgres.url
            service = gateway_process(Path(tmp) / backend, env=env).start()
            try:
                body, count = largest_webhook(uuid.uuid4().hex[:6], args.alerts)
                new, summary_new = post(service.api_url, body)
                again, summary_dup = post(service.api_url, body)
                assert summary_new["created"] == count, summary_new
                assert summary_dup["deduplicated"] == count, summary_dup
                rows.append((backend, count, len(body), new, again))
            finally:
                service.stop()
                if postgres is not None:
                    postgres.cleanup()
    print("\nOne Alertmanager webhook of many alerts (answers checked: 207, every alert counted)\n")
    print(f"{'backend':10} {'alerts':>7} {'bytes':>8} {'all new s':>10} {'all dup s':>10}")
    for backend, count, size, new, again in rows:
        print(f"{backend:10} {count:7d} {size:8d} {new:10.2f} {again:10.2f}")
    return 0


if __name__ == "__main__":
    stop_servers_on_sigterm()
    sys.exit(main())
