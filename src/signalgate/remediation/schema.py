"""Versioned schema migrations of the SQL stores, one `NNNN_<what>.sql` file per step.

Files live in `migrations/<backend>/`; a file's number is the schema version it brings the
database to. Each store records the applied version (SQLite: `PRAGMA user_version`;
PostgreSQL: the `schema_migrations` table) and applies the missing files on `open()`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from signalgate.remediation.store import IncompatibleSchema

_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(backend: str) -> list[Migration]:
    """The migration steps of `backend` ("sqlite" or "postgres"), in version order."""
    folder = resources.files("signalgate.remediation") / "migrations" / backend
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{backend} migrations are not numbered 1..n: {versions}")
    return found


def check_not_newer(where: str, current: int, known: int) -> None:
    if current > known:
        raise IncompatibleSchema(
            f"{where} has RR store schema version {current}, but this signalgate knows "
            f"versions up to {known}: upgrade signalgate (or point store.dsn at another "
            "database); the database was left unchanged"
        )
