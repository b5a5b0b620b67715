"""One running Gateway: its settings, store, auth, audit sink, metrics and lifecycle.

Wiring is explicit: `GatewayService.from_settings` decides which store, which
authenticator and which audit sink, each in one readable branch that says why.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from prometheus_client import CollectorRegistry

from signalgate.common.audit import AuditSink, LoggingAuditSink
from signalgate.common.auth import Authenticator, authenticator_for
from signalgate.common.config import ConfigError
from signalgate.common.ops import Readiness
from signalgate.common.server import Lifecycle
from signalgate.gateway.kinds import KindCatalog
from signalgate.gateway.metrics import GatewayMetrics
from signalgate.gateway.pipeline import Pipeline
from signalgate.gateway.scope import StandaloneScope
from signalgate.gateway.settings import SCOPES, GatewaySettings
from signalgate.remediation.store import RemediationStore, StoreUnavailable

log = logging.getLogger(__name__)

READINESS_TIMEOUT = 2.0


def store_for(dsn: str, pool_size: int) -> RemediationStore:
    """The scheme picks the backend: SQLite for one process, PostgreSQL for replicas."""
    if dsn.startswith("sqlite:///"):
        from signalgate.remediation.sqlite import SqliteStore

        return SqliteStore(Path(dsn.removeprefix("sqlite:///")))
    if dsn.startswith(("postgresql://", "postgres://")):
        from signalgate.remediation.postgres import PostgresStore

        return PostgresStore(dsn, min_size=min(2, pool_size), max_size=pool_size)
    raise ConfigError(
        f"config key 'store.dsn': {dsn!r} must start with sqlite:/// or postgresql://"
    )


def audit_sink_for(settings: GatewaySettings, registry: CollectorRegistry) -> AuditSink:
    if settings.datastorage.url is None:
        log.warning("datastorage.url is not set: audit events are only logged")
        return LoggingAuditSink()
    from signalgate.datastorage.client import DataStorageAuditSink

    ds = settings.datastorage
    return DataStorageAuditSink(
        url=ds.url or "",
        token_file=ds.token_file,
        timeout=ds.timeout,
        batch_size=ds.batch_size,
        flush_interval=ds.flush_interval,
        buffer_size=ds.buffer_size,
        spool_path=ds.spool_path or settings.data_dir / "audit-spool",
        spool_max_bytes=ds.spool_max_bytes,
        registry=registry,
        service="gateway",
    )


class GatewayService:
    def __init__(
        self,
        settings: GatewaySettings,
        store: RemediationStore,
        auth: Authenticator,
        audit: AuditSink,
        registry: CollectorRegistry,
    ) -> None:
        self.settings = settings
        self.store = store
        self.auth = auth
        self.audit = audit
        self.metrics = GatewayMetrics(registry)
        # which kinds alert labels may name, and their apiVersion (Kubernetes mode may pass
        # a discovery-backed KindCatalog instead)
        self.kinds: KindCatalog = settings.kinds.catalog()
        self.metrics.circuit_breaker_state.labels("datastorage").set_function(
            lambda: 2.0 if self.audit.status().get("reachable") is False else 0.0
        )
        self.lifecycle = Lifecycle()
        self.pipeline = Pipeline(
            store,
            StandaloneScope(settings.scope.managed_namespaces, settings.scope.unmanaged_namespaces),
            audit,
            self.metrics,
            settings.controller_namespace,
        )

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> GatewayService:
        registry = CollectorRegistry()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return cls(
            settings,
            store_for(settings.store_dsn, settings.store.pool_size),
            authenticator_for(
                settings.auth.mode, settings.auth.tokens_file, settings.data_dir, SCOPES, "Gateway"
            ),
            audit_sink_for(settings, registry),
            registry,
        )

    async def start(self) -> None:
        await self.store.open()
        await self.audit.start()

    async def stop(self) -> None:
        try:
            await self.audit.stop()
        finally:
            await self.store.close()

    async def readiness(self) -> Readiness:
        checks: dict[str, object] = {"audit": self.audit.status()}
        if not self.lifecycle.accepting:
            return Readiness(False, f"gateway is {self.lifecycle.state.value}", checks)
        try:
            async with asyncio.timeout(READINESS_TIMEOUT):
                await self.store.ping()
        except (StoreUnavailable, TimeoutError) as exc:
            checks["store"] = "unavailable"
            return Readiness(False, f"remediation store unreachable: {exc}".rstrip(": "), checks)
        checks["store"] = "ok"
        return Readiness(True, "", checks)
