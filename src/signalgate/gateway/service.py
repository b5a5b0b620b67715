"""One running Gateway: its settings, store, auth, audit sink, metrics and lifecycle.

Wiring is explicit: `GatewayService.from_settings` decides which store, which
authenticator and which audit sink, each in one readable branch that says why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from signalgate.common.audit import AuditSink, LoggingAuditSink, Refusal
from signalgate.common.auth import Authenticator, authenticator_for
from signalgate.common.directories import check_directory, writable_directory
from signalgate.common.ops import Readiness
from signalgate.common.server import Lifecycle, check_listener_settings
from signalgate.gateway import audit_events as ev
from signalgate.gateway.kinds import KindCatalog
from signalgate.gateway.metrics import GatewayMetrics
from signalgate.gateway.pipeline import Pipeline
from signalgate.gateway.scope import StandaloneScope
from signalgate.gateway.settings import SCOPES, GatewaySettings
from signalgate.kube.clients import KubeClients
from signalgate.remediation.coalesce import CoalescingStore
from signalgate.remediation.store import RemediationStore, StoreUnavailable

if TYPE_CHECKING:
    from signalgate.gateway.cluster import ClusterView
    from signalgate.kube.client import KubeClient

log = logging.getLogger(__name__)

READINESS_TIMEOUT = 2.0


def store_for(
    dsn: str, pool_size: int, namespace: str, kube: Callable[[str, str], KubeClient]
) -> RemediationStore:
    """The scheme picks the backend: SQLite for one process, PostgreSQL for replicas,
    Kubernetes custom resources where Kubernaut's controllers watch for them."""
    # the SQL stores get concurrent duplicates of one fingerprint coalesced in front of
    # them; the Kubernetes store coalesces its status writes itself
    if dsn.startswith("sqlite:///"):
        from signalgate.remediation.sqlite import SqliteRemediationStore

        sqlite = SqliteRemediationStore(Path(dsn.removeprefix("sqlite:///")))
        return CoalescingStore(sqlite, batches_in_flight=1)
    if dsn.startswith(("postgresql://", "postgres://")):
        from signalgate.remediation.postgres import PostgresRemediationStore

        return CoalescingStore(
            PostgresRemediationStore(dsn, min_size=min(2, pool_size), max_size=pool_size)
        )
    if dsn.startswith("kubernetes://"):
        from signalgate.remediation.kubernetes import KubernetesStore

        return KubernetesStore(kube(dsn, "store.dsn"), namespace)
    # settings validation (StoreSettings.dsn) admits only the schemes above: reaching this
    # line is a bug, not a configuration mistake
    raise ValueError(f"store.dsn {dsn!r}: no store for this scheme")


def cluster_for(
    settings: GatewaySettings, kube: Callable[[str, str], KubeClient]
) -> ClusterView | None:
    """Scope from the cluster (the kubernaut.ai/managed labels, owner chains, discovery), or
    from the settings' namespace globs; by default the cluster when RRs live there."""
    if settings.scope_source != "cluster":
        return None
    from signalgate.gateway.cluster import ClusterView

    return ClusterView(kube(settings.kubernetes.config, "kubernetes.config"), settings.kubernetes)


def check_settings(settings: GatewaySettings, named: Callable[[str], str] = str) -> None:
    """What `serve` refuses (exit 2) that needs no network and writes nothing: the
    directories it would write, the TLS pair, the tokens file, listeners that overlap.
    `check-config` runs it, and `serve` first, so the two cannot disagree. `named` gives a
    setting as the user gave it, for the refusals (`Resolved.named`: `--data-dir`, a
    variable, a key in a file)."""
    check_directory(settings.data_dir, named("dataDir"), "the Gateway's audit journal and tokens")
    if settings.datastorage.url is not None:
        journal_key = named(
            "datastorage.spoolPath" if settings.datastorage.spool_path else "dataDir"
        )
        journal = settings.audit_journal
        where = journal.parent if journal.is_file() else journal  # an old spool file's
        check_directory(where, journal_key, "the audit journal")
    check_listener_settings(settings.server, settings.auth, SCOPES)


def audit_sink_for(settings: GatewaySettings, registry: CollectorRegistry) -> AuditSink:
    if settings.datastorage.url is None:
        log.warning("datastorage.url is not set: audit events are only logged")
        return LoggingAuditSink()
    from signalgate.audit.journal import stranded_journals
    from signalgate.audit.sink import JournalAuditSink

    journal = settings.audit_journal
    return JournalAuditSink(
        settings.datastorage,
        settings.audit,
        journal,
        registry,
        # Kubernaut's DataStorage does not know these two: sent only where advertised
        extension_types=frozenset({ev.SIGNAL_RESOLVED, ev.SIGNAL_REJECTED}),
        service="gateway",
        # the spool file of versions before the journal, at its default place: taken over
        legacy_spool=settings.data_dir / "audit-spool",
        # other workers' journals left by a run with more `server.workers` (found only by
        # the process owning the configured journal: worker 0, or the only process)
        stranded=stranded_journals(journal, settings.server.workers),
    )


class GatewayService:
    def __init__(
        self,
        settings: GatewaySettings,
        store: RemediationStore,
        auth: Authenticator,
        audit: AuditSink,
        registry: CollectorRegistry,
        cluster: ClusterView | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.auth = auth
        self.audit = audit
        self.metrics = GatewayMetrics(registry)
        # which kinds alert labels may name, and their apiVersion (Kubernetes mode may pass
        # a discovery-backed KindCatalog instead)
        self.kinds: KindCatalog = settings.kinds.catalog()
        # Kubernetes mode: kinds from API discovery, owner chains and scope labels
        self.cluster = cluster
        if cluster is not None:
            self.kinds = cluster.kinds
            cluster.on_owner_resolution = lambda kind, outcome: self.metrics.child(
                self.metrics.owner_resolution, kind, outcome
            ).inc()
            cluster.on_discovery_error = self.metrics.discovery_refresh_errors.inc
        if settings.auth.mode == "kubernetes":
            from signalgate.kube.auth import KubernetesAuth

            if isinstance(auth, KubernetesAuth):
                auth.on_review_refused = lambda review: self.metrics.child(
                    self.metrics.auth_reviews_refused, review
                ).inc()
        self.metrics.circuit_breaker_state.labels("datastorage").set_function(
            lambda: 2.0 if self.audit.status().get("reachable") is False else 0.0
        )
        self.lifecycle = Lifecycle()
        self.kube_clients: KubeClients | None = None
        self.pipeline = Pipeline(
            store,
            StandaloneScope(settings.scope.managed_namespaces, settings.scope.unmanaged_namespaces),
            audit,
            self.metrics,
            settings.controller_namespace,
            cluster=cluster,
        )

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> GatewayService:
        registry = CollectorRegistry()
        writable_directory(settings.data_dir, "dataDir", "the Gateway's audit journal and tokens")
        if settings.datastorage.url is not None:
            journal_key = "datastorage.spoolPath" if settings.datastorage.spool_path else "dataDir"
            journal = settings.audit_journal
            if journal.is_file():
                # the spool file of a release before the journal: the journal parks it and
                # takes over its events in a directory of that name; its parent is written
                writable_directory(journal.parent, journal_key, "the old audit spool's journal")
            else:
                writable_directory(journal, journal_key, "the audit journal")
        kube = KubeClients(settings.kubernetes.timeout)

        def kubernetes_auth() -> Authenticator:
            from signalgate.kube.auth import KubernetesAuth, gateway_access

            return KubernetesAuth(
                kube(settings.kubernetes.config, "kubernetes.config"),
                gateway_access(settings.controller_namespace),
                settings.kubernetes,
            )

        service = cls(
            settings,
            store_for(
                settings.store_dsn, settings.store.pool_size, settings.controller_namespace, kube
            ),
            authenticator_for(
                settings.auth.mode,
                settings.auth.tokens_file,
                settings.data_dir,
                SCOPES,
                "Gateway",
                kubernetes=kubernetes_auth,
            ),
            audit_sink_for(settings, registry),
            registry,
            cluster_for(settings, kube),
        )
        service.kube_clients = kube
        return service

    async def start(self) -> None:
        if self.cluster is not None:
            from signalgate.kube.client import KubeError

            try:
                await self.cluster.start()
            except KubeError as exc:
                raise StoreUnavailable(
                    f"Kubernetes API discovery failed ({exc}); scope.source is cluster"
                ) from exc
        await self.store.open()
        await self.audit.start()

    async def stop(self) -> None:
        try:
            await self.audit.stop()
        finally:
            try:
                await self.store.close()
            finally:
                if self.cluster is not None:
                    await self.cluster.close()
                if self.kube_clients is not None:
                    await self.kube_clients.close()

    def signal_refusal(self) -> Refusal | None:
        """Why signals are refused before anything is decided, or None: the audit sink takes
        no events (its journal over its bound, or failing) and `audit.onBacklogFull` is
        `reject`. Decided here for the signal routes (503) and readiness alike."""
        if self.settings.audit.on_backlog_full != "reject":
            return None
        return self.audit.refusal()

    async def readiness(self) -> Readiness:
        checks: dict[str, object] = {"audit": self.audit.status()}
        if not self.lifecycle.accepting:
            return Readiness(False, f"gateway is {self.lifecycle.state.value}", checks)
        if refused := self.signal_refusal():
            return Readiness(
                False,
                f"{refused.message}: signals are refused (audit.onBacklogFull: reject)",
                checks,
            )
        try:
            async with asyncio.timeout(READINESS_TIMEOUT):
                await self.store.ping()
        except StoreUnavailable as exc:
            checks["store"] = "unavailable"
            return Readiness(False, f"remediation store unavailable: {exc}".rstrip(": "), checks)
        except TimeoutError:
            # a TimeoutError says nothing of itself: /readyz read "remediation store
            # unavailable" alone while the API server (its etcd gone) or the database hung
            checks["store"] = "no answer"
            return Readiness(
                False,
                f"remediation store unavailable: {self.store!r} did not answer within "
                f"{READINESS_TIMEOUT:g} s",
                checks,
            )
        if why := self.pipeline.store_failing():
            checks["store"] = f"writes failing: {why}"
            return Readiness(False, f"remediation store writes failing: {why}", checks)
        checks["store"] = "ok"
        return Readiness(True, "", checks)
