"""Ingest benchmark: a real Gateway process driven over HTTP by wrk, per backend and workload.

Prints, for SQLite, PostgreSQL and Kubernetes custom resources, and for the all-duplicate
(one hot resource) and all-new workloads, the throughput and the p50/p99 latency at a fixed
concurrency. The load generator is wrk (Debian package `wrk`), a separate compiled process,
so it does not share the Gateway's interpreter. PostgreSQL is one throwaway server from the
system binaries with production durability (fsync, synchronous commit and full-page writes
on; the test fixtures turn them off), a database per case; Kubernetes is the tests' real
kube-apiserver + etcd (tools/kube-testenv/build.sh), where the figures are also checked on
the API server itself (the hot RR's occurrence count, the number of RRs).

Each backend runs twice: with audit delivery off (no DataStorage: events only logged) and
with the durable audit trail on (a DataStorage process; every answer waits for the audit
journal's group-committed fsync), so the cost of "durable before acknowledged" shows.

Beside the Gateway, the naive ceiling (bench/ceiling.py: a bare ASGI app doing one
PostgreSQL upsert per request, under uvicorn, on the same PostgreSQL) runs the same
workloads, and each Gateway row prints its ratio to it; a journal row also prints its share
of the same case with audit off ("/off"), and a SQLite or Kubernetes row its ratio to the
same case on PostgreSQL ("/pg"): the goals are ratios within one run. Every row also
prints the server's CPU time per answered request (utime + stime from /proc, the process
and its children, before/after the run), and PostgreSQL's and DataStorage's beside it
("pg us", "ds us"), and every workload's count is read back server-side (the Gateway's
list API, or the API server) and compared with the answers wrk counted. With the journal on,
the audit trail is checked too (bench/audit_check.py): once the journal is delivered,
DataStorage must hold exactly the events of the RRs counted, in whole hash chains.

    python bench/ingest.py [--duration 4] [--connections 16,64]
                           [--backends sqlite,postgres,kubernetes] [--audit off,journal]
                           [--workers 1,2] [--no-ceiling] [--rounds 1]

`--rounds N` runs the whole set N times over, one round after another, and prints each
figure's median over the rounds, each ratio as the median of its per-round ratios (a ratio
always compares two cases of the same round, measured minutes apart, never rounds apart),
and the range of signals/s ("min-max"). A shared 2-core machine's speed drifts by tens of
per cent within an hour; a single round's ratio can move by as much, the median of three
moves far less.

`--audit standin` (beside `off` and `journal`) delivers the journal to a stand-in that takes
every batch at once and only counts it (bench/ds_standin.py): what the audit trail costs the
Gateway itself, without DataStorage's and its PostgreSQL's work on the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.audit_check import (
    CHAINS_SAMPLED,
    AuditSink,
    Counted,
    audit_verdict,
    datastorage_sink,
    standin_sink,
    wait_delivered,
)
from bench.ceiling import count as ceiling_count
from bench.lifecycle import stop_servers_on_sigterm
from e2ecov.kubeapi import KubeAPIServer
from e2ecov.recipes import PostgresServer, free_port
from tests.conftest import CRD_FILE, kube_testenv_bin
from tests.integration.datastorage.dstools import WRITER_TOKEN, datastorage_process
from tests.support.kube import kube_gateway
from tests.support.services import ADMIN_TOKEN, ServiceProcess, gateway_process, rfc3339

ROOT = Path(__file__).resolve().parents[1]
WARM_UP = 1  # seconds of wrk before each measured run (connections, pools, caches)
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


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its descendants (worker processes), from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def measured_wrk(
    pid: int,
    url: str,
    workload: str,
    duration: int,
    connections: int,
    workdir: Path,
    beside: dict[str, int | None] | None = None,
) -> dict[str, float]:
    """One wrk run with the server's CPU time per answered request (`cpu_us`), and that of
    each process in `beside` (`<name>_cpu_us`, e.g. PostgreSQL and DataStorage): a process
    busy with something else during a run shows there, not only as a slower row."""
    watched = {"cpu_us": pid, **{f"{n}_cpu_us": p for n, p in (beside or {}).items() if p}}
    before = {key: proc_cpu_seconds(p) for key, p in watched.items()}
    figures = run_wrk(url, workload, duration, connections, workdir)
    requests = figures["requests"]
    for key, p in watched.items():
        spent = proc_cpu_seconds(p) - before[key]
        figures[key] = spent * 1e6 / requests if requests else 0.0
    return figures


def wait_port(
    url: str, proc: subprocess.Popen[bytes], name: str = "the ceiling app", timeout: float = 20.0
) -> None:
    host, port = url.removeprefix("http://").split(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{name} does not listen on {url} after {timeout}s")


def uvicorn_app(app: str, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A bench app (`module:app`) under uvicorn: uvloop, httptools, one process, quiet."""
    command = [sys.executable, "-m", "uvicorn", app, "--port", str(port)]
    command += ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    command += ["--log-level", "warning"]
    return subprocess.Popen(command, env={**os.environ, **(env or {})}, cwd=ROOT)


@contextlib.contextmanager
def standin() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The DataStorage stand-in (bench/ds_standin.py) for one case: its URL and process."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = uvicorn_app("bench.ds_standin:app", port)
    try:
        wait_port(url, proc, "the DataStorage stand-in")
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(30)


def audit_delivery(
    audit: str,
    stack: contextlib.ExitStack,
    workdir: Path,
    postgres: PostgresServer | None,
    name: str = "ds",
) -> tuple[dict[str, str], int | None]:
    """A lone Gateway's settings for one audit setting (bench/profile.py, bench/threads.py),
    and the pid of the process taking its events (None with audit off): `journal` delivers
    to a DataStorage process started here (on a database of its own on `postgres`, when
    given), `standin` to the stand-in, `off` nowhere. What it starts stops with `stack`."""
    if audit == "off":
        return {}, None
    if audit == "journal":
        ds_env = {}
        if postgres is not None:
            ds_env["SIGNALGATE_STORE__DSN"] = postgres.create_database(name)
            ds_env["SIGNALGATE_STORE__AUTOMIGRATE"] = "true"
        datastorage = datastorage_process(workdir / f"datastorage-{name}", env=ds_env).start()
        stack.callback(datastorage.stop)
        assert datastorage.proc is not None
        url, pid = datastorage.api_url, datastorage.proc.pid
    else:
        url, proc = stack.enter_context(standin())
        pid = proc.pid
    token_file = workdir / "ds.token"
    token_file.write_text(WRITER_TOKEN)
    env = {"SIGNALGATE_DATASTORAGE__URL": url, "SIGNALGATE_DATASTORAGE__TOKENFILE": str(token_file)}
    return env, pid


def run_ceiling(
    round_: int,
    postgres: PostgresServer,
    connections: list[int],
    duration: int,
    workdir: Path,
    rows: list[Row],
    checks: list[str],
) -> None:
    """The naive one-upsert-per-request app (bench/ceiling.py) under uvicorn, same workloads."""
    for workload in ("duplicate", "new"):
        for conns in connections:
            dsn = postgres.create_database(f"ceiling_{round_}_{workload}_{conns}")
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            proc = uvicorn_app("bench.ceiling:app", port, {"CEILING_DSN": dsn})
            try:
                wait_port(url, proc)
                warm = run_wrk(url, workload, WARM_UP, conns, workdir)
                checkpoint(postgres)
                figures = measured_wrk(
                    proc.pid, url, workload, duration, conns, workdir, beside={"pg": postgres.pid}
                )
                rows.append(Row("ceiling", "-", 1, conns, workload, figures))
            finally:
                proc.terminate()
                proc.wait(30)
            stored_rows, total = asyncio.run(ceiling_count(dsn))
            acknowledged = ok_answers(warm) + ok_answers(figures)
            counted = total if workload == "duplicate" else stored_rows
            checks.append(verdict(f"ceiling c={conns}", workload, conns, acknowledged, counted))


def checkpoint(postgres: PostgresServer) -> None:
    """Every measured run starts from the same server state: no autovacuum worker busy, a
    fresh checkpoint (so every run pays PostgreSQL's full-page images after a checkpoint
    alike), and no dirty page cache left by earlier cases waiting for writeback. This did
    not remove the order effect the README describes (PostgreSQL's creates measured after
    the audit cases run slower than on their own); it rules these three causes out."""
    started = time.monotonic()
    while time.monotonic() - started < 60 and postgres.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
    ).strip() not in ("", "0"):
        time.sleep(0.5)
    waited = time.monotonic() - started
    if waited > 0.1:
        print(f"(waited {waited:.1f}s for autovacuum)", file=sys.stderr)
    postgres.execute("CHECKPOINT")
    os.sync()  # nor the writeback of what earlier cases left in the page cache


def ok_answers(figures: dict[str, float]) -> int:
    return int(figures["requests"] - figures["non_2xx"])


def verdict(what: str, workload: str, conns: int, acknowledged: int, counted: int) -> str:
    """wrk counts only the answers it read before its time was up: up to one request per
    connection and run (a warm-up and a measured run) may be stored without being counted."""
    in_flight = 2 * conns
    ok = "ok" if acknowledged <= counted <= acknowledged + in_flight else "MISMATCH"
    return (
        f"{what} {workload}: {acknowledged} acknowledged by wrk, {counted} counted"
        f" server-side (at most {in_flight} more in flight): {ok}"
    )


@dataclass
class Row:
    backend: str
    audit: str
    workers: int
    connections: int
    workload: str
    figures: dict[str, float]
    round: int = 0

    @property
    def case(self) -> tuple[str, str, int, int, str]:
        """What the row measured, whichever round it was."""
        return (self.backend, self.audit, self.workers, self.connections, self.workload)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=4, help="seconds per measured case")
    parser.add_argument("--connections", default="16,64", help="comma-separated wrk -c values")
    parser.add_argument("--backends", default="sqlite,postgres,kubernetes")
    parser.add_argument(
        "--audit",
        default="off,journal",
        help="comma-separated: off, journal (DataStorage), standin (DataStorage stand-in)",
    )
    parser.add_argument("--workers", default="1,2", help="comma-separated server.workers")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the naive ceiling app")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run everything this many times; print medians"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench/ingest.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    connections = [int(c) for c in args.connections.split(",")]

    rows: list[Row] = []
    checks: list[str] = []
    with tempfile.TemporaryDirectory(prefix="signalgate-bench-") as tmp:
        workdir = Path(tmp)
        # one PostgreSQL for the whole run, production durability (fsync on): each case has
        # its own database on it
        postgres = PostgresServer(durable=True).start()
        datastorage = datastorage_process(
            workdir / "datastorage",
            env={
                "SIGNALGATE_STORE__DSN": postgres.create_database("ds"),
                "SIGNALGATE_STORE__AUTOMIGRATE": "true",
            },
        ).start()
        token_file = workdir / "ds.token"
        token_file.write_text(WRITER_TOKEN)
        try:
            # audit off and journal back to back for each backend and worker count: the
            # journal's /off ratio compares two cases measured a minute apart, not five
            cases = [
                (b, a, int(w))
                for b in args.backends.split(",")
                for w in args.workers.split(",")
                for a in args.audit.split(",")
            ]
            for round_ in range(args.rounds):
                first, first_check = len(rows), len(checks)
                if not args.no_ceiling:
                    run_ceiling(round_, postgres, connections, args.duration, workdir, rows, checks)
                for index, (backend, audit, workers) in enumerate(cases):
                    run_gateway_case(
                        backend, audit, workers, round_ * len(cases) + index, postgres,
                        datastorage, token_file, connections, args.duration, workdir, rows,
                        checks,
                    )  # fmt: skip
                for row in rows[first:]:
                    row.round = round_
                if args.rounds > 1:
                    checks[first_check:] = [
                        f"round {round_ + 1}: {c}" for c in checks[first_check:]
                    ]
        finally:
            datastorage.stop()
            postgres.cleanup()

    # printed grouped as before (backend, then audit), whatever order they ran in
    backends, audits = ["ceiling", *args.backends.split(",")], ["-", *args.audit.split(",")]
    rows.sort(key=lambda r: (backends.index(r.backend), audits.index(r.audit)))
    print_table(rows, args.duration, args.rounds)
    for line in checks:
        print(line)
    return 0


def run_gateway_case(
    backend: str,
    audit: str,
    workers: int,
    number: int,
    postgres: PostgresServer,
    datastorage: ServiceProcess,
    token_file: Path,
    connections: list[int],
    duration: int,
    workdir: Path,
    rows: list[Row],
    checks: list[str],
) -> None:
    """One backend, audit setting and worker count: both workloads at every concurrency,
    each checked server-side. `journal` delivers to the DataStorage process, `standin` to
    the DataStorage stand-in (bench/ds_standin.py), `off` nowhere."""
    with contextlib.ExitStack() as stack:
        sink: AuditSink | None = None
        sink_pid: int | None = None
        env = {
            "SIGNALGATE_SERVER__MAXCONCURRENTREQUESTS": "1000",
            "SIGNALGATE_LOGGING__LEVEL": "warning",
            "SIGNALGATE_SERVER__WORKERS": str(workers),
        }
        if audit == "journal":
            sink = datastorage_sink(datastorage)
            sink_pid = datastorage.proc.pid if datastorage.proc else None
            env["SIGNALGATE_DATASTORAGE__URL"] = datastorage.api_url
        elif audit == "standin":
            url, proc = stack.enter_context(standin())
            sink, sink_pid = standin_sink(url), proc.pid
            env["SIGNALGATE_DATASTORAGE__URL"] = url
        if sink is not None:
            env["SIGNALGATE_DATASTORAGE__TOKENFILE"] = str(token_file)
        if backend == "postgres":
            env["SIGNALGATE_STORE__DSN"] = postgres.create_database(f"gateway_{number}")
        kube = start_kube() if backend == "kubernetes" else None
        data_dir = workdir / f"{number}-{backend}-{audit}-{workers}"
        if kube is not None:
            stack.callback(kube.cleanup)
            env["SIGNALGATE_SCOPE__SOURCE"] = "settings"
            service = kube_gateway(kube, "bench", data_dir, auth="static", env=env)
        else:
            service = gateway_process(data_dir, env=env)
        service.start()
        stack.callback(service.stop)
        assert service.proc is not None
        for workload in ("duplicate", "new"):
            acknowledged = 0
            events_before = sink.events() if sink is not None else {}
            for conns in connections:
                warm = run_wrk(service.api_url, workload, WARM_UP, conns, workdir)
                checkpoint(postgres)
                figures = measured_wrk(
                    service.proc.pid, service.api_url, workload, duration, conns, workdir,
                    beside={"pg": postgres.pid, "ds": sink_pid},
                )  # fmt: skip
                rows.append(Row(backend, audit, workers, conns, workload, figures))
                acknowledged += ok_answers(warm) + ok_answers(figures)
                time.sleep(0.5)
            # the counts cover every run of this workload on this Gateway
            counted = (
                count_on_kube(kube, workload)
                if kube is not None
                else count_on_gateway(service, workload)
            )
            what = f"{backend}/audit-{audit}/workers-{workers}"
            checks.append(verdict(what, workload, sum(connections), acknowledged, counted.total))
            if sink is not None:
                undelivered = wait_delivered(service)
                checks.append(
                    audit_verdict(what, workload, sink, events_before, counted, undelivered)
                )


def count_on_gateway(service: ServiceProcess, workload: str) -> Counted:
    """The hot RR's occurrence count, or the number of other RRs, read back from the
    Gateway's own list API (with the RRs whose audit chains are checked)."""
    others = 0
    hot_chains: dict[str, int] = {}
    new_chains: dict[str, int] = {}
    cursor = ""
    with service.client() as client:
        while True:
            params = {"namespace": "bench", "limit": "500"}
            if cursor:
                params["cursor"] = cursor
            answer = client.get("/api/v1/remediation-requests", params=params)
            answer.raise_for_status()
            page = answer.json()
            for rr in page["items"]:
                occurrences = int(rr["status"]["deduplication"]["occurrenceCount"])
                if rr["spec"]["targetResource"]["name"] == "hot-pod":
                    hot_chains[rr["metadata"]["name"]] = occurrences
                else:
                    others += 1
                    if len(new_chains) < CHAINS_SAMPLED:
                        new_chains[rr["metadata"]["name"]] = occurrences
            cursor = page.get("nextCursor") or ""
            if not cursor:
                break
    if workload == "duplicate":
        return Counted(sum(hot_chains.values()), hot_chains)
    return Counted(others, new_chains)


def counterpart(
    row: Row, rows: list[Row], *, backend: str | None = None, audit: str | None = None
) -> Row | None:
    """The row measured like `row` (same connections and workload, and same workers unless
    it is the ceiling, which runs one) but on `backend` or with `audit`: what a ratio
    compares `row` with."""
    backend = backend or row.backend
    audit = audit or row.audit
    for other in rows:
        if (other.backend, other.audit, other.connections, other.workload) == (
            backend,
            audit,
            row.connections,
            row.workload,
        ) and (other.workers == row.workers or backend == "ceiling"):
            return other
    return None


@dataclass
class Summary:
    """One case over every round: median figures, median ratios, the throughput's range."""

    row: Row  # the case, with each figure's median over the rounds
    ratios: dict[str, float | None]  # "/ceiling", "/off", "/pg": median of per-round ratios
    low: float  # the lowest and highest signals/s of the rounds
    high: float


def summarize(rows: list[Row]) -> list[Summary]:
    """The rows of every round folded into one line per case, in the order cases first ran.
    A ratio is taken within each round (its two cases measured minutes apart), then the
    median of those; with one round everything is that round's own figure."""
    by_round: dict[int, list[Row]] = {}
    by_case: dict[tuple[str, str, int, int, str], list[Row]] = {}
    for row in rows:
        by_round.setdefault(row.round, []).append(row)
        by_case.setdefault(row.case, []).append(row)
    summaries = []
    for runs in by_case.values():
        figures = {
            key: statistics.median(r.figures.get(key, 0.0) for r in runs) for key in runs[0].figures
        }
        # a failed answer in any round shows: counted, not averaged away
        figures["non_2xx"] = sum(r.figures["non_2xx"] for r in runs)
        ratios: dict[str, float | None] = {}
        for name, base in (
            ("/ceiling", {"backend": "ceiling", "audit": "-"}),
            ("/off", {"audit": "off"}),
            ("/pg", {"backend": "postgres"}),
        ):
            values = [
                ratio
                for r in runs
                if (ratio := _ratio_to(r, by_round[r.round], name, base)) is not None
            ]
            ratios[name] = statistics.median(values) if values else None
        rps = [r.figures["rps"] for r in runs]
        first = runs[0]
        median_row = Row(
            first.backend, first.audit, first.workers, first.connections, first.workload, figures
        )
        summaries.append(Summary(median_row, ratios, min(rps), max(rps)))
    return summaries


def _ratio_to(row: Row, same_round: list[Row], name: str, base: dict[str, str]) -> float | None:
    """`row`'s signals/s over its counterpart's in the same round, for the ratios that apply
    to it: `/ceiling` to every Gateway row, `/off` to audit rows, `/pg` to other backends."""
    if name == "/ceiling" and row.backend == "ceiling":
        return None
    if name == "/off" and row.audit in ("off", "-"):
        return None
    if name == "/pg" and row.backend in ("postgres", "ceiling"):
        return None
    other = counterpart(row, same_round, **base)
    if other is None or not other.figures["rps"]:
        return None
    return row.figures["rps"] / other.figures["rps"]


def print_table(rows: list[Row], duration: int, rounds: int = 1) -> None:
    """One line per case, with its ratios to the rows of the same run it is judged against:
    the ceiling (`/ceiling`), the same case with audit off (`/off`, journal rows) and the
    same case on PostgreSQL (`/pg`, the other backends). Over several rounds: medians, and
    the range of signals/s."""
    medians = f", median of {rounds} rounds" if rounds > 1 else ""
    print(f"\nGateway ingest, wrk -t2, {duration}s per case{medians}, PostgreSQL with fsync on\n")
    spread = f" {'min-max':>11}" if rounds > 1 else ""
    print(
        f"{'backend':10} {'audit':8} {'workers':>7} {'conns':>5} {'workload':10}"
        f" {'signals/s':>10}{spread} {'/ceiling':>8} {'/off':>5} {'/pg':>5} {'p50 ms':>8}"
        f" {'p99 ms':>8} {'cpu us/req':>10} {'pg us':>6} {'ds us':>6} {'non-2xx':>8}"
    )
    for summary in summarize(rows):
        r, f = summary.row, summary.row.figures
        spread = f" {summary.low:5.0f}-{summary.high:<5.0f}" if rounds > 1 else ""
        print(
            f"{r.backend:10} {r.audit:8} {r.workers:7d} {r.connections:5d} {r.workload:10}"
            f" {f['rps']:10.0f}{spread} {_shown(summary.ratios['/ceiling'], 8)}"
            f" {_shown(summary.ratios['/off'], 5)} {_shown(summary.ratios['/pg'], 5)}"
            f" {f['p50_ms']:8.2f} {f['p99_ms']:8.2f}"
            f" {f['cpu_us']:10.0f} {f.get('pg_cpu_us', 0):6.0f} {f.get('ds_cpu_us', 0):6.0f}"
            f" {int(f['non_2xx']):8d}"
        )


def _shown(ratio: float | None, width: int) -> str:
    return f"{'-':>{width}}" if ratio is None else f"{ratio:{width}.2f}"


def start_kube() -> KubeAPIServer:
    server = KubeAPIServer(bin_dir=kube_testenv_bin(), crds=[CRD_FILE]).start()
    server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
    # a fresh API server takes about 2 s over its first write of a custom resource (it builds
    # the CRD's validators then): pay that before measuring, not inside a measured run
    server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "warm-up"}})
    rr = {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationRequest",
        "metadata": {"name": "rr-warm-up", "namespace": "warm-up"},
        "spec": {
            "signalFingerprint": "0" * 64,
            "signalName": "WarmUp",
            "severity": "info",
            "signalType": "alert",
            "targetType": "kubernetes",
            "targetResource": {"kind": "Pod", "name": "warm-up"},
            "firingTime": "2026-01-01T00:00:00Z",
            "receivedTime": "2026-01-01T00:00:00Z",
        },
    }
    server.apply(rr)
    return server


def count_on_kube(server: KubeAPIServer, workload: str) -> Counted:
    """The same counts on the API server itself: the hot RR's occurrenceCount, or the number
    of other RRs."""
    status, listed = server.request(
        "GET", "/apis/kubernaut.ai/v1alpha1/namespaces/bench/remediationrequests"
    )
    assert status == 200, listed
    items = listed["items"]
    if workload == "duplicate":
        (hot,) = [rr for rr in items if rr["spec"]["targetResource"]["name"] == "hot-pod"]
        occurrences = int(hot["status"]["deduplication"]["occurrenceCount"])
        return Counted(occurrences, {hot["metadata"]["name"]: occurrences})
    created = [rr for rr in items if rr["spec"]["targetResource"]["name"] != "hot-pod"]
    # each new RR seen once (an RR whose status write after the create failed reads so too)
    counts = {
        rr["metadata"]["name"]: int(
            ((rr.get("status") or {}).get("deduplication") or {}).get("occurrenceCount", 1)
        )
        for rr in created
    }
    return Counted(sum(counts.values()), dict(list(counts.items())[:CHAINS_SAMPLED]))


if __name__ == "__main__":
    stop_servers_on_sigterm()
    sys.exit(main())
