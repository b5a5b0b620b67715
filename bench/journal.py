"""The Gateway's audit journal alone: what a durable group write costs, and what commits do.

    python bench/journal.py [--seconds 3] [--concurrency 16] [--event-bytes 1200]
                            [--group-bytes 10000] [--writes 400] [--rounds 2]
                            [--busy-slice-us 50]

Two parts, each printed as figures measured side by side in one run (this machine's disk
and CPU drift by tens of per cent within minutes, so only a ratio of one round means much):

- **the disk**: `--writes` synchronous (`O_DSYNC`) writes of `--group-bytes` each, appended to
  a file (what the journal did before) and written over blocks zeroed ahead, 1 MiB at a time
  (what it does now): µs of wall time and of system time per write, and their ratio. This is
  why the journal zeroes ahead: an appended write also writes the file's new size.
- **the journal**: `--concurrency` tasks each staging one event of `--event-bytes` and
  awaiting `commit()`, for `--seconds`, as the Gateway's requests do: events per second, p50
  and p99 commit latency, and the process's user and system CPU µs per event (the writer
  thread's included). Each round runs twice: on an otherwise idle event loop, and beside a
  task that keeps the loop busy as request handling does (Python work in slices of
  `--busy-slice-us`, each ended by a socket send and receive, which let go of the GIL, and a
  turn of the loop). The writer thread needs the GIL to pick a group up and again once its
  write returns; beside a busy loop it waits for it (the interpreter hands the GIL over on
  the holder's system calls only when the waiting thread wins the race, and forces a switch
  only after 5 ms without one), so the gap between the two rows is what sharing the
  interpreter with the requests costs each commit.

The journal lives in a temporary directory under `build/` (the disk the Gateway's data
directory is on here), not in /tmp, which may be a memory file system.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from signalgate.audit.journal import ZEROED_AHEAD, Journal

ROOT = Path(__file__).resolve().parents[1]


def cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def disk_writes(
    directory: Path, group_bytes: int, writes: int, zeroed: bool
) -> tuple[float, float]:
    """µs of wall time and of system time per synchronous write of one group."""
    path = directory / ("zeroed.bin" if zeroed else "appended.bin")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DSYNC
    fd = os.open(path, flags if zeroed else flags | os.O_APPEND, 0o644)
    data, ahead = b"x" * group_bytes, 0
    try:
        started, (_, sys_before) = time.perf_counter(), cpu()
        for index in range(writes):
            offset = index * group_bytes
            if not zeroed:
                os.write(fd, data)
                continue
            if offset + group_bytes > ahead:
                os.pwrite(fd, bytes(ZEROED_AHEAD), ahead)
                ahead += ZEROED_AHEAD
            os.pwrite(fd, data, offset)
        wall, (_, sys_after) = time.perf_counter() - started, cpu()
    finally:
        os.close(fd)
        path.unlink()
    return wall * 1e6 / writes, (sys_after - sys_before) * 1e6 / writes


async def keep_busy(stop: float, slice_us: float) -> None:
    """Stands in for request handling on the loop: Python work in slices of `slice_us`, each
    ended by a short system call that lets go of the GIL (a request's socket send) and a
    turn of the loop."""
    sender, receiver = socket.socketpair()
    try:
        while time.perf_counter() < stop:
            until = time.perf_counter() + slice_us / 1e6
            while time.perf_counter() < until:
                pass
            sender.send(b"x")
            receiver.recv(1)
            await asyncio.sleep(0)
    finally:
        sender.close()
        receiver.close()


async def commits(
    directory: Path, seconds: float, concurrency: int, event_bytes: int, busy_slice_us: float
) -> dict[str, float]:
    """Commits by `concurrency` tasks for `seconds`; beside a busy loop when
    `busy_slice_us` is set (0: an otherwise idle loop)."""
    journal = Journal(directory, segment_bytes=8 << 20)
    await journal.open()
    event = {
        "event_id": "bench",
        "event_type": "gateway.signal.deduplicated",
        "event_timestamp": "2026-01-01T00:00:00.000000Z",
        "event_data": {"original_payload": "x" * event_bytes},
    }
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def request() -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            journal.stage(event)
            await journal.commit()
            latencies.append(time.perf_counter() - started)

    started, (user, system) = time.perf_counter(), cpu()
    busy = [keep_busy(stop, busy_slice_us)] if busy_slice_us else []
    await asyncio.gather(*(request() for _ in range(concurrency)), *busy)
    wall, (user_after, system_after) = time.perf_counter() - started, cpu()
    await journal.close()
    done = len(latencies)
    latencies.sort()
    return {
        "events_s": done / wall,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[int(done * 0.99)] * 1e3,
        "user_us": (user_after - user) * 1e6 / done,
        "sys_us": (system_after - system) * 1e6 / done,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--event-bytes", type=int, default=1200)
    parser.add_argument("--group-bytes", type=int, default=10_000)
    parser.add_argument("--writes", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--busy-slice-us", type=float, default=50.0)
    args = parser.parse_args()
    (ROOT / "build").mkdir(exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="bench-journal-", dir=ROOT / "build"))
    try:
        print(f"{'round':>5} {'write':>9} {'wall us':>8} {'sys us':>7}")
        for round_ in range(1, args.rounds + 1):
            figures = {}
            for zeroed in (False, True):
                figures[zeroed] = disk_writes(directory, args.group_bytes, args.writes, zeroed)
                wall, system = figures[zeroed]
                name = "zeroed" if zeroed else "appended"
                print(f"{round_:>5} {name:>9} {wall:8.0f} {system:7.0f}")
            print(
                f"{round_:>5} {'ratio':>9} {figures[True][0] / figures[False][0]:8.2f} "
                f"{figures[True][1] / figures[False][1]:7.2f}"
            )
        print()
        print(
            f"{'round':>5} {'loop':>5} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7}"
            f" {'user us':>8} {'sys us':>7}"
        )
        for round_ in range(1, args.rounds + 1):
            runs = {}
            for loop, slice_us in (("idle", 0.0), ("busy", args.busy_slice_us)):
                shutil.rmtree(directory / "journal", ignore_errors=True)
                runs[loop] = run = uvloop.run(
                    commits(
                        directory / "journal",
                        args.seconds,
                        args.concurrency,
                        args.event_bytes,
                        slice_us,
                    )
                )
                print(
                    f"{round_:>5} {loop:>5} {run['events_s']:9.0f} {run['p50_ms']:7.2f}"
                    f" {run['p99_ms']:7.2f} {run['user_us']:8.1f} {run['sys_us']:7.1f}"
                )
            idle, busy = runs["idle"], runs["busy"]
            print(
                f"{round_:>5} {'ratio':>5} {busy['events_s'] / idle['events_s']:9.2f}"
                f" {busy['p50_ms'] / idle['p50_ms']:7.2f} {busy['p99_ms'] / idle['p99_ms']:7.2f}"
            )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
