"""`e2e/summary.py`: the closing lines of `make e2e-coverage`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[3] / "e2e" / "summary.py"


def summarise(artifacts: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(artifacts)], capture_output=True, text=True, check=True
    )
    return result.stdout


def test_percent_comes_from_the_counts_not_the_rounded_figure(tmp_path: Path) -> None:
    # 1541 of 4126 is 37.348%: run.json's rounded 37.35 must not print as 37.4.
    record = {
        "run_id": "r1",
        "exit_code": 0,
        "totals": {
            "services": {"datastorage": {"statements": 4126, "missed": 2585, "percent": 37.35}},
            "combined": {"statements": 4126, "missed": 1193, "percent": 71.09},
        },
        "phases": [{"name": "test", "duration_s": 12.44}],
    }
    (tmp_path / "run.json").write_text(json.dumps(record))
    (tmp_path / "coverage.json").write_text("{}")
    out = summarise(tmp_path)
    assert "datastorage     37.3%  (4126 statements, 2585 missed)" in out
    assert "combined        71.1%" in out
    assert "exit 0 (ok)" in out and "phases: test 12.4s" in out
    assert f"JSON         {tmp_path / 'coverage.json'}" in out
    assert "HTML" not in out


def test_missing_run_record_is_said_not_raised(tmp_path: Path) -> None:
    assert "no run.json" in summarise(tmp_path)
