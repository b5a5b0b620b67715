"""The Gateway's CPU per request, thread by thread, with the audit trail off and on.

    python bench/threads.py [--workload duplicate] [--connections 16] [--duration 5]
                            [--audit off,standin,journal]

Why: at c=16 one thread bounds the Gateway, the event loop's. Whether the audit trail costs
throughput because it adds CPU to that thread, or because the thread waits (for a core the
journal's writer, DataStorage and PostgreSQL also want), shows only per thread: the process
total of `bench/ingest.py` mixes the loop with the writer thread on the other core.

For each audit setting (as in `bench/ingest.py`: `off`; `standin`, the journal delivered to
`bench/ds_standin.py`; `journal`, delivered to a real DataStorage on PostgreSQL) a Gateway
on PostgreSQL (fsync on) is warmed up with wrk for 2 s, then each thread's utime + stime is
read from `/proc/<pid>/task/*/stat` before and after a measured wrk run, and printed as µs per
answered request. The event loop's thread is the process's main thread (its id is the pid);
the others are named by start order (the journal's writer starts before its reader).
"busy" is the event loop's CPU time over the run's wall time: near 100 % the loop is the
bound; well below, it waits.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import audit_delivery, run_wrk
from bench.lifecycle import stop_servers_on_sigterm
from e2ecov.recipes import PostgresServer
from tests.support.services import gateway_process

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (utime + stime) of each thread of `pid`, by thread id."""
    spent: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        spent[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICK
    return spent


def measure(
    audit: str,
    postgres: PostgresServer,
    workload: str,
    connections: int,
    duration: int,
    workdir: Path,
) -> str:
    env = {
        "SIGNALGATE_SERVER__MAXCONCURRENTREQUESTS": "1000",
        "SIGNALGATE_LOGGING__LEVEL": "warning",
        "SIGNALGATE_STORE__DSN": postgres.create_database(f"gateway_{audit}_{time.time_ns()}"),
    }
    with ExitStack() as stack:
        delivery, _ = audit_delivery(audit, stack, workdir, postgres, f"ds_{time.time_ns()}")
        env.update(delivery)
        service = gateway_process(workdir / f"gateway-{audit}", env=env).start()
        stack.callback(service.stop)
        assert service.proc is not None
        pid = service.proc.pid
        run_wrk(service.api_url, workload, 2, connections, workdir)
        before = thread_cpu(pid)
        started = time.monotonic()
        figures = run_wrk(service.api_url, workload, duration, connections, workdir)
        wall = time.monotonic() - started
        after = thread_cpu(pid)
    requests = figures["requests"] or 1
    per_request = {
        tid: (after[tid] - before.get(tid, 0.0)) * 1e6 / requests for tid in sorted(after)
    }
    lines = [
        f"{audit:8s} {workload} c={connections}: {figures['rps']:,.0f} signals/s,"
        f" p99 {figures['p99_ms']:.1f} ms, event loop busy"
        f" {(after[pid] - before[pid]) / wall:.0%}"
    ]
    others = 0
    for tid, micros in per_request.items():
        if tid == pid:
            name = "event loop"
        else:
            others += 1
            name = f"thread {others}"
        if micros >= 0.5:
            lines.append(f"    {name:12s} {micros:7.1f} µs per request")
    lines.append(f"    {'all':12s} {sum(per_request.values()):7.1f} µs per request")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workload", choices=("duplicate", "new"), default="duplicate")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--audit", default="off,standin,journal")
    args = parser.parse_args()
    audits = args.audit.split(",")
    unknown = set(audits) - {"off", "standin", "journal"}
    if unknown:
        parser.error(f"--audit: unknown setting(s) {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="signalgate-threads-") as tmp, ExitStack() as stack:
        postgres = PostgresServer(durable=True).start()
        stack.callback(postgres.cleanup)
        for audit in audits:
            print(
                measure(audit, postgres, args.workload, args.connections, args.duration, Path(tmp))
            )
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    stop_servers_on_sigterm()
    sys.exit(main())
