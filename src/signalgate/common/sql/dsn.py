"""Database connection strings as messages and logs may show them."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    try:
        parts = urlsplit(dsn)
        if parts.password is None:
            return dsn
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparseable dsn>"
