"""Where the Gateway's CPU goes under load: py-spy samples a real Gateway driven by wrk.

Starts one Gateway (SQLite or PostgreSQL with fsync on; audit off, journal with a
DataStorage process on SQLite, or standin: the journal delivered to bench/ds_standin.py, so
the Gateway's own audit work is sampled without DataStorage on the same cores), drives one
workload with
wrk (the same script as bench/ingest.py) while `py-spy record` samples the process, then
prints the functions with the most samples, by self time (the frame on top of the stack) and
by inclusive time (anywhere on the stack), and the CPU µs per request. The raw collapsed
stacks are kept (--out) for a flame graph (e.g. `inferno-flamegraph` or speedscope).

    python bench/profile.py [--backend postgres] [--workload duplicate] [--duration 10]
                            [--connections 16] [--audit off] [--gil] [--top 30]
                            [--sample gateway] [--out build/profile/gateway.folded]

`--audit journal --sample datastorage` samples DataStorage instead (on PostgreSQL when the
backend is, as in bench/ingest.py); the CPU µs printed are then DataStorage's per signal.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import audit_delivery, measured_wrk, run_wrk
from bench.lifecycle import stop_servers_on_sigterm
from e2ecov.recipes import PostgresServer
from tests.support.services import gateway_process

PY_SPY = Path(sys.executable).parent / "py-spy"
_LINE = re.compile(r":\d+\)$")


def summarize(folded: Path, top: int) -> str:
    """Top functions by self and inclusive samples, from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        # one entry per function: py-spy names each frame with its line
        frames = [_LINE.sub(")", f) for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples"]
    for title, counter in (("self", own), ("inclusive", inclusive)):
        lines.append(f"\ntop {top} by {title} samples:")
        for frame, count in counter.most_common(top):
            lines.append(f"{100 * count / max(total, 1):6.1f}%  {frame}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--workload", choices=("duplicate", "new"), default="duplicate")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--audit",
        choices=("off", "journal", "standin"),
        default="off",
        help="journal: with DataStorage; standin: with the DataStorage stand-in",
    )
    parser.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the GIL: Python CPU,"
        " without threads waiting on a disk or a lock",
    )
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--sample",
        choices=("gateway", "datastorage"),
        default="gateway",
        help="the process py-spy samples (datastorage: with --audit journal)",
    )
    # under build/ (ignored): a default in the working directory was committed by mistake
    parser.add_argument("--out", type=Path, default=Path("build/profile/gateway.folded"))
    parser.add_argument("--summarize", type=Path, help="only print the top of a saved profile")
    args = parser.parse_args()
    if args.summarize:
        print(summarize(args.summarize, args.top))
        return 0
    if args.sample == "datastorage" and args.audit != "journal":
        print("bench/profile.py: --sample datastorage needs --audit journal", file=sys.stderr)
        return 2
    for tool, hint in (("wrk", "apt-get install wrk"), (str(PY_SPY), "pip install py-spy")):
        if shutil.which(tool) is None:
            print(f"bench/profile.py needs {tool}: {hint}", file=sys.stderr)
            return 2

    with tempfile.TemporaryDirectory(prefix="signalgate-profile-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        env = {
            "SIGNALGATE_SERVER__MAXCONCURRENTREQUESTS": "1000",
            "SIGNALGATE_LOGGING__LEVEL": "warning",
        }
        if args.backend == "postgres":
            postgres = PostgresServer(durable=True).start()
            stack.callback(postgres.cleanup)
            env["SIGNALGATE_STORE__DSN"] = postgres.url
        delivery, sink_pid = audit_delivery(
            args.audit, stack, workdir, postgres if args.backend == "postgres" else None
        )
        env.update(delivery)
        service = gateway_process(workdir / "gateway", env=env).start()
        assert service.proc is not None
        sampled = service.proc.pid
        if args.sample == "datastorage":
            assert sink_pid is not None
            sampled = sink_pid
        try:
            run_wrk(service.api_url, args.workload, 2, args.connections, workdir)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            spy = subprocess.Popen(
                [
                    *(str(PY_SPY), "record", "--pid", str(sampled), "--format", "raw"),
                    *("--rate", "250", "--nonblocking", "--output", str(args.out)),
                    *(["--gil"] if args.gil else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
            figures = measured_wrk(
                sampled,
                service.api_url,
                args.workload,
                args.duration,
                args.connections,
                workdir,
            )
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            spy.wait(60)
        finally:
            service.stop()

    print(summarize(args.out, args.top))
    print(
        f"\n{args.backend} audit {args.audit} {args.workload} c={args.connections}:"
        f" {figures['rps']:.0f} signals/s,"
        f" p99 {figures['p99_ms']:.2f} ms, {figures['cpu_us']:.0f} µs of {args.sample}'s CPU"
        " per request"
        f" (py-spy's sampling included); collapsed stacks in {args.out}"
    )
    return 0


if __name__ == "__main__":
    stop_servers_on_sigterm()
    sys.exit(main())
