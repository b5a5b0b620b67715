"""The closing lines of `make e2e-coverage`: total coverage per service and where the reports are.

Reads e2ecov's `run.json` (so it also works after a failed run, saying what is missing) and
exits 0; the run's own exit code is what `make` returns.

    python3 e2e/summary.py [ARTIFACTS]        # default: build/e2e
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPORTS = (
    ("text", "e2e-coverage.txt"),
    ("functions", "e2e-coverage-func.txt"),
    ("HTML", "html/index.html"),
    ("JSON", "coverage.json"),
    ("LCOV", "coverage.lcov"),
    ("Cobertura", "coverage.xml"),
    ("Markdown", "summary.md"),
    ("run record", "run.json"),
    ("diagnostics", "diagnostics/summary.txt"),
)
EXIT_MEANING = {
    0: "ok",
    1: "tests failed",
    2: "invalid stack file or arguments",
    3: "the stack could not be brought up",
    4: "coverage lost or below fail_under",
    129: "stopped by SIGHUP",
    130: "interrupted (SIGINT)",
    143: "stopped by SIGTERM",
}


def line(name: str, figures: dict[str, float]) -> str:
    """One total, its percent from the counts (run.json's percent is already rounded once)."""
    statements, missed = int(figures["statements"]), int(figures["missed"])
    percent = 100.0 * (statements - missed) / statements if statements else 100.0
    return f"  {name:<14} {percent:5.1f}%  ({statements} statements, {missed} missed)"


def main(argv: list[str]) -> int:
    artifacts = Path(argv[1] if len(argv) > 1 else "build/e2e").resolve()
    try:
        record = json.loads((artifacts / "run.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"e2e coverage: no run.json in {artifacts} ({exc}); did e2ecov run?")
        return 0
    code = record.get("exit_code")
    print()
    failed = artifacts / "failed-run"
    if (failed / "run.json").is_file():  # this run did not finish its tests (see e2ecov)
        latest = json.loads((failed / "run.json").read_text())
        print(
            f"End-to-end run {latest.get('run_id')} did not finish its tests: exit "
            f"{latest.get('exit_code')} ({EXIT_MEANING.get(latest.get('exit_code'), 'unknown')});"
            f" its diagnostics are in {failed / 'diagnostics'}.\nThe reports below are the "
            "previous complete run's."
        )
    print(
        f"End-to-end coverage — run {record.get('run_id')}, exit {code} "
        f"({EXIT_MEANING.get(code, 'unknown')})"
    )
    totals = record.get("totals") or {}
    services = totals.get("services") or {}
    if not services:
        print("  no coverage totals (see the first failure above)")
    for name, figures in sorted(services.items()):
        print(line(name, figures))
    if "combined" in totals:
        print(line("combined", totals["combined"]))
    phases = ", ".join(f"{p['name']} {p['duration_s']:.1f}s" for p in record.get("phases", []))
    if phases:
        print(f"  phases: {phases}")
    print("Reports:")
    for label, relative in REPORTS:
        path = artifacts / relative
        if path.exists():
            print(f"  {label:<12} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
