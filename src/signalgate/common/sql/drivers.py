"""Which driver errors mean "the database cannot serve now" (retry later: 503, or the audit
dead-letter queue) and which are bugs (a 500 that someone must look at).

The line matters: a store that called every driver error "unavailable" would turn a broken
query into a 503 forever, or, in DataStorage, into a 202 and a trip through the dead-letter
queue that replays the same failing statement. So both store families translate exactly
these classes into their `StoreUnavailable` and let everything else propagate.
"""

from __future__ import annotations

import sqlite3
import ssl

import asyncpg

# PostgreSQL (asyncpg): the server is unreachable, refuses or drops us, or has no room.
PG_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # pool acquire, connect or command timeout
    asyncpg.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError included
    asyncpg.InterfaceError,  # connection closed under us, pool closing
    # a pooled connection that got the server's shutdown notice while idle is left in a
    # protocol state its next query cannot leave ("cannot switch to state 12"): a fast
    # restart of PostgreSQL under load answered a few requests 500 with a traceback
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby after failover
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # wrong password, no such role
    asyncpg.exceptions.InvalidCatalogNameError,  # the database does not exist (yet)
    # the role lost a grant (an operator's REVOKE, a migration run as another owner): the
    # statement is right, the database will not run it now; the same statement succeeds once
    # the grant is back (an outside check: DataStorage answered 500, not a queued 202)
    asyncpg.exceptions.InsufficientPrivilegeError,
    asyncpg.exceptions.PostgresSystemError,  # class 58: an I/O error on the server's disk
)

# PostgreSQL: of those, the ones that mean no connection could be made or kept — the server
# is down, starting up or shutting down — rather than a server that answers and does not
# take a statement (read-only, full, a statement past its timeout: `TimeoutError` is an
# `OSError` too, and is not one of these)
PG_UNREACHABLE: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, aborted
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.InterfaceError,  # connection closed under us
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
)

# PostgreSQL: of those, the ones that, on a service's first connection, mean a configuration
# that can never work rather than an outage: the server answers and turns us away for who we
# are (the password, the role, pg_hba.conf), for the database we name, or for a certificate
# that does not verify. A running service still treats them as unavailable (a password being
# rotated, a database being restored: write elsewhere and retry); a starting one stops, since
# waiting would only hide the mistake behind a service that looks up.
PG_REFUSED: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # 28000/28P01: role, password
    asyncpg.exceptions.InvalidCatalogNameError,  # 3D000: no such database
    # 42501 at start: the role may not use the schema (no grants, not the tables' owner, no
    # CONNECT); waited out, a new deployment with the wrong role looked healthy for good
    asyncpg.exceptions.InsufficientPrivilegeError,
    ssl.SSLCertVerificationError,  # the server's certificate does not verify
)

# SQLite: locked past the busy timeout, disk full, I/O error, unreadable or read-only file.
# IntegrityError, ProgrammingError, DataError and the rest are bugs (or tampering).
SQLITE_UNAVAILABLE: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)


def described(exc: BaseException) -> str:
    """`Type: message` of a driver error, saying "no answer in time" where the error says
    nothing of itself (a timeout's text is empty: a lock waited on past the command timeout
    was logged and audited as `PostgreSQL store …: `, an outside check)."""
    return (
        f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__}: no answer in time"
    )
