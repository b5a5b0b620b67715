"""A failed webhook's decisions are kept for one retry of the same bytes, for a while."""

from __future__ import annotations

import pytest

from signalgate.gateway import retries
from signalgate.gateway.responses import Rendered


def test_kept_for_one_retry_of_the_same_body(monkeypatch: pytest.MonkeyPatch) -> None:
    kept = retries.DecidedBefore()
    body, other = b'{"alerts": [1, 2]}', b'{"alerts": [1, 3]}'
    answer: dict[int, retries.Kept] = {0: Rendered({"status": "created"}, "created")}
    kept.remember(body, answer)
    assert kept.take(other) == {}
    assert kept.take(body) == answer
    assert kept.take(body) == {}  # taken: a later notification counts again
    monkeypatch.setattr(retries, "KEPT_SECONDS", 0.0)
    kept.remember(body, answer)
    assert kept.take(body) == {}  # its retry came too late
