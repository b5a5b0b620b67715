"""What the Gateway says when the cluster cannot take its RRs for a reason of the cluster's:
the RemediationRequest CRD removed while it runs, its namespace being deleted, its own
ServiceAccount token revoked. Each is a 503 with Retry-After and a /readyz or a log line that
names what is wrong, and the Gateway serves again once it is put right.

These tests change the cluster itself (a CRD, a namespace, the Gateway's ServiceAccount), so
they run on an API server of their own, not the session's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from e2ecov.kubeapi import KubeAPIServer, load_manifests
from tests.conftest import CRD_FILE, kube_testenv_bin
from tests.support.contract import problem
from tests.support.kube import bind_cluster_role, kube_gateway, service_account
from tests.support.services import ServiceProcess, alert, webhook

PROM = "/api/v1/signals/prometheus"
CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/remediationrequests.kubernaut.ai"
SETTINGS_SCOPE = {"SIGNALGATE_SCOPE__SOURCE": "settings"}


@pytest.fixture(scope="module")
def own_apiserver() -> Iterator[KubeAPIServer]:
    server = KubeAPIServer(bin_dir=kube_testenv_bin(), crds=[CRD_FILE]).start()
    try:
        yield server
    finally:
        server.cleanup()


def gateway_in(server: KubeAPIServer, namespace: str, data_dir: Path) -> ServiceProcess:
    server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    return kube_gateway(server, namespace, data_dir, auth="static", env=SETTINGS_SCOPE)


def until(check: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.2)


def test_the_crd_removed_while_running_is_503_unready_naming_it_and_recovers(
    own_apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    """Kubernaut's chart uninstalled and installed again removes the CRD for a while: every
    signal was a 500 "Internal server error" with a traceback logged per request, and
    /readyz crashed (a plain-text 500). Now: 503 with Retry-After, logged once per interval
    naming the CRD, /readyz 503 naming it, the broken RR watch logged once a minute; back
    by itself once the CRD is."""
    server = own_apiserver
    with (
        gateway_in(server, "crd-gone", tmp_path / "gw").start() as gateway,
        gateway.client() as c,
    ):
        assert c.post(PROM, json=webhook(alert(pod="before-1"))).status_code == 201
        assert server.request("DELETE", CRD)[0] == 200
        deleted = time.monotonic()
        until(lambda: server.request("GET", CRD)[0] == 404, "deleted")
        for n in range(5):
            answer = c.post(PROM, json=webhook(alert(pod=f"gone-{n}")))
            problem(answer, 503, "service-unavailable", "retry later")
            assert answer.headers["Retry-After"]
        ready = httpx.get(f"{gateway.ops_url}/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        assert ready.headers["content-type"].startswith("application/problem+json")
        assert "remediationrequests.kubernaut.ai" in ready.json()["detail"]
        logged = gateway.output()
        assert "unexpected error" not in logged and "Traceback" not in logged
        failed = [line for line in logged.splitlines() if '"request failed"' in line]
        assert len(failed) == 1, failed  # five answers, one line: the rest held back
        assert "serves no RemediationRequests" in failed[0]
        assert "remediationrequests.kubernaut.ai" in failed[0]
        # the RR watch breaks again every few seconds while the CRD is gone: it wrote a
        # warning each time; now one a minute, the next counting those held back
        time.sleep(max(0.0, 12 - (time.monotonic() - deleted)))
        broke = [line for line in gateway.output().splitlines() if "RR watch broke" in line]
        assert len(broke) == 1, broke

        for obj in load_manifests(CRD_FILE):
            server.apply(obj)
        until(
            lambda: c.post(PROM, json=webhook(alert(pod="after-1"))).status_code == 201,
            "stored again",
        )
        assert httpx.get(f"{gateway.ops_url}/readyz", timeout=10).status_code == 200


def failures_logged(gateway: ServiceProcess) -> list[str]:
    return [line for line in gateway.output().splitlines() if '"request failed"' in line]


def test_its_namespace_being_deleted_is_503_and_logged_as_such_not_as_rbac(
    own_apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    """The controller namespace deleted (Terminating): the API server refuses new objects in
    it with a 403, which the log blamed on RBAC ("grant its ServiceAccount the RBAC …"); no
    grant could fix it. The log now says the namespace is being deleted."""
    server = own_apiserver
    with (
        gateway_in(server, "ns-going", tmp_path / "gw").start() as gateway,
        gateway.client() as c,
    ):
        assert c.post(PROM, json=webhook(alert(pod="before-1"))).status_code == 201
        # no namespace controller runs here: the namespace stays Terminating
        assert server.request("DELETE", "/api/v1/namespaces/ns-going")[0] == 200
        answer = c.post(PROM, json=webhook(alert(pod="during-1")))
        problem(answer, 503, "service-unavailable", "retry later")
        assert answer.headers["Retry-After"]
        (failed,) = failures_logged(gateway)
        assert "ns-going" in failed and "(controllerNamespace) is being deleted" in failed
        assert "grant" not in failed and "RBAC" not in failed
        ready = httpx.get(f"{gateway.ops_url}/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        assert "'ns-going' (controllerNamespace) is being deleted" in ready.json()["detail"]


def test_a_controller_namespace_that_does_not_exist_is_unready_naming_it(
    own_apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    """`controllerNamespace` mistyped, with the RRs' RBAC from a ClusterRole as in
    Kubernaut's chart: the API server lists the RRs of a namespace that does not exist as
    an empty list, so /readyz was 200 while every signal was a 503 (an outside check). Now
    /readyz names the namespace, and the Gateway is ready once the namespace exists."""
    server = own_apiserver
    server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns-home"}})
    gateway = kube_gateway(server, "ns-home", tmp_path / "gw", auth="static", env=SETTINGS_SCOPE)
    bind_cluster_role(server, "cluster-admin", "ns-home", "signalgate-gateway")
    gateway.env["SIGNALGATE_CONTROLLERNAMESPACE"] = "ns-typo"
    with gateway.start(wait=False) as gateway, gateway.client() as c:

        def unready() -> bool:
            try:
                ready = httpx.get(f"{gateway.ops_url}/readyz", timeout=10)
            except httpx.HTTPError:
                return False
            return ready.status_code == 503 and "'ns-typo' does not exist" in ready.text

        until(unready, "unready naming the namespace")
        answer = c.post(PROM, json=webhook(alert(pod="typo-1")))
        problem(answer, 503, "service-unavailable", "retry later")
        server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns-typo"}})
        gateway.wait_ready(30)
        assert c.post(PROM, json=webhook(alert(pod="typo-1"))).status_code == 201


def test_its_own_token_revoked_is_503_and_logged_as_a_token_not_accepted(
    own_apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    """The Gateway's own ServiceAccount deleted (its token revoked): the API server answers
    401 and closes the HTTP/2 connection, and the log said "unreachable …
    RemoteProtocolError(ConnectionTerminated)". It now says the token is not accepted and
    what to do; /readyz says so too."""
    server = own_apiserver
    with (
        gateway_in(server, "own-token", tmp_path / "gw").start() as gateway,
        gateway.client() as c,
    ):
        assert c.post(PROM, json=webhook(alert(pod="before-1"))).status_code == 201
        account = "/api/v1/namespaces/own-token/serviceaccounts/signalgate-gateway"
        assert server.request("DELETE", account)[0] == 200
        # the API server's token cache holds the approval for about 10 s
        until(
            lambda: c.post(PROM, json=webhook(alert(pod="after-1"))).status_code == 503,
            "refused",
        )
        ready = httpx.get(f"{gateway.ops_url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert "does not accept this Gateway's token" in ready.json()["detail"]
        failed = failures_logged(gateway)[0]
        assert "does not accept this Gateway's token" in failed
        assert "401" in failed and "ServiceAccount was deleted" in failed
        assert "ConnectionTerminated" not in failed


def test_its_token_file_replaced_after_a_refusal_is_used_at_once(
    own_apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    """Its token refused (its ServiceAccount deleted) and a valid one written to its token
    file (the account made again): the file was read again only once a minute, so the
    Gateway stayed unready answering 503 for up to a minute with the new token in place.
    A 401 now reads the file again when it changed, and asks once more with the new token:
    the next signal is stored at once, and /readyz is ready."""
    server = own_apiserver
    server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "own-file"}})
    token = tmp_path / "token"
    with (
        kube_gateway(
            server, "own-file", tmp_path / "gw", auth="static", env=SETTINGS_SCOPE, token_file=token
        ).start() as gateway,
        gateway.client() as c,
    ):
        assert c.post(PROM, json=webhook(alert(pod="before-1"))).status_code == 201
        account = "/api/v1/namespaces/own-file/serviceaccounts/signalgate-gateway"
        assert server.request("DELETE", account)[0] == 200
        # the API server's token cache holds the approval for about 10 s
        until(
            lambda: c.post(PROM, json=webhook(alert(pod="during-1"))).status_code == 503,
            "refused",
        )
        assert httpx.get(f"{gateway.ops_url}/readyz", timeout=10).status_code == 503
        replaced = tmp_path / "token.new"  # swapped in whole, as kubelet swaps its link
        replaced.write_text(service_account(server, "own-file", "signalgate-gateway"))
        replaced.rename(token)
        assert c.post(PROM, json=webhook(alert(pod="after-1"))).status_code == 201
        # (before a signal is stored, /readyz holds a failed write against the store a while)
        assert httpx.get(f"{gateway.ops_url}/readyz", timeout=10).status_code == 200


def test_its_own_token_revoked_under_kubernetes_auth_is_logged_once_per_interval(
    own_apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    """With `auth.mode: kubernetes` every caller's token is reviewed with the Gateway's own.
    Once that is revoked, each request wrote the same error line: a sender retrying in a
    loop filled the log. Now one line names the cause, the rest are held back and counted."""
    server = own_apiserver
    server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "own-review"}})
    with (
        kube_gateway(server, "own-review", tmp_path / "gw", env=SETTINGS_SCOPE).start() as gw,
    ):
        account = "/api/v1/namespaces/own-review/serviceaccounts/signalgate-gateway"
        assert server.request("DELETE", account)[0] == 200
        tokens = iter(f"invented-{n}" for n in range(1000))  # each one reviewed: none cached

        def refused() -> bool:
            with gw.client(next(tokens)) as c:
                answer = c.post(PROM, json=webhook(alert(pod="p-1")))
            return answer.status_code == 503

        # the API server's token cache holds the approval for about 10 s
        until(refused, "refused")
        for _ in range(20):
            assert refused()
        lines = [line for line in gw.output().splitlines() if "own token" in line]
        assert 1 <= len(lines) <= 2, lines  # the first, and perhaps its count of the rest
        assert "does not accept this service's own token" in lines[0]


def test_duplicates_queued_behind_a_status_write_to_a_hung_api_server_fail_with_it(
    own_apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    """An API server that stops answering (SIGSTOP) while concurrent duplicates of one RR
    arrive: those queued behind the status write that timed out made a write of their own
    and were answered 503 after twice `kubernetes.timeout` (an outside check); the docs
    promise at most the timeout plus a second."""
    import os
    import signal
    from concurrent.futures import ThreadPoolExecutor

    server = own_apiserver
    server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hung"}})
    env = {**SETTINGS_SCOPE, "SIGNALGATE_KUBERNETES__TIMEOUT": "3s"}
    with kube_gateway(server, "hung", tmp_path / "gw", auth="static", env=env).start() as gw:
        body = webhook(alert(pod="hung-1"))
        with gw.client() as c:
            assert c.post(PROM, json=body).status_code == 201
            assert c.post(PROM, json=body).status_code == 202  # the RR is known and active

        def duplicate(_: int) -> tuple[int, float]:
            started = time.monotonic()
            with gw.client() as client:
                status = client.post(PROM, json=body).status_code
            return status, time.monotonic() - started

        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(duplicate, range(8)))
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert [status for status, _ in answers] == [503] * 8, answers
        assert max(seconds for _, seconds in answers) < 3 + 1.5, answers


def test_an_api_server_that_does_not_answer_is_named_by_readyz(
    own_apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    """An API server that stops answering (its etcd gone, here SIGSTOP): the readiness ping
    gave up after its two seconds and /readyz read "remediation store unavailable" alone,
    naming neither the store nor why. It now names the store and that it did not answer."""
    import os
    import signal

    server = own_apiserver
    with gateway_in(server, "mute", tmp_path / "gw").start() as gateway:
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        try:
            ready = httpx.get(f"{gateway.ops_url}/readyz", timeout=30)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert ready.status_code == 503
        detail = ready.json()["detail"]
        assert server.api_url in detail and "did not answer within 2 s" in detail, detail
        assert ready.json()["checks"]["store"] == "no answer"
        gateway.wait_ready(30)
