"""schemathesis against DataStorage's own OpenAPI document, on a running DataStorage.

Every generated request must get an answer that is no 5xx and that matches the document
(status code, content type, body schema). Bounded: a fixed number of examples per operation.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis

from tests.integration.datastorage.dstools import ADMIN_TOKEN
from tests.support.openapi import CONFORMANCE_CHECKS, fuzz_settings
from tests.support.services import ServiceProcess


@pytest.fixture(scope="module")
def datastorage_schema(sqlite_server: ServiceProcess) -> Any:
    return schemathesis.openapi.from_url(f"{sqlite_server.api_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("datastorage_schema")


@schema.parametrize()
@fuzz_settings(120)  # type: ignore[untyped-decorator]
def test_api_conforms_to_its_openapi(case: Any) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, checks=CONFORMANCE_CHECKS
    )


def test_the_fuzzed_server_logged_no_unexpected_error(sqlite_server: ServiceProcess) -> None:
    output = sqlite_server.output()
    assert "Traceback" not in output
    assert '"level":"error"' not in output
