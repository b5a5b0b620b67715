"""DataStorage's commands against the embedded SQLite store, as the README has a user run
them: `migrate` reports what it applied, and the read-only commands never make a database
where there is none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from signalgate.datastorage.migrations import SCHEMA


def datastorage(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "signalgate.datastorage.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_applies_then_reports_the_sqlite_schema_up_to_date(tmp_path: Path) -> None:
    first = datastorage("migrate", "--data-dir", "mig", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    every = [step.version for step in SCHEMA.migrations("sqlite")]
    assert first.stdout.strip() == f"applied migrations: {every}"
    assert (tmp_path / "mig" / "audit.db").is_file()

    again = datastorage("migrate", "--data-dir", "mig", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "schema is up to date"


def test_verify_commands_on_a_data_dir_without_a_database_make_none(tmp_path: Path) -> None:
    typo = tmp_path / "typo" / "datastorage"
    for args in (("verify-all",), ("verify-chain", "rr-x")):
        done = datastorage(*args, "--data-dir", str(typo), cwd=tmp_path)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert done.stdout == ""
        assert done.stderr.strip().startswith(f"error: no audit database at '{typo / 'audit.db'}'")
        assert not typo.exists()


def test_verify_chain_of_an_id_without_events_does_not_print_valid(tmp_path: Path) -> None:
    assert datastorage("migrate", "--data-dir", "ds", cwd=tmp_path).returncode == 0
    done = datastorage("verify-chain", "--data-dir", "ds", "rr-never-written", cwd=tmp_path)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["events"] == 0 and report["valid"] is False
    assert "no audit events stored for 'rr-never-written'" in done.stderr
