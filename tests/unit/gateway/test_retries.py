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


def test_not_kept_once_a_journal_write_failed_since_they_were_decided() -> None:
    """The alerts decided before a store failure had their audit events staged, not yet
    known durable: when a journal write failed in between (the journal's `mark()` moved),
    answering them from memory acknowledged them without their events. They are decided
    again instead."""
    kept = retries.DecidedBefore()
    body = b'{"alerts": [1, 2]}'
    answer = {0: Rendered({"status": "created"}, "created")}
    kept.remember(body, answer, mark=3)
    assert kept.take(body, mark=4) == {}  # a write failed since: decided again
    kept.remember(body, answer, mark=4)
    assert kept.take(body, mark=4) == answer
