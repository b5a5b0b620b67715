"""Databases made before Kubernaut's current RR layout are migrated on open (schema 1 → 2).

A version-1 database is built with the version-1 migration alone and filled with rows the
way the earlier Gateway wrote them (a `signal_resolved_at` mark, the old managed-by label,
a spec without providerData or targetResource.apiVersion); opening it with today's store
must show each RR in the new layout, and keep it working.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from signalgate.remediation.model import SignalResolved
from signalgate.remediation.postgres import PostgresRemediationStore
from signalgate.remediation.schema import migrations
from signalgate.remediation.sqlite import SqliteRemediationStore
from signalgate.remediation.store import Decision, RemediationStore
from tests.integration.remediation.rrcases import T0, later, make_rr

OLD_LABELS = (
    '{"app.kubernetes.io/managed-by":"signalgate-gateway",'
    '"app.kubernetes.io/component":"remediation"}'
)


def old_rows() -> list[tuple[str, str, str, datetime | None, dict[str, Any]]]:
    """(name, fingerprint, kind, target namespace, signal_resolved_at, spec) as version 1 had."""
    out = []
    for resource, kind, namespace, resolved in (
        ("web", "Deployment", "prod", True),
        ("worker-1", "Node", "", False),
        ("api-0", "Pod", "prod", False),
    ):
        rr = make_rr(resource, kind=kind, namespace=namespace)
        spec = dict(rr.spec)
        spec.pop("providerData", None)
        spec["targetResource"] = {"kind": kind, "name": resource} | (
            {"namespace": namespace} if namespace else {}
        )
        out.append((rr.name, rr.fingerprint, namespace, later(5) if resolved else None, spec))
    return out


def check_migrated(rrs: dict[str, object], names: list[str]) -> None:
    web, node, pod = (rrs[name] for name in names)
    assert web.signal_resolved == SignalResolved(True, later(5))  # type: ignore[attr-defined]
    assert node.signal_resolved is None  # type: ignore[attr-defined]
    for rr in (web, node, pod):
        document = rr.to_json()  # type: ignore[attr-defined]
        assert document["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gateway-service"
        provider = orjson.loads(document["spec"]["providerData"])
        assert provider["namespace"] == document["spec"]["targetResource"].get("namespace", "")
        assert provider["labels"] == document["spec"]["signalLabels"]
    assert web.spec["targetResource"]["apiVersion"] == "apps/v1"  # type: ignore[attr-defined]
    assert node.spec["targetResource"]["apiVersion"] == "v1"  # type: ignore[attr-defined]
    assert pod.spec["targetResource"]["apiVersion"] == "v1"  # type: ignore[attr-defined]


async def still_works(store: RemediationStore, names: list[str]) -> None:
    again = await store.record_firing(make_rr("web", kind="Deployment", at=later(9)), later(9))
    assert again.decision is Decision.DUPLICATE and again.rr.name == names[0]
    assert again.rr.signal_resolved == SignalResolved(False, later(9))


async def test_a_version_1_sqlite_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(migrations("sqlite")[0].sql + "\nPRAGMA user_version = 1;")
    stamp = "2026-03-01T12:00:00.123456Z"
    rows = old_rows()
    for name, fp, namespace, resolved_at, spec in rows:
        conn.execute(
            "INSERT INTO remediation_requests (name, namespace, fingerprint, created_at, "
            "target_namespace, phase, active, signal_resolved_at, first_seen_at, last_seen_at, "
            "occurrence_count, labels, spec) VALUES (?, 'kubernaut-system', ?, ?, ?, 'Pending', "
            "1, ?, ?, ?, 1, ?, ?)",
            (
                name,
                fp,
                stamp,
                namespace,
                None if resolved_at is None else "2026-03-01T12:00:05.123456Z",
                stamp,
                stamp,
                OLD_LABELS,
                orjson.dumps(spec).decode(),
            ),
        )
    conn.commit()
    conn.close()
    store = SqliteRemediationStore(path)
    await store.open()
    try:
        names = [str(row[0]) for row in rows]
        check_migrated({n: await store.get(n) for n in names}, names)
        await still_works(store, names)
    finally:
        await store.close()


async def test_a_version_1_postgres_database_is_migrated(postgres_dsn: str) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(migrations("postgres")[0].sql)
        await conn.execute(
            "CREATE TABLE remediation_schema_migrations (version integer PRIMARY KEY, "
            "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute(
            "INSERT INTO remediation_schema_migrations (version, name) VALUES (1, $1)",
            migrations("postgres")[0].name,
        )
        rows = old_rows()
        for name, fp, namespace, resolved_at, spec in rows:
            await conn.execute(
                "INSERT INTO remediation_requests (name, namespace, fingerprint, created_at, "
                "target_namespace, phase, active, signal_resolved_at, first_seen_at, "
                "last_seen_at, occurrence_count, labels, spec) VALUES ($1, 'kubernaut-system', "
                "$2, $3, $4, 'Pending', true, $5, $3, $3, 1, $6, $7)",
                name,
                fp,
                T0,
                namespace,
                resolved_at,
                OLD_LABELS,
                orjson.dumps(spec).decode(),
            )
    finally:
        await conn.close()
    store = PostgresRemediationStore(postgres_dsn)
    await store.open()
    try:
        names = [str(row[0]) for row in rows]
        check_migrated({n: await store.get(n) for n in names}, names)
        await still_works(store, names)
    finally:
        await store.close()
