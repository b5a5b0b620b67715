"""uvicorn's warning for each malformed request is passed once per kind and interval: a
client cannot fill the logs by sending garbage."""

from __future__ import annotations

import asyncio
import logging

import pytest

from signalgate.common.logging import SampledLog, _ClientMistakesSampled


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", logging.WARNING, "", 0, message, (), None)


def test_one_line_per_kind_and_interval_with_the_count_held_back() -> None:
    now = [1000.0]
    sampled = _ClientMistakesSampled(interval=60.0, clock=lambda: now[0])
    invalid = "Invalid HTTP request received."
    passed = [sampled.filter(record(invalid)) for _ in range(500)]
    assert passed.count(True) == 1 and passed[0]
    # another kind has its own interval
    assert sampled.filter(record("Unsupported upgrade request."))
    now[0] += 61.0
    later = record(invalid)
    assert sampled.filter(later)
    assert later.getMessage() == f"{invalid} (499 more since the last one)"
    assert not sampled.filter(record(invalid))


def test_other_lines_pass_untouched() -> None:
    sampled = _ClientMistakesSampled(interval=60.0, clock=lambda: 0.0)
    for _ in range(3):
        line = record("Application startup complete.")
        assert sampled.filter(line)
        assert line.getMessage() == "Application startup complete."


def test_a_line_every_request_can_cause_is_written_once_per_kind_and_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 503 for every signal while DataStorage was down wrote one line each: 130 MB of log
    a minute. Now one per kind and interval, the next saying how many were held back."""
    now = [0.0]
    logger = logging.getLogger("test.sampled")
    sampled = SampledLog(logger, interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.sampled"):
        for _ in range(1000):
            sampled.log(logging.WARNING, (503, "service-unavailable"), "request failed", {})
        sampled.log(logging.INFO, (400, "validation-error"), "request refused", {})
        now[0] = 10.5
        sampled.log(logging.WARNING, (503, "service-unavailable"), "request failed", {})
    lines = [(r.getMessage(), getattr(r, "held_back", 0)) for r in caplog.records]
    assert lines == [("request failed", 0), ("request refused", 0), ("request failed", 999)]


async def test_a_burst_that_ends_still_gets_its_count(caplog: pytest.LogCaptureFixture) -> None:
    """The count held back was written only with the next line of its kind: a burst that
    simply ended (100 answers of 504, then quiet) never showed. Its interval's end writes it."""
    logger = logging.getLogger("test.sampled.burst")
    sampled = SampledLog(logger, interval=0.05)
    with caplog.at_level(logging.INFO, logger="test.sampled.burst"):
        for _ in range(100):
            sampled.log(logging.WARNING, (504, "gateway-timeout"), "request failed", {})
        await asyncio.sleep(0.2)
    lines = [(r.getMessage(), getattr(r, "held_back", 0)) for r in caplog.records]
    assert lines == [("request failed", 0), ("request failed", 99)]
