"""DataStorage's commands against the embedded SQLite store, as the README has a user run
them: `migrate` reports what it applied, and the read-only commands never make a database
where there is none."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from signalgate.datastorage.migrations import SCHEMA


def datastorage(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    wrapper: Sequence[str] = (),
    wrapper_args: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """The command run as a user runs it; `wrapper` (with `wrapper_args` after it) runs it
    through another command (`unshare`)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE_")}
    return subprocess.run(
        [*wrapper, *wrapper_args, sys.executable, "-m", "signalgate.datastorage.cli", *args],
        cwd=cwd,
        env={**inherited, **(env or {})},
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


def test_commands_on_a_data_dir_without_a_database_make_none(tmp_path: Path) -> None:
    """A mistyped `--data-dir`: `maintain` printed "created 0" (exit 0) and left an empty
    database there; now it names the path, as the verify commands do."""
    typo = tmp_path / "typo" / "datastorage"
    for args in (("verify-all",), ("verify-chain", "rr-x"), ("maintain",)):
        done = datastorage(*args, "--data-dir", str(typo), cwd=tmp_path)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert done.stdout == ""
        assert done.stderr.strip().startswith(
            f"error: no audit database at '{typo / 'audit.db'}' (--data-dir):"
        )
        assert not typo.exists()


def test_a_missing_database_names_where_the_data_directory_was_given(tmp_path: Path) -> None:
    """The refusal named config key `dataDir` whatever the user had typed: `--data-dir` on
    the command line, an environment variable, a settings file. It names that now."""
    typo = tmp_path / "typo"
    database = typo / "audit.db"
    env = {"SIGNALGATE_DATADIR": str(typo)}
    done = datastorage("verify-all", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stderr
    assert f"'{database}' (environment variable SIGNALGATE_DATADIR):" in done.stderr
    config = tmp_path / "ds.yaml"
    config.write_text(f"dataDir: {typo}\n")
    done = datastorage("verify-all", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert f"'{database}' (dataDir in {config}):" in done.stderr
    done = datastorage("verify-all", cwd=tmp_path)  # the default, ./data/datastorage
    assert done.returncode == 1, done.stderr
    assert "audit.db' (dataDir):" in done.stderr


def test_a_data_directory_that_cannot_be_written_is_named_as_given(tmp_path: Path) -> None:
    """`serve` and `check-config` refused an unwritable `--data-dir` as config key `dataDir`,
    a setting the user had not typed anywhere."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a directory under a file cannot be made, even by root
    for command in ("serve", "check-config"):
        done = datastorage(command, "--data-dir", str(blocker / "ds"), cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"error: --data-dir: '{blocker / 'ds'}'"), done.stderr
        assert "cannot be written" in done.stderr
    env = {"SIGNALGATE_DLQ__PATH": str(blocker / "dlq" / "letters.jsonl")}
    done = datastorage("check-config", "--data-dir", "ds", cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: environment variable SIGNALGATE_DLQ__PATH: "), done.stderr


def test_verify_chain_of_an_id_without_events_does_not_print_valid(tmp_path: Path) -> None:
    assert datastorage("migrate", "--data-dir", "ds", cwd=tmp_path).returncode == 0
    done = datastorage("verify-chain", "--data-dir", "ds", "rr-never-written", cwd=tmp_path)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["events"] == 0 and report["valid"] is False
    assert "no audit events stored for 'rr-never-written'" in done.stderr


def test_dead_letter_commands_on_a_data_dir_that_is_not_there_name_it(tmp_path: Path) -> None:
    """`dead-letters` said `{"dead": 0}` of a mistyped directory, and `replay-dlq`
    "replayed 0": an operator read that as "nothing was buried", "nothing was waiting"."""
    typo = tmp_path / "typo" / "datastorage"
    for args in (("dead-letters",), ("requeue-dead",), ("replay-dlq",)):
        done = datastorage(*args, "--data-dir", str(typo), cwd=tmp_path)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert done.stdout == ""
        assert f"no dead-letter queue directory '{typo}' (--data-dir)" in done.stderr
        assert not typo.exists()
    # a data directory that is there, with no letter ever queued, is an empty queue
    assert datastorage("migrate", "--data-dir", "ds", cwd=tmp_path).returncode == 0
    listed = datastorage("dead-letters", "--data-dir", "ds", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout.splitlines()[-1])["dead"] == 0


def test_a_queue_directory_on_a_read_only_file_system_is_a_setting_refused(
    tmp_path: Path,
) -> None:
    """A dead-letter file's directory on a read-only file system (a container's root) stops
    `serve` before the database is tried, as `check-config` refuses it: exit 2, a settings
    error naming the setting, and saying the file system is read-only (it said "Permission
    denied", a `chmod` that would mend nothing). Run in a user and mount namespace of its
    own, where a read-only tmpfs can be mounted without privileges."""
    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False).returncode
    ):
        pytest.skip("no user namespaces here to mount a read-only file system in")
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    env = {
        "SIGNALGATE_STORE__DSN": "postgresql://audit:secret@127.0.0.1:1/audit",  # down
        "SIGNALGATE_DLQ__PATH": str(read_only / "dlq" / "letters.jsonl"),
    }
    for command in ("serve", "check-config"):
        done = datastorage(
            command,
            cwd=tmp_path,
            env=env,
            wrapper=["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"'],
            wrapper_args=[str(read_only)],
        )
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.startswith(
            f"error: environment variable SIGNALGATE_DLQ__PATH: '{read_only / 'dlq'}' "
            f"cannot be written ('{read_only}': Read-only file system)"
        ), (command, done.stderr)
