"""`POST /api/v1/audit/verify-chain` answers in Kubernaut's form (its `VerifyChainResponse`).

The chain is checked once, by `chain.ChainVerifier`; this module only words the result the way
Kubernaut's clients read it: `is_valid`, how many events were checked and how many hold,
and for a broken chain the first tampered event with the hash it should have had.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from signalgate.datastorage.chain import (
    ChainBreak,
    ChainReport,
    canonical,
    event_hash,
    format_timestamp,
)


def kubernaut_verification(
    report: ChainReport, broken: ChainBreak | None, now: datetime | None = None
) -> dict[str, Any]:
    """`report` in Kubernaut's words; `broken` is the first broken row the verifier kept
    (`ChainVerifier.broken`), so the chain's rows need not be held to name it."""
    verified = report.events  # every stored row holds (or the chain's end is missing)
    tampered: list[dict[str, Any]] = []
    if not report.valid and broken is not None:
        verified = broken.verified
        tampered.append(_tampered(broken.row, broken.previous_hash))
    if report.valid and not report.events:  # valid as an empty chain is: a mistyped id?
        message = "no event is stored under this correlation id: nothing to verify"
    elif report.valid:
        message = f"hash chain intact: {report.events} event(s) verified"
    elif report.first_broken_event_id is not None:
        message = (
            f"hash chain broken at event {report.first_broken_event_id}: "
            f"{verified} of {report.events} event(s) verified"
        )
    else:  # every stored row holds, but events are missing (a deleted tail or chain)
        message = (
            f"hash chain broken: {report.detail or 'events are missing'} "
            f"({verified} of {report.events} stored event(s) verified)"
        )
    body: dict[str, Any] = {
        "correlation_id": report.correlation_id,
        "is_valid": report.valid,
        "total_events": report.events,
        "verified_events": verified,
        "verification_time": format_timestamp(now or datetime.now(UTC)),
        "message": message,
    }
    if tampered:
        body["tampered_events"] = tampered
    return body


def _tampered(row: Mapping[str, Any], previous: str) -> dict[str, Any]:
    stamp = row.get("event_timestamp")
    out: dict[str, Any] = {
        "event_id": str(row["event_id"]),
        "expected_hash": event_hash(previous, canonical(row)),
        "actual_hash": str(row["event_hash"]),
        "previous_hash": str(row["previous_event_hash"]),
        "message": "event hash or link to the previous event does not match",
    }
    if isinstance(stamp, datetime):
        out["event_timestamp"] = format_timestamp(stamp)
    elif isinstance(stamp, str):
        out["event_timestamp"] = stamp
    return out
