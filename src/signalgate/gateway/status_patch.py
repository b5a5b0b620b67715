"""The consumers' status PATCH body (a JSON merge patch in Kubernaut's layout) → a validated
`StatusPatch`.

Accepted: `{overallPhase?, message?, completionStatus?: {outcome?}, routingStatus?:
{nextAllowedExecution?}}`. Values are checked against Kubernaut's enums, so nothing is
stored here that Kubernaut's CRD would refuse in a cluster (a phase outside the enum would
otherwise leave an RR active for good).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from signalgate.gateway.adapters.parsing import PayloadError, parse_timestamp
from signalgate.remediation.model import OUTCOMES, PHASES, UNSET, StatusPatch, Unset

MAX_TEXT = 32_768
# top-level key -> the keys it may hold (None: a plain value)
ALLOWED: dict[str, tuple[str, ...] | None] = {
    "overallPhase": None,
    "message": None,
    "completionStatus": ("outcome",),
    "routingStatus": ("nextAllowedExecution",),
}
GATEWAY_OWNED = ("deduplication", "conditions")


def parse_status_patch(body: dict[str, Any]) -> StatusPatch:
    for key, value in body.items():
        if key not in ALLOWED:
            owner = " (owned by the Gateway)" if key in GATEWAY_OWNED else ""
            raise PayloadError(f"{key}: cannot be set{owner}; allowed fields: {_allowed()}")
        inner = ALLOWED[key]
        if inner is not None and value is not None:
            if not isinstance(value, dict):
                raise PayloadError(f"{key}: must be an object ({{{', '.join(inner)}}}) or null")
            for sub in value:
                if sub not in inner:
                    raise PayloadError(f"{key}.{sub}: cannot be set; allowed fields: {_allowed()}")
    phase = body.get("overallPhase")
    if "overallPhase" in body and phase not in PHASES:
        raise PayloadError(
            f"overallPhase: {_show(phase)} is not a phase; allowed values: {', '.join(PHASES)}"
        )
    outcome: str | Unset | None = UNSET
    completion = body.get("completionStatus", UNSET)
    if completion is None:
        outcome = None
    elif isinstance(completion, dict) and "outcome" in completion:
        outcome = completion["outcome"]
        if outcome is not None and outcome not in OUTCOMES:
            raise PayloadError(
                f"completionStatus.outcome: {_show(outcome)} is not an outcome; allowed "
                f"values: {', '.join(OUTCOMES)} (or null to clear)"
            )
    next_allowed: datetime | Unset | None = UNSET
    routing = body.get("routingStatus", UNSET)
    if routing is None:
        next_allowed = None
    elif isinstance(routing, dict) and "nextAllowedExecution" in routing:
        next_allowed = parse_timestamp(
            routing["nextAllowedExecution"], "routingStatus.nextAllowedExecution"
        )
    return StatusPatch(
        overall_phase=phase,
        outcome=outcome,
        next_allowed_execution=next_allowed,
        message=_optional_text(body, "message", MAX_TEXT),
    )


def _allowed() -> str:
    names: list[str] = []
    for key, inner in ALLOWED.items():
        names.extend([key] if inner is None else [f"{key}.{sub}" for sub in inner])
    return ", ".join(names)


def _show(value: Any) -> str:
    """A value as the JSON it was sent as (null, true, 3), strings quoted and cut."""
    if isinstance(value, str):
        return f"'{value[:64]}'"
    return orjson.dumps(value).decode()[:64]


def _optional_text(body: dict[str, Any], key: str, limit: int) -> str | Unset | None:
    if key not in body:
        return UNSET
    value = body[key]
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise PayloadError(f"{key}: must be a string of at most {limit} characters or null")
    return value
