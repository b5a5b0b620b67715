"""The running DataStorage: store, dead-letter queue, replay worker, auth and metrics, wired
once from the settings, with an explicit lifecycle (`common.server` drives it)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from signalgate.common.auth import Authenticator, authenticator_for
from signalgate.common.directories import check_directory, writable_directory
from signalgate.common.ops import Readiness
from signalgate.common.server import Lifecycle, State, check_listener_settings
from signalgate.datastorage.dlq import (
    DeadLetterQueue,
    FileDeadLetterQueue,
    RedisDeadLetterQueue,
    ReplayWorker,
)
from signalgate.datastorage.errors import (
    DeadLetterQueueFull,
    DeadLetterUnavailable,
    StoreUnavailable,
)
from signalgate.datastorage.events import CATEGORIES
from signalgate.datastorage.housekeeping import Housekeeper
from signalgate.datastorage.metrics import DataStorageMetrics
from signalgate.datastorage.opening import StoreOpener
from signalgate.datastorage.postgres import PostgresAuditStore
from signalgate.datastorage.settings import DataStorageSettings
from signalgate.datastorage.sqlite import SqliteAuditStore, path_from_dsn
from signalgate.datastorage.store import AuditStore
from signalgate.datastorage.writer import AuditWriter
from signalgate.kube.clients import KubeClients

log = logging.getLogger("signalgate.datastorage")

# `audit:write` writes events of every category but the reserved ones (`gateway`);
# `audit:write:<category>` only that category's, e.g. the Gateway's `audit:write:gateway`,
# so a token handed to one service cannot append to another service's chains
SCOPES = ("audit:write", "audit:read", *(f"audit:write:{c}" for c in CATEGORIES))


def build_store(settings: DataStorageSettings) -> AuditStore:
    """The DSN's scheme picks the backend: PostgreSQL for shared, partitioned production
    storage; SQLite (the default) so a fresh install needs no database server."""
    dsn = settings.store_dsn
    if dsn.startswith(("postgresql://", "postgres://")):
        return PostgresAuditStore(
            dsn,
            pool_size=settings.store.pool_size,
            timeout=settings.store.timeout,
            auto_migrate=settings.store.auto_migrate,
        )
    return SqliteAuditStore(path_from_dsn(dsn), timeout=settings.store.timeout)


def build_dlq(settings: DataStorageSettings) -> DeadLetterQueue:
    """Redis when configured (shared by replicas, survives a lost pod disk); else a local
    file, which survives restarts of a single instance and needs nothing else running."""
    if settings.dlq.redis_url:
        return RedisDeadLetterQueue(
            settings.dlq.redis_url, trust_persistence=settings.dlq.trust_redis_persistence
        )
    return FileDeadLetterQueue(settings.dlq_path, max_bytes=settings.dlq.max_bytes)


def check_directories(
    settings: DataStorageSettings,
    check: Callable[[Path, str, str], object] = writable_directory,
    named: Callable[[str], str] = str,
) -> None:
    """The directories this configuration writes, proven writable before anything starts:
    the data directory only when something defaults to it (SQLite, the file queue, generated
    tokens), so a PostgreSQL, Redis and ServiceAccount set-up needs no disk at all. `check`
    is `check_directory` for `check-config`, which looks without making anything; `named`
    gives a setting as the user gave it (`Resolved.named`: `--data-dir`, a variable)."""
    uses: list[str] = []
    if not settings.store.dsn:
        uses.append("the SQLite audit store")
    if not settings.dlq.redis_url:
        if settings.dlq.path is None:
            uses.append("the dead-letter queue file")
        else:
            check(settings.dlq.path.parent, named("dlq.path"), "the dead-letter queue file")
    if settings.auth.mode == "static" and settings.auth.tokens_file is None:
        uses.append("the generated tokens")
    if uses:
        check(settings.data_dir, named("dataDir"), ", ".join(uses))


def check_settings(settings: DataStorageSettings, named: Callable[[str], str] = str) -> None:
    """What `serve` refuses (exit 2) that needs no network and writes nothing: the
    directories it would write, the TLS pair, the tokens file, listeners that overlap.
    `check-config` runs it, and `serve` first, so the two cannot disagree. `named`: as in
    `check_directories`."""
    check_directories(settings, check_directory, named)
    check_listener_settings(settings.server, settings.auth, SCOPES)


@dataclass
class DataStorageService:
    settings: DataStorageSettings
    store: AuditStore
    dlq: DeadLetterQueue
    auth: Authenticator
    metrics: DataStorageMetrics
    writer: AuditWriter
    worker: ReplayWorker
    lifecycle: Lifecycle
    # opens the store at start, or in the background while its database is down
    opener: StoreOpener
    # the API clients of auth.mode: kubernetes, closed with the service
    kube: KubeClients | None = None
    # `maintain` every few hours while serving (PostgreSQL's partitions ahead)
    housekeeper: Housekeeper | None = None

    @classmethod
    def from_settings(
        cls, settings: DataStorageSettings, registry: CollectorRegistry | None = None
    ) -> DataStorageService:
        metrics = DataStorageMetrics(registry or CollectorRegistry())
        check_directories(settings)
        store = build_store(settings)
        dlq = build_dlq(settings)
        worker = ReplayWorker(
            dlq,
            store,
            settings.dlq.backoff,
            metrics,
            poll_interval=settings.dlq.poll_interval,
            batch_size=settings.dlq.replay_batch,
        )
        kube = KubeClients(settings.kubernetes.timeout)
        lifecycle = Lifecycle()

        def kubernetes_auth() -> Authenticator:
            """Kubernaut's services call DataStorage with their ServiceAccount tokens."""
            from signalgate.kube.auth import KubernetesAuth, datastorage_access

            k8s = settings.kubernetes
            client = kube(k8s.config, "kubernetes.config")
            auth = KubernetesAuth(client, datastorage_access(k8s.namespace), k8s)
            auth.on_review_refused = lambda review: metrics.auth_reviews_refused.labels(
                review
            ).inc()
            return auth

        return cls(
            settings=settings,
            store=store,
            dlq=dlq,
            auth=authenticator_for(
                settings.auth.mode,
                settings.auth.tokens_file,
                settings.data_dir,
                SCOPES,
                "DataStorage",
                kubernetes=kubernetes_auth,
            ),
            metrics=metrics,
            writer=AuditWriter(store, dlq, metrics),
            worker=worker,
            lifecycle=lifecycle,
            opener=StoreOpener(store, dlq, lifecycle),
            kube=kube,
            housekeeper=Housekeeper(store),
        )

    async def start(self) -> None:
        """Open the queue, the store (refusing what can never work; a database that is down
        is waited for in the background: `opening.py`), then the worker and housekeeping."""
        await self.dlq.open()
        try:
            await self.opener.open()
        except BaseException:
            await self.dlq.close()
            raise
        await self.worker.start()
        if self.housekeeper is not None:
            await self.housekeeper.start()

    async def stop(self) -> None:
        """Stop replaying, then close the store and the queue (requests are drained first)."""
        try:
            if self.housekeeper is not None:
                await self.housekeeper.stop()
            await self.worker.stop()
        finally:
            await self.opener.close()
            await self.store.close()
            await self.dlq.close()
            if self.kube is not None:
                await self.kube.close()

    async def readiness(self) -> Readiness:
        """Ready while writes can land somewhere: in the database, or in the queue.

        A database outage alone does not make us unready — writes still succeed (202) — and
        taking every replica out of rotation then would lose the events the queue exists for.
        """
        checks: dict[str, str] = {}
        try:
            await self.store.ping()
            checks["database"] = "ok"
        except StoreUnavailable as exc:
            checks["database"] = f"unavailable: {exc}"
        try:
            await self.dlq.ping()
            checks["dead_letter_queue"] = "ok"
        except DeadLetterQueueFull as exc:  # it has no room until the replay drains it
            checks["dead_letter_queue"] = f"full: {exc}"
        except DeadLetterUnavailable as exc:
            checks["dead_letter_queue"] = f"unavailable: {exc}"
        for target, state in checks.items():
            # a ping can answer while writes fail (a full disk): the last write decides
            if state == "ok" and (why := self.writer.failing(target)):
                checks[target] = f"writes failing: {why}"
        if (refused := self.worker.refusing()) and await self._letters_waiting():
            # still ready (the queue takes writes), but it is not draining: a check of its
            # own, so the API's `/readyz` (the database alone) is not taken down with it
            checks["replay"] = f"refused: {refused}"
        if self.lifecycle.state is not State.SERVING:
            return Readiness(False, f"DataStorage is {self.lifecycle.state.value}", checks)
        if "ok" not in checks.values():
            if checks["dead_letter_queue"].startswith("full: "):
                return Readiness(
                    False,
                    "the database is unavailable and the dead-letter queue is full "
                    "(dlq.maxBytes): writes are refused until it drains",
                    checks,
                )
            return Readiness(False, "database and dead-letter queue are both unavailable", checks)
        return Readiness(True, "", checks)

    async def _letters_waiting(self) -> bool:
        """Whether the queue holds letters (a refusal is old news once it is empty: drained
        by `replay-dlq`, another replica, or burials)."""
        try:
            return await self.dlq.depth() > 0
        except DeadLetterUnavailable:
            return True

    async def database_readiness(self) -> Readiness:
        """`/readyz` on the API listener, as Kubernaut's services read it there: ready only
        while the audit database itself answers (their prober gates their own readiness on
        it). The ops listener keeps `readiness`, so an outage the queue absorbs does not take
        replicas out of rotation."""
        state = await self.readiness()
        if state.ready and state.checks.get("database") != "ok":
            return Readiness(False, "the audit database is unavailable", state.checks)
        return state
