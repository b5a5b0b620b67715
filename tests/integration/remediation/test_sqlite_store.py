"""SQLite-only behaviour: file modes, schema versions, locks, several processes on one file."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from signalgate.remediation.schema import migrations
from signalgate.remediation.sqlite import SqliteRemediationStore
from signalgate.remediation.store import (
    Decision,
    IncompatibleSchema,
    ListQuery,
    StoreUnavailable,
)
from tests.integration.remediation.rrcases import later, make_rr


async def test_open_sets_wal_and_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "rr.db"
    store = SqliteRemediationStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        recorded = conn.execute("SELECT version FROM remediation_schema_migrations").fetchall()
        assert [v for (v,) in recorded] == [m.version for m in migrations("sqlite")]
    conn.close()
    # Opening again finds the schema current and keeps the data.
    again = SqliteRemediationStore(path)
    await again.open()
    try:
        await again.record_firing(make_rr(), later(0))
        assert len((await again.list(ListQuery())).items) == 1
    finally:
        await again.close()


async def test_a_newer_schema_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "rr.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    known = migrations("sqlite")[-1].version
    store = SqliteRemediationStore(path)
    with pytest.raises(IncompatibleSchema, match=rf"version 99.* up to {known}"):
        await store.open()
    await store.close()


async def test_missing_directory_is_unavailable_with_the_path(tmp_path: Path) -> None:
    store = SqliteRemediationStore(tmp_path / "nowhere" / "rr.db")
    with pytest.raises(StoreUnavailable, match="nowhere"):
        await store.open()


async def test_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "rr.db"
    path.write_bytes(b"this is not an sqlite file" * 100)
    with pytest.raises(StoreUnavailable, match=r"rr\.db"):
        await SqliteRemediationStore(path).open()


async def test_a_locked_database_is_unavailable_after_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "rr.db"
    store = SqliteRemediationStore(path, busy_timeout=0.3)
    await store.open()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        rr = (await store.record_firing(make_rr(), later(0))).rr
        blocker.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.record_firing(make_rr(at=later(1)), later(1))
        waited = time.monotonic() - started
        assert 0.25 <= waited < 3
        # The event loop kept running meanwhile (the wait is in the store's thread).
        blocker.execute("ROLLBACK")
        again = await store.record_firing(make_rr(at=later(2)), later(2))
        assert (again.decision, again.rr.name) == (Decision.DUPLICATE, rr.name)
        assert again.rr.deduplication.occurrence_count == 2
    finally:
        blocker.close()
        await store.close()


async def test_a_lock_does_not_block_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "rr.db"
    store = SqliteRemediationStore(path, busy_timeout=0.5)
    await store.open()
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        release = threading.Timer(0.2, lambda: blocker.execute("ROLLBACK"))
        release.start()
        result = await store.record_firing(make_rr(), later(0))  # waits for the lock, then runs
        ticker.cancel()
        release.join()
        assert result.decision is Decision.CREATED
        assert ticks >= 10
    finally:
        blocker.close()
        await store.close()


_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from tests.integration.remediation.rrcases import later, make_rr
    from signalgate.remediation.sqlite import SqliteRemediationStore

    async def main() -> None:
        store = SqliteRemediationStore(Path(sys.argv[1]), busy_timeout=30)
        await store.open()
        try:
            await asyncio.gather(*(
                store.record_firing(make_rr(f"pod-{i % 5}", at=later(i)), later(i))
                for i in range(int(sys.argv[2]))
            ))
        finally:
            await store.close()

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_several_processes_share_one_file_race_free(tmp_path: Path) -> None:
    path = tmp_path / "rr.db"
    here = str(Path(__file__).parents[3])  # the checkout: tests.integration... imports
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(path), "100", here]) for _ in range(4)
    ]
    codes = await asyncio.gather(*(asyncio.to_thread(p.wait, 60) for p in procs))
    assert codes == [0, 0, 0, 0]
    store = SqliteRemediationStore(path)
    await store.open()
    try:
        items = (await store.list(ListQuery())).items
    finally:
        await store.close()
    assert len(items) == 5
    assert sorted(rr.deduplication.occurrence_count for rr in items) == [80] * 5
