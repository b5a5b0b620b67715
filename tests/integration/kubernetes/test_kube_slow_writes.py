"""A write the API server makes but answers after the Gateway's deadline: the signal is
answered 504, Alertmanager sends the same webhook again, and the RR must count the signal
once. The API server is slowed by a proxy in front of it that holds back its answers, so
the status write lands at once and its answer arrives late."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2ecov.kubeapi import KubeAPIServer
from tests.support.kube import kube_gateway
from tests.support.polling import wait_for
from tests.support.services import alert, webhook
from tests.support.slow_proxy import SlowProxy

PROM = "/api/v1/signals/prometheus"


def counts(server: KubeAPIServer, namespace: str) -> list[int]:
    status, body = server.request(
        "GET", f"/apis/kubernaut.ai/v1alpha1/namespaces/{namespace}/remediationrequests"
    )
    assert status == 200, body
    found = []
    for rr in body["items"]:
        dedup: dict[str, Any] = (rr.get("status") or {}).get("deduplication") or {}
        found.append(int(dedup.get("occurrenceCount", 1)))
    return found


def through(gateway_dir: Path, proxy: SlowProxy, server: KubeAPIServer) -> None:
    """The Gateway's kubeconfig, pointed at the proxy instead of the API server."""
    kubeconfig = gateway_dir / "kubeconfig"
    kubeconfig.write_text(
        kubeconfig.read_text().replace(server.api_url, f"https://{proxy.address}")
    )


# the request's deadline, with room for a first create on a busy machine; the proxy's hold,
# past it; and the Gateway's own bound on each API call, past both
DEADLINE = "3s"
LATE = 6.0


@contextmanager
def behind_a_slow_proxy(
    server: KubeAPIServer, namespace: str, tmp_path: Path
) -> Iterator[tuple[SlowProxy, httpx.Client]]:
    """A Gateway on `server` whose every API call goes through a proxy that can hold its
    answers back (`proxy.delay`), and a client of it."""
    env = {
        "SIGNALGATE_SCOPE__SOURCE": "settings",
        "SIGNALGATE_SERVER__PROCESSINGTIMEOUT": DEADLINE,
        "SIGNALGATE_KUBERNETES__TIMEOUT": "20s",
    }
    gateway = kube_gateway(server, namespace, tmp_path / "gw", auth="static", env=env)
    with SlowProxy((server.host, server.port)) as proxy:
        through(tmp_path / "gw", proxy, server)
        with gateway.start() as gw, gw.client() as client:
            yield proxy, client


@pytest.mark.parametrize("pods", [["slow-1"], ["slow-a", "slow-b", "slow-c"]])
def test_a_status_write_answered_after_the_deadline_is_not_counted_again_by_the_retry(
    kube_apiserver: KubeAPIServer, kube_namespace: str, tmp_path: Path, pods: list[str]
) -> None:
    """The duplicates' status writes land, their answers miss the deadline (504), and the
    webhook sent again is answered as the writes that landed: each RR counts two signals,
    as two were sent. Before, the retry was decided again and counted a third, for a
    webhook of one alert (no decision was kept for its retry) and of several (only those
    decided before the deadline were)."""
    server = kube_apiserver
    with behind_a_slow_proxy(server, kube_namespace, tmp_path) as (proxy, c):
        body = webhook(*(alert(pod=pod) for pod in pods))
        assert c.post(PROM, json=body).status_code in (201, 207)
        proxy.delay = LATE
        late = c.post(PROM, json=body)
        assert late.status_code == 504, late.text
        # the writes landed, whatever the Gateway was told
        wait_for(lambda: counts(server, kube_namespace) == [2] * len(pods), 30, "the writes")
        proxy.delay = 0.0
        wait_for(lambda: proxy.holding == 0, 30, "the late answers passed on")
        retry = c.post(PROM, json=body)  # Alertmanager's, of the same bytes
        assert retry.status_code in (202, 207), retry.text
        if len(pods) == 1:
            assert retry.json()["metadata"]["count"] == 2
        else:
            assert retry.json()["summary"]["deduplicated"] == len(pods)
        assert counts(server, kube_namespace) == [2] * len(pods)
        # a later notification of the same bytes is a new occurrence, as before
        again = c.post(PROM, json=body)
        assert again.status_code in (202, 207), again.text
        assert counts(server, kube_namespace) == [3] * len(pods)


def test_a_create_answered_after_the_deadline_is_answered_to_the_retry_as_created(
    kube_apiserver: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> None:
    """The first signal's RR is created, the API server's answer misses the deadline (504):
    the retry of the same webhook is answered 201 with that RR, which counts one signal.
    Before, the create's caller was cancelled, the RR was made all the same, and the retry
    was a duplicate of it (counted 2 for one signal)."""
    server = kube_apiserver
    with behind_a_slow_proxy(server, kube_namespace, tmp_path) as (proxy, c):
        body = webhook(alert(pod="slow-new-1"))
        proxy.delay = LATE
        late = c.post(PROM, json=body)
        assert late.status_code == 504, late.text
        wait_for(lambda: counts(server, kube_namespace) == [1], 30, "the RR created")
        proxy.delay = 0.0
        wait_for(lambda: proxy.holding == 0, 30, "the late answer passed on")
        retry = c.post(PROM, json=body)
        assert retry.status_code == 201, retry.text
        assert counts(server, kube_namespace) == [1]
