"""Ingest benchmark: a real Gateway process driven over HTTP by wrk, per backend and workload.

Prints, for SQLite, PostgreSQL and Kubernetes custom resources, and for the all-duplicate
(one hot resource) and all-new workloads, the throughput and the p50/p99 latency at a fixed
concurrency. The load generator is wrk (Debian package `wrk`), a separate compiled process,
so it does not share the Gateway's interpreter. PostgreSQL is a throwaway server from the
system binaries (fsync off, as in the test fixtures); Kubernetes is the tests' real
kube-apiserver + etcd (tools/kube-testenv/build.sh), where the figures are also checked on
the API server itself (the hot RR's occurrence count, the number of RRs).

Each backend runs twice: with audit delivery off (no DataStorage: events only logged) and
with the durable audit trail on (a DataStorage process; every answer waits for the audit
journal's group-committed fsync), so the cost of "durable before acknowledged" shows.

    python bench/ingest.py [--duration 10] [--connections 32]
                           [--backends sqlite,postgres,kubernetes] [--audit off,journal]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2ecov.kubeapi import KubeAPIServer
from e2ecov.recipes import PostgresServer
from tests.conftest import CRD_FILE, kube_testenv_bin
from tests.integration.datastorage.dstools import WRITER_TOKEN, datastorage_process
from tests.support.kube import kube_gateway
from tests.support.services import ADMIN_TOKEN, gateway_process, rfc3339

LUA = textwrap.dedent(
    """
    local counter = 0
    local threads = 0
    function setup(thread)
      thread:set("id", threads)
      threads = threads + 1
    end
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Authorization"] = "Bearer {token}"
    local template = '{{"version":"4","status":"firing","alerts":[{{"status":"firing",' ..
      '"labels":{{"alertname":"BenchAlert","severity":"critical","namespace":"bench",' ..
      '"pod":"%s"}},"annotations":{{"summary":"benchmark"}},"startsAt":"{starts_at}"}}]}}'
    function request()
      local pod = "hot-pod"
      if "{workload}" == "new" then
        counter = counter + 1
        pod = string.format("{run}-%d-%d", id, counter)
      end
      return wrk.format(nil, "/api/v1/signals/prometheus", nil, string.format(template, pod))
    end
    """
)


def run_wrk(
    url: str, workload: str, duration: int, connections: int, workdir: Path
) -> dict[str, float]:
    script = workdir / f"{workload}.lua"
    script.write_text(
        LUA.format(
            token=ADMIN_TOKEN, workload=workload, run=uuid.uuid4().hex[:8], starts_at=rfc3339()
        )
    )
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    return parse_wrk(result.stdout)


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(output: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    total = re.search(r"(\d+) requests in", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        "socket_errors": 1.0 if socket_errors else 0.0,
        "requests": float(total.group(1)) if total else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--backends", default="sqlite,postgres,kubernetes")
    parser.add_argument("--audit", default="off,journal", help="off, journal or both")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench/ingest.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2

    rows = []
    checks: list[str] = []
    with tempfile.TemporaryDirectory(prefix="signalgate-bench-") as tmp:
        workdir = Path(tmp)
        datastorage = datastorage_process(workdir / "datastorage").start()
        token_file = workdir / "ds.token"
        token_file.write_text(WRITER_TOKEN)
        cases = [(b, a) for b in args.backends.split(",") for a in args.audit.split(",")]
        for backend, audit in cases:
            postgres = PostgresServer().start() if backend == "postgres" else None
            kube = start_kube() if backend == "kubernetes" else None
            env = {
                "SIGNALGATE_SERVER__MAXCONCURRENTREQUESTS": "1000",
                "SIGNALGATE_LOGGING__LEVEL": "warning",
            }
            if postgres is not None:
                env["SIGNALGATE_STORE__DSN"] = postgres.url
            if audit == "journal":
                env["SIGNALGATE_DATASTORAGE__URL"] = datastorage.api_url
                env["SIGNALGATE_DATASTORAGE__TOKENFILE"] = str(token_file)
            data_dir = workdir / f"{backend}-{audit}"
            if kube is not None:
                env["SIGNALGATE_SCOPE__SOURCE"] = "settings"
                service = kube_gateway(kube, "bench", data_dir, auth="static", env=env)
            else:
                service = gateway_process(data_dir, env=env)
            service.start()
            try:
                for workload in ("duplicate", "new"):
                    warm = run_wrk(service.api_url, workload, 2, args.connections, workdir)
                    figures = run_wrk(
                        service.api_url, workload, args.duration, args.connections, workdir
                    )
                    rows.append((backend, audit, workload, figures))
                    if kube is not None:
                        checks.append(verify_kube(kube, workload, warm, figures, args.connections))
                    time.sleep(0.5)
            finally:
                service.stop()
                if postgres is not None:
                    postgres.cleanup()
                if kube is not None:
                    kube.cleanup()
        datastorage.stop()

    print(f"\nGateway ingest, wrk -t2 -c{args.connections}, {args.duration}s per case\n")
    print(
        f"{'backend':10} {'audit':8} {'workload':10} {'signals/s':>10} {'p50 ms':>8}"
        f" {'p99 ms':>8} {'non-2xx':>8}"
    )
    for backend, audit, workload, f in rows:
        print(
            f"{backend:10} {audit:8} {workload:10} {f['rps']:10.0f} {f['p50_ms']:8.2f}"
            f" {f['p99_ms']:8.2f} {int(f['non_2xx']):8d}"
        )
    for line in checks:
        print(line)
    return 0


def start_kube() -> KubeAPIServer:
    server = KubeAPIServer(bin_dir=kube_testenv_bin(), crds=[CRD_FILE]).start()
    server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
    return server


def verify_kube(
    server: KubeAPIServer,
    workload: str,
    warm: dict[str, float],
    run: dict[str, float],
    connections: int,
) -> str:
    """The answers counted on the API server: every acknowledged duplicate is in the hot RR's
    occurrenceCount; every acknowledged new signal is one RR. wrk counts only the requests
    answered before its time is up, so up to one request per connection and run may have
    been stored without being counted by wrk."""
    status, listed = server.request(
        "GET", "/apis/kubernaut.ai/v1alpha1/namespaces/bench/remediationrequests"
    )
    assert status == 200, listed
    items = listed["items"]
    acknowledged = int(warm["requests"] - warm["non_2xx"] + run["requests"] - run["non_2xx"])
    if workload == "duplicate":
        (hot,) = [rr for rr in items if rr["spec"]["targetResource"]["name"] == "hot-pod"]
        counted = int(hot["status"]["deduplication"]["occurrenceCount"])
    else:
        counted = sum(1 for rr in items if rr["spec"]["targetResource"]["name"] != "hot-pod")
    in_flight = 2 * connections
    verdict = "ok" if acknowledged <= counted <= acknowledged + in_flight else "MISMATCH"
    return (
        f"kubernetes {workload}: {acknowledged} acknowledged by the end of wrk's runs, "
        f"{counted} counted on the API server (at most {in_flight} more in flight): {verdict}"
    )


if __name__ == "__main__":
    sys.exit(main())
