"""Any text in any query parameter or path segment of either service: never a 5xx.

Hypothesis draws arbitrary Unicode (control characters, other scripts' digits, huge numbers)
for every parameter each GET operation declares in the service's own OpenAPI document, on
SQLite and on PostgreSQL (where text reaches the database as query arguments). A control
character must be refused with a 400 naming the parameter by the Gateway; DataStorage, which
stores text as written, refuses only NUL in a filter's value (its filters must find what it
stored).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.datastorage.dstools import ADMIN_TOKEN as DS_TOKEN
from tests.integration.datastorage.dstools import datastorage_process
from tests.support.services import ADMIN_TOKEN, ServiceProcess, gateway_process

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
NUL = re.compile(r"\x00")
values = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["²", "٣", "1e3", "0001-01-01T00:00:00+01:00", "9999-12-31", "\x00"]),
)


@pytest.fixture(params=["sqlite", "postgres"])
def services(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[list[tuple[ServiceProcess, str, re.Pattern[str]]]]:
    env: dict[str, str] = {}
    ds_env: dict[str, str] = {}
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        env["SIGNALGATE_STORE__DSN"] = server.create_database(f"gw_{uuid.uuid4().hex[:12]}")
        ds_env["SIGNALGATE_STORE__DSN"] = server.create_database(f"ds_{uuid.uuid4().hex[:12]}")
        ds_env["SIGNALGATE_STORE__AUTOMIGRATE"] = "true"
    gateway = gateway_process(tmp_path / "gw", env=env).start()
    datastorage = datastorage_process(tmp_path / "ds", env=ds_env).start()
    yield [(gateway, ADMIN_TOKEN, CONTROL), (datastorage, DS_TOKEN, NUL)]
    gateway.stop()
    datastorage.stop()


def get_operations(service: ServiceProcess) -> list[tuple[str, list[dict[str, Any]]]]:
    document = httpx.get(f"{service.api_url}/openapi.json", timeout=10).json()
    operations = []
    for path, item in document["paths"].items():
        if "get" in item:
            parameters = [*item.get("parameters", []), *item["get"].get("parameters", [])]
            operations.append((path, [p for p in parameters if p["in"] in ("query", "path")]))
    return operations


def probe_service(service: ServiceProcess, token: str, refused: re.Pattern[str]) -> None:
    operations = get_operations(service)
    assert operations
    client = httpx.Client(
        base_url=service.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def probe(data: st.DataObject) -> None:
        path, parameters = data.draw(st.sampled_from(operations))
        query: dict[str, str] = {}
        for parameter in parameters:
            value = data.draw(values)
            if parameter["in"] == "path":
                path = path.replace("{" + parameter["name"] + "}", quote(value, safe=""))
            elif data.draw(st.booleans()):
                query[parameter["name"]] = value
        answer = client.get(path, params=query)
        assert answer.status_code < 500, (path, query, answer.text[:300])
        if any(refused.search(v) for v in query.values()):
            assert answer.status_code == 400, (path, query, answer.text[:300])

    with client:
        probe()


def test_no_parameter_value_makes_a_5xx(
    services: list[tuple[ServiceProcess, str, re.Pattern[str]]],
) -> None:
    for service, token, refused in services:
        probe_service(service, token, refused)
