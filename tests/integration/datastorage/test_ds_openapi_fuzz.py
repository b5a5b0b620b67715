"""schemathesis against DataStorage's own OpenAPI document, on a running DataStorage.

Every generated request must get an answer that is no 5xx and that matches the document
(status code, content type, body schema). Bounded: a fixed number of examples per operation.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from dstools import ADMIN_TOKEN
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.support.services import ServiceProcess

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def datastorage_schema(sqlite_server: ServiceProcess) -> Any:
    return schemathesis.openapi.from_url(f"{sqlite_server.api_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("datastorage_schema")


@schema.parametrize()
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case: Any) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, checks=CHECKS)


def test_the_fuzzed_server_logged_no_unexpected_error(sqlite_server: ServiceProcess) -> None:
    output = sqlite_server.output()
    assert "Traceback" not in output
    assert '"level":"error"' not in output
