"""The supervisor's `/metrics`: every worker's series, one family per name, labelled `worker`
(common/workers.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from signalgate.common.workers import merge_worker_metrics


def worker_text(received: int, seconds: float, inflight: int) -> str:
    registry = CollectorRegistry()
    Counter("signals_received_total", "Signals", ["source"], registry=registry).labels(
        "prometheus"
    ).inc(received)
    Histogram("request_seconds", "Latency", registry=registry, buckets=(0.01, 1)).observe(seconds)
    Gauge("inflight", "In flight", registry=registry).set(inflight)
    return generate_latest(registry).decode()


def test_each_workers_series_keeps_its_values_under_its_worker_label() -> None:
    merged = merge_worker_metrics([(0, worker_text(3, 0.005, 1)), (1, worker_text(5, 0.5, 0))])
    text = merged.decode()
    assert text.count("# HELP signals_received_total") == 1
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    counter = "signals_received_total"
    assert samples[(counter, (("source", "prometheus"), ("worker", "0")))] == 3
    assert samples[(counter, (("source", "prometheus"), ("worker", "1")))] == 5
    assert samples[("request_seconds_bucket", (("le", "0.01"), ("worker", "0")))] == 1
    assert samples[("request_seconds_bucket", (("le", "0.01"), ("worker", "1")))] == 0
    assert samples[("request_seconds_count", (("worker", "1"),))] == 1
    assert samples[("inflight", (("worker", "0"),))] == 1


def test_no_worker_answering_gives_an_empty_exposition() -> None:
    assert merge_worker_metrics([]) == b""
