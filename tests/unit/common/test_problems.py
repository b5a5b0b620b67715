"""Problem documents read like Kubernaut's: `type` URIs under https://kubernaut.ai/problems/
and the HTTP reason phrase as the title."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
import pytest

from signalgate.common.problems import TITLES, Problem, problem_response


@pytest.mark.parametrize(
    ("status", "slug", "title"),
    [
        (400, "validation-error", "Bad Request"),
        (401, "unauthorized", "Unauthorized"),
        (404, "not-found", "Not Found"),
        (405, "method-not-allowed", "Method Not Allowed"),
        (415, "unsupported-media-type", "Unsupported Media Type"),
        (500, "internal-error", "Internal Server Error"),
        (503, "service-unavailable", "Service Unavailable"),
        (504, "gateway-timeout", "Gateway Timeout"),
    ],
)
def test_type_uri_and_title_are_kubernauts(status: int, slug: str, title: str) -> None:
    body = orjson.loads(problem_response(status, slug, "why", "/x").body)
    assert body["type"] == f"https://kubernaut.ai/problems/{slug}"
    assert body["title"] == title
    assert (body["status"], body["detail"], body["instance"]) == (status, "why", "/x")


def test_every_slug_has_a_title_and_unknown_slugs_are_refused() -> None:
    assert all(TITLES.values())
    with pytest.raises(ValueError, match="unknown problem slug"):
        Problem(400, "no-such-problem", "x")


async def test_the_ops_listeners_problems_carry_a_request_id() -> None:
    """The ops routes' 404 and 405 said `"request_id": ""`: they had no request id at all."""
    import httpx
    from starlette.requests import Request
    from starlette.responses import Response

    from signalgate.common.ops import ops_app

    async def ok(request: Request) -> Response:
        return Response("ok")

    transport = httpx.ASGITransport(app=ops_app(ok, ok, ok))
    async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
        missing = await client.get("/nope", headers={"X-Request-ID": "probe-1"})
        assert missing.status_code == 404
        assert missing.json()["request_id"] == "probe-1" == missing.headers["x-request-id"]
        wrong = await client.post("/healthz")
        assert wrong.status_code == 405
        assert wrong.json()["request_id"] == wrong.headers["x-request-id"] != ""
        assert (await client.get("/healthz")).headers["x-content-type-options"] == "nosniff"


async def test_bodies_arriving_together_are_bounded() -> None:
    """200 senders trickling 4 MB bodies in, each within its own bounds, held 880 MB (an
    outside check): a chunk past ARRIVING_BODIES full bodies is refused with 503, and the
    bytes count again once the bodies are in."""
    from signalgate.common import http
    from signalgate.common.problems import Problem

    gate = asyncio.Event()

    def sender(first: bytes, rest: bytes = b"") -> Callable[[], Awaitable[dict[str, object]]]:
        parts = [first, rest]

        async def receive() -> dict[str, object]:
            if len(parts) == 1:
                await gate.wait()  # the rest of the body comes later
            return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

        return receive

    scope: dict[str, object] = {"type": "http", "headers": []}
    slow = [
        asyncio.create_task(http.read_body(scope, sender(b" " * 999, b" "), 1000))
        for _ in range(http.ARRIVING_BODIES)
    ]
    await asyncio.sleep(0)  # each has its first 999 bytes
    with pytest.raises(Problem) as refused:
        await http.read_body(scope, sender(b" " * 100), 1000)
    assert refused.value.status == 503 and "arriving at once" in refused.value.detail
    gate.set()
    assert [len(body) for body in await asyncio.gather(*slow)] == [1000] * len(slow)
    assert await http.read_body(scope, sender(b" " * 100), 1000) == b" " * 100
