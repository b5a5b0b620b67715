"""Every benchmark the README and docs/ tell a reader to run (`python bench/NAME.py`) exists
and starts from the repository's root as written: its `--help` answers, with nothing on
`PYTHONPATH` but `src` (what the venv's editable install gives), so a script that imports the
repository's `bench` or `tests` packages puts the root on `sys.path` itself; and every flag a
page writes after it on the same line is one the script takes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


COMMAND = re.compile(r"\bpython3? (bench/[a-z_0-9]+\.py)\b([^`\n]*)")


def documented() -> dict[str, set[str]]:
    """Each script the pages name → the flags written after it."""
    flags: dict[str, set[str]] = {}
    for page in PAGES:
        for script, rest in COMMAND.findall(page.read_text()):
            flags.setdefault(script, set()).update(re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest))
    return flags


def test_every_documented_benchmark_starts_from_the_root() -> None:
    flags = documented()
    scripts = sorted(flags)
    assert "bench/ingest.py" in scripts, "no `python bench/….py` found: wrong pages?"
    missing = [script for script in scripts if not (ROOT / script).is_file()]
    assert not missing, f"the docs name benchmarks that do not exist: {missing}"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT / "src")
    runs = {
        script: subprocess.Popen(
            [sys.executable, script, "--help"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for script in scripts
    }
    failed, unknown = {}, {}
    for script, run in runs.items():
        output, _ = run.communicate()
        if run.returncode != 0 or "usage:" not in output:
            failed[script] = output.strip().splitlines()[-1:] or [f"exit {run.returncode}"]
            continue
        taken = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", output))
        if flags[script] - taken:
            unknown[script] = sorted(flags[script] - taken)
    assert not failed, f"`python bench/….py --help` from the root fails: {failed}"
    assert not unknown, f"the docs give benchmarks flags they do not take: {unknown}"
