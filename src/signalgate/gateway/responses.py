"""Outcome → HTTP answer for the signal routes (docs/gateway.md, Responses): the one home of those
status codes and bodies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from signalgate.gateway.pipeline import Outcome
from signalgate.remediation.model import format_time

STATUS_CODES = {"created": 201, "duplicate": 202, "resolved": 202, "rejected": 200, "ignored": 200}
_SUMMARY_KEYS = {
    "created": "created",
    "duplicate": "deduplicated",
    "resolved": "resolved",
    "rejected": "rejected",
    "ignored": "ignored",
    "failed": "failed",
}


def single(outcome: Outcome) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"status": outcome.kind, "message": outcome.message}
    if outcome.fingerprint:
        body["fingerprint"] = outcome.fingerprint
    rr = outcome.rr
    if outcome.kind in ("created", "duplicate"):
        body["duplicate"] = outcome.kind == "duplicate"
    if rr is not None:
        body["remediationRequestName"] = rr.name
        body["remediationRequestNamespace"] = rr.namespace
    if outcome.kind == "duplicate" and rr is not None:
        body["metadata"] = {
            "count": rr.deduplication.occurrence_count,
            "remediationRequestRef": rr.ref,
            "firstOccurrence": format_time(rr.deduplication.first_seen_at),
            "lastOccurrence": format_time(rr.deduplication.last_seen_at),
        }
    if outcome.rejection is not None:
        body["rejection"] = outcome.rejection.to_json()
    return STATUS_CODES[outcome.kind], body


class Rendered(NamedTuple):
    """One alert's entry of a webhook's answer, and the summary count it adds to: what is
    kept of a decision for the retry of a failed webhook (`gateway.retries`)."""

    item: dict[str, Any]
    counted_as: str


def rendered(result: Outcome | str | Rendered) -> Rendered:
    """An alert's entry in `multi`; a `str` is the error of an alert refused as invalid:
    `rejected` with its `error`, as Kubernaut's Gateway reports it."""
    if isinstance(result, Rendered):
        return result
    if isinstance(result, str):
        return Rendered({"status": "rejected", "error": result}, "rejected")
    item: dict[str, Any] = {"status": result.kind, "message": result.message}
    if result.fingerprint:
        item["fingerprint"] = result.fingerprint
    if result.rr is not None:
        item["remediationRequestName"] = result.rr.name
    if result.rejection is not None:
        item["rejection"] = result.rejection.to_json()
    return Rendered(item, _SUMMARY_KEYS[result.kind])


def multi(results: Sequence[Outcome | str | Rendered]) -> tuple[int, dict[str, Any]]:
    """207 for a webhook of several alerts, an entry per alert (`rendered`). (`failed`,
    Kubernaut's count of alerts it could not store, stays 0: a store failure here fails the
    whole request with a 5xx, so Alertmanager sends the group again.)"""
    summary = dict.fromkeys(_SUMMARY_KEYS.values(), 0)
    summary["total"] = len(results)
    items: list[dict[str, Any]] = []
    for result in results:
        item, counted_as = rendered(result)
        items.append(item)
        summary[counted_as] += 1
    return 207, {"results": items, "summary": summary}
