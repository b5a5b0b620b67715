"""DataStorage's CPU per audit event, in process: what a batch costs before the database.

    python bench/ds_cpu.py [--rounds 30] [--batches 10] [--shape gateway]
                           [--against /path/to/other/checkout] [--pairs 3]

Builds batches of 100 events as `bench/audit.py` sends them (`--shape gateway`: the size of
the Gateway's, the alert's body inlined, 2.5 KB each) and times, with `time.process_time`
(this process's CPU, so other work on the machine matters less than in wall time), three
parts of a batch write per event:

- parse: the body as `read_body` and the app read it (`check_json_text` with the audit
  rule, `check_json_integers`, `orjson.loads`);
- validate: `validate_batch` (the model, `event_data`'s checks, the canonical bytes);
- write: the store's Python before the database: `plan_write` (the chain's
  hashes) and the COPY records PostgreSQL's store builds (`postgres._records`).

Each part is timed over all batches in a round, `--rounds` times; the median and the range
(min - max) of the per-event figure are printed; the garbage collector is set as the service
sets it (`GC_THRESHOLDS`, start-up objects frozen). `--against` runs the same measurement in a
child process on another checkout's `src` (e.g. the code before a change) and on this one,
interleaved `--pairs` times, and prints them side by side: this machine's speed drifts
within minutes, so only figures measured in turn compare.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BATCH = 100
PARTS = ("parse", "validate", "write")


class Rounds:
    """The measurement in this interpreter (its `signalgate`, from `sys.path`: the caller
    chooses the tree): `round()` times each part once over all batches."""

    def __init__(self, batches: int, shape: str) -> None:
        from bench.audit import batch_body
        from signalgate.common.json_numbers import check_json_integers
        from signalgate.common.server import GC_THRESHOLDS
        from signalgate.common.text import AUDIT_TEXT, check_json_text
        from signalgate.datastorage import postgres
        from signalgate.datastorage.app import _parse_json_body
        from signalgate.datastorage.events import validate_batch
        from signalgate.datastorage.store import plan_write

        def parse(body: bytes) -> Any:
            check_json_text(body, AUDIT_TEXT)
            check_json_integers(body)
            return _parse_json_body(body)

        def write(events: Any) -> None:
            rows, _, _ = plan_write(events, {}, {}, {})
            postgres._records(rows)

        self.parts: tuple[Callable[[bytes], Any], Callable[..., Any], Callable[[Any], None]]
        self.parts = (parse, validate_batch, write)
        self.bodies = [batch_body(BATCH, n * 131, shape) for n in range(batches)]
        self.round()
        # the collector as the service sets it after its start: what is alive now frozen
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        self.round()  # warm-up: caches, the model's schema

    def round(self) -> dict[str, float]:
        """Per-event µs of each part: each batch parsed, validated and planned in turn, as
        the service does it (one batch's objects alive at a time), each part timed apart."""
        parse, validate, write = self.parts
        spent = dict.fromkeys(PARTS, 0.0)
        now = datetime.now(UTC)
        for body in self.bodies:
            started = time.process_time()
            payload = parse(body)
            parsed = time.process_time()
            events = validate(payload, now, BATCH)
            validated = time.process_time()
            write(events)
            written = time.process_time()
            spent["parse"] += parsed - started
            spent["validate"] += validated - parsed
            spent["write"] += written - validated
        return {part: value * 1e6 / (BATCH * len(self.bodies)) for part, value in spent.items()}


def _serve(batches: int, shape: str) -> None:
    """A child's loop: one round per line read, its figures as one JSON line."""
    rounds = Rounds(batches, shape)
    print("ready", flush=True)
    for _ in sys.stdin:
        print(json.dumps(rounds.round()), flush=True)


class _Child:
    """`_serve` in a fresh interpreter on `src`'s `signalgate`."""

    def __init__(self, src: Path, batches: int, shape: str) -> None:
        code = (
            "import sys; "
            f"sys.path[:0] = [{str(src)!r}, {str(ROOT)!r}]; "
            "from bench.ds_cpu import _serve; "
            f"_serve({batches}, {shape!r})"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        if self.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the child on {src} did not start")

    def round(self) -> dict[str, float]:
        self.stdin.write("\n")
        self.stdin.flush()
        figures: dict[str, float] = json.loads(self.stdout.readline())
        return figures

    def close(self) -> None:
        self.stdin.close()
        self.process.wait(30)


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.1f} ({min(values):.1f} - {max(values):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--shape", choices=("small", "gateway"), default="gateway")
    parser.add_argument("--against", type=Path, help="another checkout, measured in turn")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    print(
        f"DataStorage CPU µs per event ({args.shape} events, batches of {BATCH}, "
        f"{args.batches} batches x {args.rounds} rounds; median (min - max) of the rounds)"
    )
    if args.against is None:
        sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
        rounds = Rounds(args.batches, args.shape)
        measured = [rounds.round() for _ in range(args.rounds)]
        for part in (*PARTS, "total"):
            print(f"  {part:9} {_summary([_part(f, part) for f in measured])}")
        return 0
    trees = {"before": args.against / "src", "after": ROOT / "src"}
    print(f"  before: {trees['before']}\n  after:  {trees['after']}")
    print(
        "  rounds alternate between the two trees (each in its own interpreter); "
        "after/before: the median of the rounds' ratios, and their range"
    )
    print(f"  {'pair':5} {'part':9} {'before':>24} {'after':>24}  after/before")
    for pair in range(1, args.pairs + 1):
        children = {name: _Child(src, args.batches, args.shape) for name, src in trees.items()}
        try:
            figures: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
            for number in range(args.rounds):
                # which tree goes first alternates too
                order = list(trees) if number % 2 == 0 else list(reversed(trees))
                for name in order:
                    figures[name].append(children[name].round())
        finally:
            for child in children.values():
                child.close()
        for part in (*PARTS, "total"):
            before = [_part(f, part) for f in figures["before"]]
            after = [_part(f, part) for f in figures["after"]]
            ratios = [a / b for a, b in zip(after, before, strict=True)]
            print(
                f"  {pair:<5} {part:9} {_summary(before):>24} {_summary(after):>24}  "
                f"{statistics.median(ratios):.2f} ({min(ratios):.2f} - {max(ratios):.2f})"
            )
    return 0


def _part(figures: dict[str, float], part: str) -> float:
    return sum(figures.values()) if part == "total" else figures[part]


if __name__ == "__main__":
    sys.exit(main())
