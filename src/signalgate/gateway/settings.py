"""Every Gateway setting, declared once; the README's "Configuration" table documents each
key with its default (`tests/unit/project/test_settings_docs.py` holds the two together).

Keys are camelCase in the YAML file; `SIGNALGATE_<SECTION>__<KEY>` environment variables
override them, and `check-config` prints them resolved, with nothing more to wire (see
`common/config.py` for the rule). A new top-level section is refused in a file in
Kubernaut's layout (`kubernaut_config.SIGNALGATE_SECTIONS`). Defaults are the embedded
set-up: SQLite under the data directory, listeners on loopback, static token auth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from signalgate.audit.settings import AuditSettings, DeliverySettings
from signalgate.common.config import (
    ByteSize,
    DnsLabel,
    Duration,
    ListenAddress,
    Section,
    check_postgres_dsn,
)
from signalgate.common.sections import AuthSettings, LoggingSettings
from signalgate.gateway.adapters.parsing import Freshness
from signalgate.gateway.kinds import KindSettings
from signalgate.kube.settings import KubernetesSettings

SHORTHANDS = {"DATA_STORAGE_URL": "datastorage.url", "LOG_LEVEL": "logging.level"}

SCOPES = ("signals:write", "remediations:read", "remediations:write")


class ServerSettings(Section):
    listen: ListenAddress = "127.0.0.1:8080"
    ops_listen: ListenAddress = "127.0.0.1:8081"
    # a second address for the ops listener's routes (/metrics, /healthz, /readyz); None:
    # only `opsListen`. Kubernaut's charts scrape metrics on a port of their own (9090)
    metrics_listen: ListenAddress | None = None
    max_concurrent_requests: int = Field(100, ge=1, le=100_000)
    # a signal not settled within this is answered 504; zero would answer every one so
    processing_timeout: Duration = Field(15.0, gt=0)
    # a client must send its whole body within this (→ 408); it holds no concurrency slot
    # meanwhile
    body_read_timeout: Duration = Field(10.0, gt=0)
    # a connection whose request head (request line and headers) has not arrived within this
    # of connecting, or of the request's first byte, is closed: a slow client cannot hold
    # connections open without sending a request
    header_read_timeout: Duration = Field(10.0, gt=0)
    # the same key as DataStorage's (it was `maxBodyBytes`: still read, with a warning). A
    # webhook of an Alertmanager group holds ~750 bytes per alert: 4 MiB is ~5,500 alerts
    # (one alert at most `adapters.parsing.MAX_SIGNAL_BYTES`)
    max_body_size: ByteSize = Field(4 * 1024 * 1024, ge=1024)
    shutdown_grace: Duration = 30.0
    # after SIGTERM, how long readiness is 503 while the API listener still serves (each
    # answer closing its connection), so a load balancer or Service stops sending first
    shutdown_delay: Duration = Field(0.0, ge=0, le=300)
    # HTTPS on the API listener (PEM files, e.g. a mounted Secret); both or neither
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # browser origins allowed to call the API (CORS); empty: CORS off
    cors_allowed_origins: list[str] = Field(default_factory=list)
    # costly reads (common/reads.py): RR list pages at once; a few more wait their turn,
    # each for at most `readQueueTimeout`; beyond them → 503 with Retry-After
    max_concurrent_reads: int = Field(4, ge=1, le=1000)
    max_queued_reads: int = Field(16, ge=0, le=10_000)
    read_queue_timeout: Duration = Field(5.0, gt=0)
    # processes serving the API listener (common/workers.py): more than one uses more than
    # one core; a supervisor answers the ops listener for all of them
    workers: int = Field(1, ge=1, le=64)


class StoreSettings(Section):
    # None → sqlite:///<dataDir>/gateway.db
    dsn: str | None = None
    # PostgreSQL connections per Gateway process; more than the cores can serve only adds
    # scheduling delay (see docs/performance.md)
    pool_size: int = Field(6, ge=1, le=200)

    @field_validator("dsn")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(
            ("sqlite:///", "postgresql://", "postgres://", "kubernetes://")
        ):
            raise ValueError(
                "must start with sqlite:///, postgresql:// or kubernetes:// "
                "(e.g. sqlite:///var/gateway.db, postgresql://user@host:5432/db, kubernetes:// "
                "for RemediationRequest custom resources in the pod's own cluster)"
            )
        if value is not None and value.startswith(("postgresql://", "postgres://")):
            check_postgres_dsn(value)
        return value


class ScopeSettings(Section):
    # settings: the namespace globs below; cluster: the kubernaut.ai/managed label on the
    # resource or its namespace, with owner chains and kinds from the API server. Unset:
    # cluster when store.dsn is kubernetes://, settings otherwise.
    source: Literal["settings", "cluster"] | None = None
    managed_namespaces: list[str] = Field(default_factory=lambda: ["*"])
    unmanaged_namespaces: list[str] = Field(default_factory=list)


class FreshnessSettings(Section):
    # the adapters' window (`adapters.parsing.Freshness`): one home for the defaults
    # zero would refuse every Event and X-Timestamp (none is newer than now): more than 0
    tolerance: Duration = Field(Freshness.tolerance.total_seconds(), gt=0)
    future_skew: Duration = Freshness.future_skew.total_seconds()


class GatewaySettings(Section):
    # old dotted key → its new name; the old one is still read, with a logged warning
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"server.maxBodyBytes": "server.maxBodySize"}

    server: ServerSettings = ServerSettings()
    store: StoreSettings = StoreSettings()
    data_dir: Path = Path("var")
    controller_namespace: DnsLabel = "kubernaut-system"
    auth: AuthSettings = AuthSettings()
    scope: ScopeSettings = ScopeSettings()
    freshness: FreshnessSettings = FreshnessSettings()
    datastorage: DeliverySettings = DeliverySettings()
    audit: AuditSettings = AuditSettings()
    logging: LoggingSettings = LoggingSettings()
    kinds: KindSettings = KindSettings()
    # the API server (auth.mode: kubernetes, the kubernetes:// store, owners and scope)
    kubernetes: KubernetesSettings = KubernetesSettings()

    @property
    def store_dsn(self) -> str:
        return self.store.dsn or f"sqlite:///{self.data_dir / 'gateway.db'}"

    @property
    def audit_journal(self) -> Path:
        """The audit journal's directory (`datastorage.spoolPath`, else under `dataDir`)."""
        return self.datastorage.spool_path or self.data_dir / "audit-journal"

    def resolved(self) -> dict[str, Any]:
        """The settings as JSON with the defaults that follow from others filled in (what
        `check-config` prints): the store, the journal's directory, the scope's source."""
        out: dict[str, Any] = self.model_dump(mode="json", by_alias=True)
        out["store"]["dsn"] = self.store_dsn
        out["datastorage"]["spoolPath"] = str(self.audit_journal)
        out["scope"]["source"] = self.scope_source
        return out

    @property
    def scope_source(self) -> Literal["settings", "cluster"]:
        if self.scope.source is not None:
            return self.scope.source
        return "cluster" if self.store_dsn.startswith("kubernetes://") else "settings"
