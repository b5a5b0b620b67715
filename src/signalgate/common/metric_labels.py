"""Bounded label values and labelled children, for both services' Prometheus metrics.

A label value taken from a request makes one series per distinct value: 50,000 alerts with
made-up severities would make 50,000 series. So every such label is mapped onto a closed
set, the rest folded into `OTHER`. And each label set's child is made once
(`LabelledChildren`): prometheus_client validates the values and takes a lock on every
`labels()` call, a few µs that every signal paid several times.
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import Counter, Histogram

OTHER = "other"  # every value beyond a label's closed set

M = TypeVar("M", Counter, Histogram)


class LabelledChildren:
    """`metric.labels(*values)`, made once per label set. Bounded like the series
    themselves: every value passed here comes from a closed set."""

    def __init__(self) -> None:
        self._made: dict[tuple[Counter | Histogram, tuple[str, ...]], Counter | Histogram] = {}

    def __call__(self, metric: M, *values: str) -> M:
        key = (metric, values)
        found = self._made.get(key)
        if found is None:
            found = self._made[key] = metric.labels(*values)
        return found  # type: ignore[return-value]
