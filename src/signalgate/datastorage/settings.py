"""Every DataStorage setting in one typed model, resolved once at start-up.

Keys mirror the Gateway's (`server.listen`, `store.dsn`, `auth.mode`, ...) so one YAML
layout and one environment rule (`SIGNALGATE_<SECTION>__<KEY>`) serve both services. The
embedded defaults bind loopback only (127.0.0.1:8090 / :8091): a fresh install is not
reachable from the network until someone chooses to make it so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from signalgate.common.config import (
    ByteSize,
    Duration,
    ListenAddress,
    Section,
    check_postgres_dsn,
    check_url,
    load_settings,
)
from signalgate.common.sections import AuthSettings, LoggingSettings
from signalgate.kube.settings import KubernetesSettings

DEFAULT_BACKOFF = (60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)
# the dead-letter file's bound (`dlq.maxBytes`): at 1,000 Gateway events a second (2.5 KB
# each), about seven minutes of a database outage; its index then takes about 200 MB of the
# process (some 480 bytes per letter), within the manifests' 512 MiB limit. Unbounded, an
# outage filled the disk, and the parsed queue the pod's memory at every start
DEFAULT_DLQ_MAX_BYTES = 1024**3
MAX_BODY_BYTES = 5 * 1024 * 1024


class ServerSettings(Section):
    listen: ListenAddress = "127.0.0.1:8090"
    ops_listen: ListenAddress = "127.0.0.1:8091"
    # a second address for the ops listener's routes (/metrics, /healthz, /readyz); None:
    # only `opsListen`. Kubernaut's charts scrape metrics on a port of their own (9090)
    metrics_listen: ListenAddress | None = None
    max_body_size: ByteSize = MAX_BODY_BYTES
    # a client must send its whole body within this (→ 408), as on the Gateway
    body_read_timeout: Duration = Field(10.0, gt=0)
    # a connection whose request head (request line and headers) has not arrived within this
    # of connecting, or of the request's first byte, is closed: a slow client cannot hold
    # connections open without sending a request
    header_read_timeout: Duration = Field(10.0, gt=0)
    shutdown_grace: Duration = 30.0
    # after SIGTERM, how long readiness is 503 while the API listener still serves (each
    # answer closing its connection), so a load balancer or Service stops sending first
    shutdown_delay: Duration = Field(0.0, ge=0, le=300)
    # HTTPS on the API listener (PEM files, e.g. a mounted Secret); both or neither
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # browser origins allowed to call the API (CORS); empty: CORS off
    cors_allowed_origins: list[str] = Field(default_factory=list)
    # costly reads (common/reads.py): event query pages and chain checks at once; a few
    # more wait their turn, each for at most `readQueueTimeout`; beyond them → 503 with
    # Retry-After
    max_concurrent_reads: int = Field(4, ge=1, le=1000)
    max_queued_reads: int = Field(16, ge=0, le=10_000)
    read_queue_timeout: Duration = Field(5.0, gt=0)


class StoreSettings(Section):
    dsn: str = ""  # empty: sqlite:///<dataDir>/audit.db
    auto_migrate: bool = False
    pool_size: int = Field(default=10, ge=1, le=200)
    # zero would time every connection and query out
    timeout: Duration = Field(10.0, gt=0)

    @field_validator("dsn")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value and not value.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError(
                "is not a store DSN (sqlite:///path/audit.db or postgresql://user@host/db)"
            )
        if value.startswith(("postgresql://", "postgres://")):
            check_postgres_dsn(value)
        return value


class DlqSettings(Section):
    redis_url: str = ""  # empty: the local file at `path`
    # take letters without asking Redis whether it persists them (a managed Redis that
    # refuses CONFIG and is known to keep an append-only file)
    trust_redis_persistence: bool = False
    path: Path | None = None  # empty: <dataDir>/audit-dlq.jsonl
    # the most the dead-letter file may hold: a batch that would take it past this is
    # refused (503 + Retry-After, nothing acknowledged) until the replay drains it. Redis
    # is bounded by its own `maxmemory` instead
    max_bytes: ByteSize = Field(DEFAULT_DLQ_MAX_BYTES, gt=0)
    backoff: list[Duration] = Field(default_factory=lambda: list(DEFAULT_BACKOFF))
    # zero would poll the queue in a busy loop
    poll_interval: Duration = Field(1.0, gt=0)
    replay_batch: int = Field(default=500, ge=1, le=500)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value:
            return value
        return check_url(
            value, ("redis", "rediss", "unix"), "redis://:password@redis:6379/0", need_host=False
        )

    @field_validator("backoff")
    @classmethod
    def _not_empty(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("must list at least one delay (e.g. 1m,5m,15m,1h,4h,24h)")
        return value


class BatchSettings(Section):
    max_size: int = Field(default=500, ge=1, le=500)


class DataStorageSettings(Section):
    server: ServerSettings = ServerSettings()
    store: StoreSettings = StoreSettings()
    data_dir: Path = Path("./data/datastorage")
    auth: AuthSettings = AuthSettings()
    dlq: DlqSettings = DlqSettings()
    batch: BatchSettings = BatchSettings()
    logging: LoggingSettings = LoggingSettings()
    # the API server for auth.mode: kubernetes (ServiceAccount tokens of Kubernaut's services)
    kubernetes: KubernetesSettings = KubernetesSettings()

    @property
    def store_dsn(self) -> str:
        return self.store.dsn or f"sqlite:///{(self.data_dir / 'audit.db').as_posix()}"

    @property
    def dlq_path(self) -> Path:
        return self.dlq.path or self.data_dir / "audit-dlq.jsonl"

    def resolved(self) -> dict[str, Any]:
        """The settings as JSON with the defaults that follow from others filled in (what
        `check-config` prints): the store, and the dead-letter file when Redis is not used."""
        out: dict[str, Any] = self.model_dump(mode="json", by_alias=True)
        out["store"]["dsn"] = self.store_dsn
        if not self.dlq.redis_url:
            out["dlq"]["path"] = str(self.dlq_path)
        return out


SHORTHANDS: dict[str, str] = {"LOG_LEVEL": "logging.level"}


def load(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> DataStorageSettings:
    return load_settings(DataStorageSettings, path, environ, SHORTHANDS, overrides)
