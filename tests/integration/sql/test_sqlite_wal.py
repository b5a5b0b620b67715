"""Several processes opening one new SQLite file at the same moment all get it in WAL mode.

SQLite refuses some of them "database is locked" at once, without waiting out the busy
timeout (its deadlock avoidance); `use_wal` retries. Each round starts processes that wait
for a common signal (a file appearing) and then switch the same fresh file; with a bare
`PRAGMA journal_mode = WAL` most rounds of six have a refused process.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

PROCESSES = 6
ROUNDS = 8

_OPENER = textwrap.dedent(
    """
    import os, sqlite3, sys, time
    from signalgate.common.sql.sqlite_wal import use_wal

    path, ready, go = sys.argv[1:4]
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.0005)
    use_wal(conn, busy_timeout=10)
    print(conn.execute("PRAGMA journal_mode").fetchone()[0])
    """
)


def open_at_once(directory: Path) -> list[subprocess.CompletedProcess[str]]:
    path, go = directory / "rr.db", directory / "go"
    readies = [directory / f"ready-{n}" for n in range(PROCESSES)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, str(path), str(ready), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ready in readies
    ]
    deadline = time.monotonic() + 60
    while not all(ready.exists() for ready in readies) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def test_processes_opening_a_new_file_at_once_all_switch_it_to_wal(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        directory = tmp_path / f"round-{round_}"
        directory.mkdir()
        results = open_at_once(directory)
        refused = [r.stderr.strip().splitlines()[-1] for r in results if r.returncode != 0]
        assert refused == [], f"round {round_}: {refused}"
        assert [r.stdout.strip() for r in results] == ["wal"] * PROCESSES
        conn = sqlite3.connect(directory / "rr.db")
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            conn.close()
