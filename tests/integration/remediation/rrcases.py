"""RR candidates and times shared by the RR store tests."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from signalgate.remediation.model import Deduplication, RemediationRequest
from signalgate.remediation.store import RemediationStore

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def fingerprint(name: str, namespace: str = "prod", kind: str = "Pod") -> str:
    return hashlib.sha256(f"{namespace}:{kind}:{name}".encode()).hexdigest()


def make_rr(
    resource: str = "web-1",
    *,
    at: datetime = T0,
    namespace: str = "prod",
    kind: str = "Pod",
    signal: str = "KubePodCrashLooping",
    payload: str = '{"alerts": []}',
) -> RemediationRequest:
    """A new-RR candidate as the Gateway would make it for a firing signal at `at`."""
    fp = fingerprint(resource, namespace, kind)
    spec: dict[str, Any] = {
        "signalFingerprint": fp,
        "signalName": signal,
        "severity": "critical",
        "signalType": "alert",
        "signalSource": "prometheus",
        "targetType": "kubernetes",
        "targetResource": {"kind": kind, "name": resource, "namespace": namespace},
        "firingTime": "2026-03-01T11:59:00Z",
        "receivedTime": "2026-03-01T12:00:00Z",
        "signalLabels": {"alertname": signal, "pod": resource, "note": "ünïcode ✓"},
        "signalAnnotations": {"summary": "crash looping"},
        "originalPayload": payload,
    }
    return RemediationRequest(
        name=f"rr-{fp[:12]}-{secrets.token_hex(4)}",
        namespace="kubernaut-system",
        fingerprint=fp,
        created_at=at,
        spec=spec,
        deduplication=Deduplication(first_seen_at=at, last_seen_at=at, occurrence_count=1),
    )


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass
class Backend:
    """Makes stores of one kind sharing one database (file or PostgreSQL database)."""

    kind: str
    make: Callable[..., RemediationStore]
    opened: list[RemediationStore] = field(default_factory=list)

    async def open(self, **options: Any) -> RemediationStore:
        store = self.make(**options)
        await store.open()
        self.opened.append(store)
        return store
