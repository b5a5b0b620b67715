"""schemathesis against the Gateway's own OpenAPI document, on a running Gateway.

Every generated request must get an answer that is no 5xx and that matches the document
(status code, content type, body schema).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis

from tests.support.openapi import CONFORMANCE_CHECKS, fuzz_settings
from tests.support.services import ADMIN_TOKEN, ServiceProcess


@pytest.fixture(scope="module")
def gateway_schema(gateway: ServiceProcess) -> Any:
    return schemathesis.openapi.from_url(f"{gateway.api_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("gateway_schema")


@schema.parametrize()
@fuzz_settings(100)  # type: ignore[untyped-decorator]
def test_api_conforms_to_its_openapi(case: Any) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, checks=CONFORMANCE_CHECKS
    )
