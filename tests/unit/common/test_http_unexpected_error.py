"""An unexpected error is answered as a 500 problem and the request ends normally.

Starlette re-raises after an `Exception` handler; uvicorn then closes the connection, so one
bug in one request would cost the client its keep-alive connection. Here the app must finish
without raising (the ASGI transport raises whatever the app raises).
"""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from signalgate.common.http import api_app


async def explode(request: Request) -> Response:
    raise RuntimeError("secret=hunter2")


async def test_a_500_leaves_the_connection_usable() -> None:
    app = api_app([Route("/x", explode)], lambda exc: None, ())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        answer = await client.get("/x")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert "hunter2" not in answer.text


async def test_control_characters_in_the_target_are_refused_before_routing() -> None:
    app = api_app([Route("/x", explode)], lambda exc: None, ())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        path = await client.get("/x%00")
        query = await client.get("/x", params={"q": "a\x7fb"})
    assert path.status_code == 400 and "path" in path.json()["detail"]
    assert query.status_code == 400 and query.json()["field_errors"] == {
        "q": "contains the control character U+007F"
    }


async def test_a_direct_route_answers_errors_as_the_routed_ones_do() -> None:
    route = Route("/x", explode, methods=["POST"])
    app = api_app([route], lambda exc: None, (), direct=[route])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        failed = await client.post("/x")
        wrong_method = await client.get("/x")
    assert failed.status_code == 500
    assert failed.headers["content-type"] == "application/problem+json"
    assert "hunter2" not in failed.text
    assert failed.headers["x-content-type-options"] == "nosniff"  # the envelope's headers
    assert wrong_method.status_code == 405
    assert wrong_method.json()["type"].endswith("/method-not-allowed")
