"""An alert whose RR the API server cannot store for its size: refused as that alert's own
problem, the way an oversized alert is, never a 503 retried for ever.

An outside check sent an alert of 200,000 '<' (under the 256 KiB one alert may hold as
sent): the API server writes each '<' as `\\u003c` and the RR holds the text twice, so etcd
refused the 2.4 MB object with a 500. The Gateway answered 503 with Retry-After; Alertmanager
sent the webhook again for ever, and each time the webhook's other alerts were counted again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from e2ecov.kubeapi import KubeAPIServer
from tests.conftest import CRD_FILE, kube_testenv_bin
from tests.support.contract import problem
from tests.support.kube import kube_gateway
from tests.support.services import ServiceProcess, alert, webhook

PROM = "/api/v1/signals/prometheus"
SETTINGS_SCOPE = {"SIGNALGATE_SCOPE__SOURCE": "settings"}


def annotated(pod: str, text: str) -> dict[str, object]:
    made = alert(pod=pod)
    made["annotations"] = {"description": text}
    return made


@pytest.fixture
def gateway(
    kube_apiserver: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> Iterator[ServiceProcess]:
    with kube_gateway(
        kube_apiserver, kube_namespace, tmp_path / "gw", auth="static", env=SETTINGS_SCOPE
    ).start() as service:
        yield service


def test_an_alert_too_large_as_the_api_server_stores_it_is_refused_alone_up_front(
    gateway: ServiceProcess,
) -> None:
    """200,000 '<' are 200 KB as sent, 1.2 MB as the API server writes them: the alert is
    refused as oversized, naming both sizes, and the webhook's other alert is decided once
    per webhook sent (a 207 each time, never a 503)."""
    body = webhook(alert(pod="good-1"), annotated("poison-1", "<" * 200_000))
    with gateway.client() as c:
        for count in (1, 2):
            answer = c.post(PROM, json=body)
            assert answer.status_code == 207, answer.text[:500]
            good, poison = answer.json()["results"]
            assert good["status"] == ("created" if count == 1 else "duplicate")
            assert poison["status"] == "rejected"
            assert poison["error"].startswith("alerts[1]: ")
            assert "as the Kubernetes API server stores it" in poison["error"]
            assert "'<', '>' and '&' take 6 bytes each" in poison["error"]
        refused = problem(
            c.post(PROM, json=webhook(annotated("poison-2", "<" * 200_000))),
            400,
            "validation-error",
            "1,200,",
        )
        assert "over the 262,144 one signal may hold" in refused["detail"]
        # the same bytes of plain text are well under the bound, and stored
        plain = c.post(PROM, json=webhook(annotated("plain-1", "a" * 200_000)))
        assert plain.status_code == 201, plain.text[:300]


def test_escapes_count_as_the_rr_stores_them_again(gateway: ServiceProcess) -> None:
    """A label key of 130,000 '"' is 260,000 bytes as sent (each written '\\"'), under the
    bound; the RR keeps it in JSON strings of JSON too, escaped again, and was 1.3 MB, stored
    only because the API server retried it without its managed fields (an outside check).
    An escape now counts one byte more: refused alone, the webhook's other alert stored."""
    heavy = alert(pod="quotes-1")
    heavy["labels"] = {**heavy["labels"], '"' * 130_000: "v"}  # type: ignore[dict-item]
    with gateway.client() as c:
        answer = c.post(PROM, json=webhook(alert(pod="good-2"), heavy))
    assert answer.status_code == 207, answer.text[:500]
    good, quotes = answer.json()["results"]
    assert good["status"] == "created"
    assert quotes["status"] == "rejected"
    assert "an escape one more" in quotes["error"], quotes["error"][:300]


# etcd's bound on one request, lowered (from 1.5 MiB) so that an alert under the Gateway's
# own bound makes an RR etcd refuses: the refusal the Gateway meets at run time
SMALL_ETCD_REQUEST = 256 * 1024


@dataclass
class SmallEtcdAPIServer(KubeAPIServer):
    def _etcd_args(self) -> list[str]:
        return [*super()._etcd_args(), f"--max-request-bytes={SMALL_ETCD_REQUEST}"]


@pytest.fixture(scope="module")
def small_etcd() -> Iterator[KubeAPIServer]:
    server = SmallEtcdAPIServer(bin_dir=kube_testenv_bin(), crds=[CRD_FILE]).start()
    try:
        server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "signals"}})
        yield server
    finally:
        server.cleanup()


def test_an_rr_etcd_refuses_for_its_size_is_that_alerts_own_problem(
    small_etcd: KubeAPIServer, tmp_path: Path
) -> None:
    """An RR the API server refuses for its size (here etcd: a 500 "request is too large")
    is the alert's own result in a webhook (207, the others decided) and a 400 alone, naming
    the RR's size and quoting the refusal; it is audited and counted as `too_large`."""
    big = "a" * 150_000  # 150 KB: under what an alert may hold; its RR (twice) is not
    with kube_gateway(
        small_etcd, "signals", tmp_path / "gw", auth="static", env=SETTINGS_SCOPE
    ).start() as gateway:
        with gateway.client() as c:
            body = webhook(alert(pod="good-1"), annotated("big-1", big), alert(pod="good-2"))
            for count in (1, 2):
                answer = c.post(PROM, json=body)
                assert answer.status_code == 207, answer.text[:500]
                first, refused, second = answer.json()["results"]
                decided = "created" if count == 1 else "duplicate"
                assert (first["status"], second["status"]) == (decided, decided)
                assert refused["status"] == "rejected"
                assert refused["error"].startswith("alerts[1]: its RemediationRequest is ")
                assert "request is too large" in refused["error"]
                assert answer.json()["summary"]["rejected"] == 1
            alone = problem(
                c.post(PROM, json=webhook(annotated("big-2", big))),
                400,
                "validation-error",
                "bytes as the Kubernetes API server writes it",
            )
            assert "request is too large" in alone["detail"]
        metrics = httpx.get(f"{gateway.ops_url}/metrics", timeout=10).text
        assert 'gateway_crd_creation_errors_total{error_type="too_large"} 3.0' in metrics
        logged = gateway.output()
        assert '"event_type":"gateway.crd.failed"' in logged
        assert '"request failed"' not in logged and "unexpected error" not in logged
