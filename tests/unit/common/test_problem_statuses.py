"""Each problem slug has one status (common/problems.py PROBLEMS): a call that pairs a slug
with another status is a bug, refused where it is made rather than answered inconsistently."""

from __future__ import annotations

import pytest

from signalgate.common.problems import PROBLEMS, Problem, problem_response


def test_a_slug_with_a_status_not_its_own_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'not-found' is status 404, not 400"):
        Problem(400, "not-found", "x")
    with pytest.raises(ValueError, match=r"'service-unavailable' is status 503, not 502"):
        problem_response(502, "service-unavailable", "x", "/x")


def test_every_slug_answers_with_its_own_status() -> None:
    for slug, (status, _) in PROBLEMS.items():
        assert Problem(status, slug, "x").to_response("/x").status_code == status
