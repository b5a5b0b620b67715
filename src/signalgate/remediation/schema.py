"""The RR store's schema: `migrations/<backend>/NNNN_<what>.sql`, one file per version.

The runner, the version table and the refusal of a newer database are the shared SQL
toolkit's (`signalgate.common.sql.migrations`); this module only names the RR store's files,
its version table and its error. A SQLite file from before the version table kept its version
in `PRAGMA user_version`; it is adopted on its first open.
"""

from __future__ import annotations

from signalgate.common.sql.migrations import Backend, Migration, Schema
from signalgate.remediation.store import IncompatibleSchema

SCHEMA = Schema(
    package="signalgate.remediation",
    table="remediation_schema_migrations",
    what="RR store schema",
    newer=IncompatibleSchema,
    adopt_user_version=True,
)


def migrations(backend: Backend) -> list[Migration]:
    """The migration steps of `backend` ("sqlite" or "postgres"), in version order."""
    return SCHEMA.migrations(backend)
