"""The consumers' status PATCH body (a JSON merge patch) → a validated `StatusPatch`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from signalgate.gateway.adapters.parsing import PayloadError, parse_timestamp
from signalgate.remediation.model import PATCHABLE_STATUS_FIELDS, UNSET, StatusPatch, Unset

MAX_TEXT = 32_768


def parse_status_patch(body: dict[str, Any]) -> StatusPatch:
    for key in body:
        if key not in PATCHABLE_STATUS_FIELDS:
            owner = (
                " (owned by the Gateway)" if key in ("deduplication", "signalResolvedAt") else ""
            )
            raise PayloadError(
                f"{key}: cannot be set{owner}; allowed fields: {', '.join(PATCHABLE_STATUS_FIELDS)}"
            )
    phase = body.get("overallPhase")
    if "overallPhase" in body and (not isinstance(phase, str) or not 1 <= len(phase) <= 64):
        raise PayloadError("overallPhase: must be a phase name (a string of 1 to 64 characters)")
    next_allowed: datetime | Unset | None = UNSET
    if "nextAllowedExecution" in body:
        next_allowed = parse_timestamp(body["nextAllowedExecution"], "nextAllowedExecution")
    return StatusPatch(
        overall_phase=phase,
        outcome=_optional_text(body, "outcome", 128),
        next_allowed_execution=next_allowed,
        message=_optional_text(body, "message", MAX_TEXT),
    )


def _optional_text(body: dict[str, Any], key: str, limit: int) -> str | Unset | None:
    if key not in body:
        return UNSET
    value = body[key]
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise PayloadError(f"{key}: must be a string of at most {limit} characters or null")
    return value
