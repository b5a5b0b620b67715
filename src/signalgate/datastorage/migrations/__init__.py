"""The audit store's schema: `NNNN_<name>.sql` files per backend (package data, so they ship
in the wheel), applied in order by the shared SQL toolkit (`signalgate.common.sql.migrations`).

The highest file number is the schema version this code needs. Stores record applied
versions in `audit_schema_migrations`; a database behind it is migrated (SQLite, and
PostgreSQL with `store.autoMigrate`) or refused with the command that fixes it
(`SchemaBehind`); a database from a newer signalgate is refused on both (`SchemaAhead`).
"""

from __future__ import annotations

from signalgate.common.sql.migrations import Schema
from signalgate.datastorage.errors import SchemaAhead

SCHEMA = Schema(
    package="signalgate.datastorage",
    table="audit_schema_migrations",
    what="audit schema",
    newer=SchemaAhead,
)


def behind_message(current: int, wanted: int) -> str:
    return (
        f"audit database schema is at version {current}, this DataStorage needs {wanted}: "
        "run 'signalgate-datastorage migrate' (or set store.autoMigrate: true)"
    )
