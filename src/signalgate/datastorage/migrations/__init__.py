"""Versioned schema migrations: `NNNN_<name>.sql` files per backend, applied in order.

The highest file number is the schema version this code needs. Stores record applied
versions in `audit_schema_migrations`; a database behind it is migrated (SQLite, and
PostgreSQL with `store.autoMigrate`) or refused with the command that fixes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

Backend = Literal["postgres", "sqlite"]

_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

VERSION_TABLE = "audit_schema_migrations"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load(backend: Backend) -> list[Migration]:
    """The backend's migrations in version order (package data, so they ship in the wheel)."""
    folder = resources.files(__name__).joinpath(backend)
    found = []
    for entry in folder.iterdir():
        match = _NAME_RE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def latest(backend: Backend) -> int:
    migrations = load(backend)
    return migrations[-1].version if migrations else 0


def behind_message(current: int, wanted: int) -> str:
    return (
        f"audit database schema is at version {current}, this DataStorage needs {wanted}: "
        "run 'signalgate-datastorage migrate' (or set store.autoMigrate: true)"
    )
