"""What every schemathesis run of ours checks: no 5xx, and answers that match the document."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from schemathesis import checks

CONFORMANCE_CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def fuzz_settings(max_examples: int) -> Any:
    """Bounded runs: a fixed number of examples per operation, no per-example deadline."""
    return settings(
        max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck)
    )
