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
