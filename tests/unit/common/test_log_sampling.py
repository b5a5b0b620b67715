"""uvicorn's warning for each malformed request is passed once per kind and interval: a
client cannot fill the logs by sending garbage."""

from __future__ import annotations

import logging

from signalgate.common.logging import _ClientMistakesSampled


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
