"""The decision for one signal: rejected, ignored, resolved, created or duplicate.

Order: no target → rejected; out of scope → rejected; resolved notice → resolved/ignored;
firing → the store's atomic deduplication decides created or duplicate. Every decision but
`ignored` is audited and counted here, so the HTTP layer only maps outcomes to answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import orjson

from signalgate.common.audit import AuditSink
from signalgate.common.ids import random_hex
from signalgate.common.logging import request_id_var
from signalgate.gateway import audit_events as ev
from signalgate.gateway.metrics import GatewayMetrics, severity_label
from signalgate.gateway.scope import Rejection, StandaloneScope, no_target_rejection
from signalgate.gateway.signal import (
    MAX_ANNOTATION_VALUE_BYTES,
    MAX_LABEL_VALUE_BYTES,
    Ignored,
    Signal,
    truncate_utf8,
)
from signalgate.kube.client import KubeError, KubeUnavailable
from signalgate.remediation.model import (
    MANUAL_REVIEW_OUTCOME,
    Deduplication,
    RemediationRequest,
    format_time,
    is_active,
    utcnow,
)
from signalgate.remediation.store import (
    Decision,
    RemediationStore,
    StoreRefused,
    StoreUnavailable,
    TooLarge,
)

if TYPE_CHECKING:
    from signalgate.gateway.cluster import ClusterView

OutcomeKind = Literal["created", "duplicate", "resolved", "rejected", "ignored"]


class ProcessingTimeout(Exception):
    """The store did not answer before the request's deadline (→ 504). `late` is the
    store's decision, still under way: a write it sent may land after the answer, so the
    caller keeps it for the retry of the same request (`gateway.retries`) rather than have
    that retry decide, and count, the signal again."""

    def __init__(self, late: asyncio.Task[Outcome] | None = None) -> None:
        super().__init__("processing deadline exceeded")
        self.late = late


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    message: str
    fingerprint: str | None = None
    rr: RemediationRequest | None = None
    rejection: Rejection | None = None


# how long a decision the store failed keeps the Gateway unready (`store_failing`): then
# signals are let through again, and the next one tells whether the store writes once more
STORE_FAILURE_HOLD = 5.0


class Pipeline:
    def __init__(
        self,
        store: RemediationStore,
        scope: StandaloneScope,
        audit: AuditSink,
        metrics: GatewayMetrics,
        controller_namespace: str,
        clock: Callable[[], datetime] = utcnow,
        cluster: ClusterView | None = None,
    ) -> None:
        self._cluster = cluster
        # decisions kept going past their deadline, held here (the loop holds tasks weakly);
        # each ends by itself, as every call to the Kubernetes API is bounded
        self._under_way: set[asyncio.Task[Outcome]] = set()
        self._store = store
        self._scope = scope
        self._audit = audit
        self._metrics = metrics
        self._namespace = controller_namespace
        self._clock = clock
        # (loop time, why) of the last decision the store could not make, until one it makes
        self._store_failed: tuple[float, str] | None = None

    def store_failing(self) -> str | None:
        """Why the store failed the last decision, if it did within STORE_FAILURE_HOLD: a
        store that answers its readiness ping can still refuse every write (a full disk, a
        read-only standby after a failover), and `/readyz` said ready all along."""
        failed = self._store_failed
        if failed is None or asyncio.get_running_loop().time() - failed[0] > STORE_FAILURE_HOLD:
            return None
        return failed[1]

    async def process(self, item: Signal | Ignored, deadline: float) -> Outcome:
        """Decide one item; `deadline` is the event loop time by which the store must answer.

        Raises `StoreUnavailable`, `StoreRefused` (`TooLarge`: the signal's RR is too large to
        store) or `ProcessingTimeout` after auditing the failure."""
        if isinstance(item, Ignored):
            self._metrics.child(self._metrics.signals_ignored, item.source).inc()
            return Outcome("ignored", item.message)
        signal = item
        metrics = self._metrics
        metrics.child(
            metrics.signals_received, signal.source, severity_label(signal.severity)
        ).inc()
        if self._cluster is not None and signal.target is not None:
            signal, rejection = await self._place_in_cluster(signal, deadline)
        else:
            rejection = self._rejection(signal)
        if rejection is not None:
            return self._reject(signal, rejection)
        fingerprint = signal.fingerprint
        assert fingerprint is not None
        if not self._store.writes_outlive_cancellation:
            # a decision cancelled is undone (its transaction rolled back, or never begun):
            # a 504 then means the signal was not counted, in every replica
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._decide(signal, fingerprint)
            except TimeoutError as exc:
                raise self._timed_out(signal) from exc
        # the Kubernetes API: a write sent lands, or not, whatever becomes of its caller, so
        # the decision is not cancelled at the deadline but kept going, its outcome for the
        # retry of the same request to answer (`ProcessingTimeout.late`); cancelled, its
        # write landed all the same, and the retry counted the signal a second time
        decision = asyncio.get_running_loop().create_task(self._decide(signal, fingerprint))
        self._under_way.add(decision)
        decision.add_done_callback(self._ended)
        await asyncio.wait({decision}, timeout=deadline - asyncio.get_running_loop().time())
        if not decision.done():
            raise self._timed_out(signal, decision)
        return decision.result()

    def _timed_out(
        self, signal: Signal, late: asyncio.Task[Outcome] | None = None
    ) -> ProcessingTimeout:
        """The deadline came before the store's answer: counted and audited as failed (the
        signal may still be counted, docs/gateway.md), the 504 to raise."""
        self._fail(signal, "timeout", "store did not answer in time", retry_possible=True)
        return ProcessingTimeout(late)

    def _ended(self, decision: asyncio.Task[Outcome]) -> None:
        self._under_way.discard(decision)
        if not decision.cancelled():
            decision.exception()  # retrieved: a late failure was audited and counted already

    async def _decide(self, signal: Signal, fingerprint: str) -> Outcome:
        """The store's part of a decision, audited and counted however it ends."""
        try:
            if signal.resolved:
                outcome = await self._resolve(signal, fingerprint)
            else:
                outcome = await self._fire(signal, fingerprint)
            self._store_failed = None
            return outcome
        except StoreUnavailable as exc:
            self._store_failed = (asyncio.get_running_loop().time(), str(exc))
            self._fail(signal, "store_unavailable", str(exc), retry_possible=True)
            raise
        except TooLarge as exc:
            # the signal's own problem (its caller answers it as an oversized signal)
            self._fail(signal, "too_large", str(exc), retry_possible=False)
            raise
        except StoreRefused as exc:
            self._fail(signal, "store_refused", str(exc), retry_possible=False)
            raise

    async def _place_in_cluster(
        self, signal: Signal, deadline: float
    ) -> tuple[Signal, Rejection | None]:
        """Kubernetes mode: the signal is about its resource's top controller owner (so every
        pod of a workload shares one fingerprint), in scope by the kubernaut.ai/managed label."""
        cluster = self._cluster
        assert cluster is not None and signal.target is not None
        try:
            async with asyncio.timeout_at(deadline):
                found = await cluster.existing(signal.target, signal.candidates)
                owner = await cluster.top_owner(found)
                placed = signal if owner == signal.target else replace(signal, target=owner)
                return placed, await cluster.check_scope(owner)
        except KubeUnavailable as exc:
            message = f"Kubernetes API unreachable while resolving the target: {exc}"
            self._fail(signal, "kubernetes_unavailable", message, retry_possible=True)
            raise StoreUnavailable(message) from exc
        except KubeError as exc:
            # its scope label unreadable (`ScopeUnreadable`): RBAC to grant, then a retry
            # is decided; never taken as unlabelled
            message = f"cannot decide the signal's scope: {exc.message}"
            self._fail(signal, "kubernetes_forbidden", message, retry_possible=True)
            raise StoreUnavailable(message) from exc
        except TimeoutError as exc:
            self._fail(
                signal, "timeout", "Kubernetes API did not answer in time", retry_possible=True
            )
            raise ProcessingTimeout from exc

    def _rejection(self, signal: Signal) -> Rejection | None:
        if signal.target is None:
            return no_target_rejection(signal)
        return self._scope.check(signal)

    def _reject(self, signal: Signal, rejection: Rejection) -> Outcome:
        self._metrics.child(self._metrics.signals_rejected, rejection.reason).inc()
        correlation = signal.fingerprint or f"rejected:{_request_id()}"
        self._audit.emit(
            ev.build_event(
                ev.SIGNAL_REJECTED,
                signal,
                self._clock(),
                correlation_id=correlation,
                # why, in the record itself (`no_target_resource`, `unmanaged_resource`)
                error={
                    "code": rejection.reason,
                    "message": rejection.message,
                    "retry_possible": False,  # the same signal is rejected again
                },
            )
        )
        message = rejection.summary or rejection.message
        return Outcome("rejected", message, signal.fingerprint, rejection=rejection)

    async def _resolve(self, signal: Signal, fingerprint: str) -> Outcome:
        now = self._clock()
        rr = await self._store.record_resolved(fingerprint, now)
        if rr is None:
            return Outcome("ignored", "resolved notice with no active remediation", fingerprint)
        self._metrics.signals_resolved.inc()
        self._audit.emit(
            ev.build_event(ev.SIGNAL_RESOLVED, signal, now, correlation_id=rr.name, rr=rr)
        )
        return Outcome("resolved", "resolution recorded on the active remediation", fingerprint, rr)

    async def _fire(self, signal: Signal, fingerprint: str) -> Outcome:
        now = self._clock()
        result = await self._store.record_firing_of(
            fingerprint, lambda: self._candidate(signal, fingerprint, now), now
        )
        rr = result.rr
        if result.decision is Decision.CREATED:
            self._metrics.child(self._metrics.crds_created, signal.source, "created").inc()
            for event_type in (ev.SIGNAL_RECEIVED, ev.CRD_CREATED):
                self._audit.emit(
                    ev.build_event(event_type, signal, now, correlation_id=rr.name, rr=rr)
                )
            return Outcome("created", "remediation request created", fingerprint, rr)
        name = self._metrics.signal_name_label(signal.signal_name)
        self._metrics.child(self._metrics.signals_deduplicated, name).inc()
        self._audit.emit(
            ev.build_event(ev.SIGNAL_DEDUPLICATED, signal, now, correlation_id=rr.name, rr=rr)
        )
        return Outcome("duplicate", _duplicate_of(rr), fingerprint, rr)

    def _fail(self, signal: Signal, code: str, message: str, *, retry_possible: bool) -> None:
        self._metrics.child(self._metrics.crd_creation_errors, code).inc()
        target = signal.target
        assert target is not None
        correlation = f"{signal.signal_name}:{target.key}"
        error = {"message": message, "code": code, "retry_possible": retry_possible}
        self._audit.emit(
            ev.build_event(
                ev.CRD_FAILED, signal, self._clock(), correlation_id=correlation, error=error
            )
        )

    def _candidate(self, signal: Signal, fingerprint: str, now: datetime) -> RemediationRequest:
        """The RR to store if the signal turns out to be new."""
        target = signal.target
        assert target is not None
        labels = {k: truncate_utf8(v, MAX_LABEL_VALUE_BYTES) for k, v in signal.labels.items()}
        spec: dict[str, object] = {
            "signalFingerprint": fingerprint,
            "signalName": signal.signal_name,
            "severity": signal.severity,
            "signalType": "alert",
            "signalSource": signal.source,
            "targetType": "kubernetes",
            "targetResource": target.to_json(),
            "firingTime": format_time(signal.firing_time),
            "receivedTime": format_time(signal.received_time),
            "signalLabels": labels,
            "signalAnnotations": {
                k: truncate_utf8(v, MAX_ANNOTATION_VALUE_BYTES)
                for k, v in signal.annotations.items()
            },
            # Kubernaut's downstream services read the target namespace and labels here
            "providerData": orjson.dumps(
                {"namespace": target.namespace, "labels": labels}
            ).decode(),
            "originalPayload": signal.original_payload.decode(errors="replace"),
        }
        if signal.cluster_id:
            spec["clusterID"] = signal.cluster_id
        return RemediationRequest(
            name=f"rr-{fingerprint[:12]}-{random_hex(8)}",
            namespace=self._namespace,
            fingerprint=fingerprint,
            created_at=now,
            spec=spec,
            deduplication=Deduplication(now, now, 1),
        )


def _request_id() -> str:
    return request_id_var.get() or random_hex(16)


def _duplicate_of(rr: RemediationRequest) -> str:
    """What a duplicate was folded into: an active RR, or a finished one that still suppresses
    new ones (awaiting manual review, or in its cool-down)."""
    if is_active(rr.overall_phase):
        return "duplicate of an active remediation"
    if rr.outcome == MANUAL_REVIEW_OUTCOME:
        return "duplicate of a finished remediation awaiting manual review"
    until = rr.next_allowed_execution
    shown = f" until {format_time(until)}" if until is not None else ""
    return f"duplicate of a finished remediation in its cool-down{shown}"
