"""Every exact query filter leads an index of the SQLite schema, as docs/datastorage.md says
("Storage and schema"); test_ds_postgres.py checks the PostgreSQL schema the same way. A
filter added to `EXACT_FILTERS` without its migration fails here, not as a slow query."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from signalgate.common.sql.migrations import sqlite_migrate
from signalgate.datastorage.migrations import SCHEMA
from signalgate.datastorage.store import EXACT_FILTERS


def test_every_exact_filter_leads_an_sqlite_index(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    try:
        sqlite_migrate(conn, SCHEMA, "test")
        indexes = [row[1] for row in conn.execute("PRAGMA index_list('audit_events')")]
        leading = {conn.execute(f"PRAGMA index_info('{name}')").fetchone()[2] for name in indexes}
    finally:
        conn.close()
    assert set(EXACT_FILTERS) <= leading, sorted(set(EXACT_FILTERS) - leading)
