"""schemathesis against the Gateway's own OpenAPI document, on a running Gateway.

Every generated request must get an answer that is no 5xx and that matches the document
(status code, content type, body schema).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.support.services import ADMIN_TOKEN, ServiceProcess

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def gateway_schema(gateway: ServiceProcess) -> Any:
    return schemathesis.openapi.from_url(f"{gateway.api_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("gateway_schema")


@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi(case: Any) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, checks=CHECKS)
