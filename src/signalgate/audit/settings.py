"""Every audit delivery option, declared once: the `datastorage` and `audit` settings sections.

The Gateway's settings model embeds these two sections; the sink, journal and relay read them
and hold no defaults of their own. (Kept free of the DataStorage server's modules: the Gateway
must not import DataStorage's request models to deliver to it.)
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from signalgate.common.config import ByteSize, Duration, Section, check_url


class DeliverySettings(Section):
    """`datastorage.*`: where the audit trail goes and how it is sent."""

    url: str | None = None
    token_file: Path | None = None
    # for an https:// url: the CA bundle (PEM) DataStorage's certificate is checked against;
    # None: the system's trusted CAs
    ca_file: Path | None = None
    # the durations below are more than 0: a zero timeout fails every delivery, a zero
    # interval or backoff turns waiting into a busy loop
    timeout: Duration = Field(10.0, gt=0)
    batch_size: int = Field(100, ge=1, le=500)
    flush_interval: Duration = Field(1.0, gt=0)
    # events the relay reads from the journal ahead of delivery (the journal, not memory,
    # holds the backlog now)
    buffer_size: int = Field(10_000, ge=1)
    # the journal's directory; None → <dataDir>/audit-journal
    spool_path: Path | None = None
    # the journal's bound: undelivered bytes beyond it trigger `audit.onBacklogFull`
    spool_max_bytes: ByteSize = Field(100 * 1024 * 1024, ge=1024)
    backoff_initial: Duration = Field(1.0, gt=0)
    backoff_max: Duration = Field(30.0, gt=0)
    stop_flush_timeout: Duration = 10.0

    @field_validator("ca_file")
    @classmethod
    def _readable_bundle(cls, value: Path | None) -> Path | None:
        """Loaded now, as the relay will: a missing or unreadable bundle is a setting's error,
        not a traceback when delivery starts."""
        if value is None:
            return None
        try:
            ssl.create_default_context(cafile=str(value))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"is not a readable PEM CA bundle ({exc})") from None
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        checked = check_url(value, ("http", "https"), "http://data-storage-service:8080")
        if "@" in urlsplit(checked).netloc:
            # an HTTP client sends them as Basic auth in place of the bearer token (every
            # delivery a 401), and logs them with the URL
            raise ValueError(
                "must not carry credentials (user:password@): the Gateway authenticates with "
                "the bearer token of datastorage.tokenFile"
            )
        return checked


class AuditSettings(Section):
    """`audit.*`: what the Gateway promises about its audit trail."""

    # reject: answer signals 503 + Retry-After (and /readyz 503) while the journal is over its
    # bound, so nothing is acknowledged without its audit; drop: answer as usual and count
    # the events dropped
    on_backlog_full: Literal["reject", "drop"] = "reject"
    # the longest a request waits for its events' fsync before it is answered 503
    commit_timeout: Duration = Field(5.0, gt=0)
    # the journal starts a new segment file past this size; whole delivered segments are
    # deleted, so this is also the granularity of truncation
    segment_bytes: ByteSize = Field(8 * 1024 * 1024, ge=4096)
