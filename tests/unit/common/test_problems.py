"""Problem documents read like Kubernaut's: `type` URIs under https://kubernaut.ai/problems/
and the HTTP reason phrase as the title."""

from __future__ import annotations

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
