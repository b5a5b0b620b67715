"""`auth.mode: kubernetes` against a real API server: ServiceAccount tokens from TokenRequest,
Kubernaut's RBAC, and an API server that goes away and comes back.

The Gateway runs as its own ServiceAccount with deploy/kubernaut/rbac.yaml (not as an
admin), so these tests also show that the shipped RBAC is enough, and no more is needed.
"""

from __future__ import annotations

import re
import ssl
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from e2ecov.kubeapi import KubeAPIServer
from tests.conftest import CRD_FILE, kube_testenv_bin
from tests.support.contract import problem
from tests.support.kube import bind_cluster_role, kube_gateway, service_account
from tests.support.polling import answered
from tests.support.services import ServiceProcess, alert, webhook

PROM = "/api/v1/signals/prometheus"
RRS = "/api/v1/remediation-requests"


@pytest.fixture
def gateway(
    kube_apiserver: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> Iterator[ServiceProcess]:
    with kube_gateway(
        kube_apiserver,
        kube_namespace,
        tmp_path / "gw",
        env={"SIGNALGATE_SCOPE__SOURCE": "settings"},
    ).start() as service:
        yield service


def signal_source(server: KubeAPIServer, namespace: str, name: str = "alertmanager") -> str:
    """A ServiceAccount bound to Kubernaut's gateway-signal-source ClusterRole; its token."""
    token = service_account(server, namespace, name)
    bind_cluster_role(server, "gateway-signal-source", namespace, name)
    return token


def opened_rr(gateway: ServiceProcess, server: KubeAPIServer, namespace: str, pod: str) -> str:
    """The name of the RR a signal source's alert about `pod` opens."""
    with gateway.client(signal_source(server, namespace)) as c:
        answer = c.post(PROM, json=webhook(alert(pod=pod)))
    assert answer.status_code == 201, answer.text
    name: str = answer.json()["remediationRequestName"]
    return name


def test_service_account_tokens_decide_by_rbac(
    gateway: ServiceProcess, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    bound = signal_source(kube_apiserver, kube_namespace)
    unbound = service_account(kube_apiserver, kube_namespace, "nobody")
    body = webhook(alert(pod="auth-1"))

    with gateway.client(bound) as c:
        created = c.post(PROM, json=body)
        assert created.status_code == 201, created.text
        # may send signals, may not read RRs: that is another permission
        problem(c.get(RRS), 403, "forbidden", "list")

    with gateway.client(unbound) as c:
        denied = problem(
            c.post(PROM, json=body), 403, "forbidden", "create services/gateway-service"
        )
        assert f"system:serviceaccount:{kube_namespace}:nobody" in denied["detail"]
        # asking to be someone else changes nothing
        again = c.post(PROM, json=body, headers={"Impersonate-User": "system:admin"})
        assert again.status_code == 403

    with gateway.client("an-invented-token") as c:
        problem(c.post(PROM, json=body), 401, "unauthorized", "not accepted")
    with gateway.client(None) as c:
        problem(c.post(PROM, json=body), 401, "unauthorized")


def test_rr_routes_ask_for_get_list_and_status_update(
    gateway: ServiceProcess, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    name = opened_rr(gateway, kube_apiserver, kube_namespace, "rr-1")
    worker = service_account(kube_apiserver, kube_namespace, "remediation-worker")
    kube_apiserver.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "rr-reader", "namespace": kube_namespace},
            "rules": [
                {
                    "apiGroups": ["kubernaut.ai"],
                    "resources": ["remediationrequests"],
                    "verbs": ["get", "list"],
                }
            ],
        }
    )
    kube_apiserver.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "rr-reader", "namespace": kube_namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "rr-reader",
            },
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": "remediation-worker",
                    "namespace": kube_namespace,
                }
            ],
        }
    )
    with gateway.client(worker) as c:
        assert c.get(f"{RRS}/{name}").status_code == 200
        assert [rr["metadata"]["name"] for rr in c.get(RRS).json()["items"]] == [name]
        patch = c.patch(f"{RRS}/{name}/status", json={"overallPhase": "Processing"})
        problem(patch, 403, "forbidden", "update remediationrequests/status")
        problem(c.post(PROM, json=webhook(alert(pod="rr-1"))), 403, "forbidden")


def test_api_server_down_is_503_and_recovers_without_restart(tmp_path: Path) -> None:
    server = KubeAPIServer(bin_dir=kube_testenv_bin(), crds=[CRD_FILE]).start()
    try:
        namespace = "signals"
        server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        gateway = kube_gateway(
            server, namespace, tmp_path / "gw", env={"SIGNALGATE_SCOPE__SOURCE": "settings"}
        ).start()
        try:
            token = signal_source(server, namespace)
            server.stop_apiserver()
            with gateway.client(token) as c:
                down = problem(
                    c.post(PROM, json=webhook(alert(pod="outage-1"))),
                    503,
                    "service-unavailable",
                    "unreachable",
                )
                assert down["status"] == 503
                assert c.post(PROM, json=webhook(alert(pod="outage-1"))).headers["retry-after"]
            server.start_apiserver()
            with gateway.client(token) as c:
                back = c.post(PROM, json=webhook(alert(pod="outage-1")))
                assert back.status_code == 201, back.text
                again = c.post(PROM, json=webhook(alert(pod="outage-1")))
                assert again.status_code == 202 and again.json()["metadata"]["count"] == 2
        finally:
            gateway.stop()
    finally:
        server.cleanup()


def token_reviews(server: KubeAPIServer) -> int:
    """TokenReviews the API server has answered, from its own /metrics."""
    request = urllib.request.Request(f"{server.api_url}/metrics")
    request.add_header("Authorization", f"Bearer {server.admin_token}")
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with urllib.request.urlopen(request, timeout=10, context=context) as answer:
        text = answer.read().decode()
    found = re.findall(
        r'^apiserver_request_total\{[^}]*resource="tokenreviews"[^}]*\} (\S+)$', text, re.M
    )
    return int(sum(float(value) for value in found))


def test_a_flood_of_invented_tokens_leaves_a_senders_approval_cached(
    kube_apiserver: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> None:
    """Refusals are cached apart from approvals: 20 invented tokens through a cache of 4
    entries do not make the real sender's token cost another review (they pushed it out)."""
    with kube_gateway(
        kube_apiserver,
        kube_namespace,
        tmp_path / "gw",
        env={"SIGNALGATE_SCOPE__SOURCE": "settings", "SIGNALGATE_KUBERNETES__CACHESIZE": "4"},
    ).start() as gateway:
        sender = signal_source(kube_apiserver, kube_namespace)
        body = webhook(alert(pod="flood-1"))
        with gateway.client(sender) as c:
            assert c.post(PROM, json=body).status_code == 201
        for n in range(20):
            with gateway.client(f"invented-{n}") as c:
                problem(c.post(PROM, json=body), 401, "unauthorized", "not accepted")
        before = token_reviews(kube_apiserver)
        with gateway.client(sender) as c:
            assert c.post(PROM, json=body).status_code == 202
        assert token_reviews(kube_apiserver) == before


def test_a_flood_of_bad_tokens_costs_one_token_review_per_token(
    kube_apiserver: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> None:
    """What a flood of bad tokens costs the API server, counted by the API server itself:
    one invalid token sent 40 times, 20 of them at once, is reviewed once (the refusal is
    cached, by the token's SHA-256, for `denyCacheTtl`, here its longest, 60 s; concurrent
    requests share one review), and 10 invented tokens sent three times each are reviewed
    once each. Kubernaut's own Gateway asks a TokenReview per request."""
    env = {"SIGNALGATE_SCOPE__SOURCE": "settings", "SIGNALGATE_KUBERNETES__DENYCACHETTL": "60s"}
    with kube_gateway(kube_apiserver, kube_namespace, tmp_path / "gw", env=env).start() as gw:
        before = token_reviews(kube_apiserver)

        def refused(token: str) -> None:
            with gw.client(token) as c:
                problem(c.post(PROM, json=webhook(alert(pod="bad-1"))), 401, "unauthorized")

        with ThreadPoolExecutor(20) as pool:
            list(pool.map(refused, ["forged"] * 20))
        for _ in range(20):
            refused("forged")
        assert token_reviews(kube_apiserver) == before + 1
        for _ in range(3):
            for n in range(10):
                refused(f"guess-{n}")
        assert token_reviews(kube_apiserver) == before + 1 + 10


def test_its_own_account_refused_is_503_and_unready_until_granted_again(
    gateway: ServiceProcess, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    """The Gateway's RoleBinding removed (an outside check found 500s and a /readyz that
    crashed): nothing is stored, so signals are 503 with Retry-After (the log names the
    RBAC), and readiness fails; granted again, it serves without a restart."""
    sender = signal_source(kube_apiserver, kube_namespace)
    binding = (
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{kube_namespace}"
        "/rolebindings/signalgate-gateway-remediations"
    )
    status, saved = kube_apiserver.request("GET", binding)
    assert status == 200
    assert kube_apiserver.request("DELETE", binding)[0] == 200
    with gateway.client(sender) as c:
        refused = c.post(PROM, json=webhook(alert(pod="own-1")))
        problem(refused, 503, "service-unavailable", "retry later")
        assert refused.headers["Retry-After"]
        # the operator reads what to fix in the log
        logged = gateway.output()
        assert "the API server refused this Gateway" in logged
        assert "deploy/kubernaut/rbac.yaml" in logged
        ready = httpx.get(f"{gateway.ops_url}/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        kube_apiserver.apply(saved)
        created = c.post(PROM, json=webhook(alert(pod="own-1")))
        for _ in range(50):  # RBAC changes reach the authorizer within moments
            if created.status_code == 201:
                break
            time.sleep(0.2)
            created = c.post(PROM, json=webhook(alert(pod="own-1")))
        assert created.status_code == 201, created.text
        assert httpx.get(f"{gateway.ops_url}/readyz", timeout=10).status_code == 200


def test_reviews_refused_to_its_own_account_are_counted_and_name_the_grant(
    gateway: ServiceProcess, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    """The Gateway's ClusterRoleBinding removed: the API server refuses it TokenReviews, and
    no caller can be authenticated. Each request is a 503 with Retry-After whose detail
    names the review and what to grant; the log says it at ERROR (once per interval), and
    `gateway_auth_reviews_refused_total` counts it, so an alert can find it. /readyz stays
    200 (docs/kubernetes.md says why). Granted again, it serves without a restart."""
    sender = signal_source(kube_apiserver, kube_namespace)
    binding = (
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/"
        f"signalgate-gateway-cluster-reader-{kube_namespace}"
    )
    status, saved = kube_apiserver.request("GET", binding)
    assert status == 200, saved
    assert kube_apiserver.request("DELETE", binding)[0] == 200
    body = webhook(alert(pod="reviews-1"))
    with gateway.client(sender) as c:
        # RBAC changes reach the authorizer within moments
        refused = answered(lambda: c.post(PROM, json=body), 503)
        problem(
            refused,
            503,
            "service-unavailable",
            "refused this service a TokenReview (403 Forbidden); grant this service's "
            "ServiceAccount create on tokenreviews in the API group authentication.k8s.io",
        )
        assert refused.headers["Retry-After"]
        metrics = httpx.get(f"{gateway.ops_url}/metrics", timeout=10).text
        counted = re.search(
            r'gateway_auth_reviews_refused_total\{review="TokenReview"\} ([0-9.]+)', metrics
        )
        assert counted is not None and float(counted.group(1)) >= 1, metrics
        logged = [
            line
            for line in gateway.output().splitlines()
            if '"level":"error"' in line and "refused this service a TokenReview" in line
        ]
        assert logged and "system:auth-delegator" in logged[0], gateway.output()[-3000:]
        assert httpx.get(f"{gateway.ops_url}/readyz", timeout=10).status_code == 200
        kube_apiserver.apply(saved)
        created = answered(lambda: c.post(PROM, json=body), 201)
        assert created.status_code == 201, created.text


def test_a_name_is_never_read_as_part_of_the_url(
    gateway: ServiceProcess, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    """`rr-x#y` or `rr-x?y` must not reach RR `rr-x` (an outside check read and patched it)."""
    name = opened_rr(gateway, kube_apiserver, kube_namespace, "url-1")
    admin = service_account(kube_apiserver, kube_namespace, "rr-admin")
    bind_cluster_role(kube_apiserver, "cluster-admin", kube_namespace, "rr-admin")
    with gateway.client(admin) as c:
        assert c.get(f"{RRS}/{name}").status_code == 200
        for suffix in ("%23other", "%3Fx=1"):
            assert c.get(f"{RRS}/{name}{suffix}").status_code == 404, suffix
        # an encoded '/' is refused before routing: no name holds one
        assert c.get(f"{RRS}/{name}%2F..%2F{name}").status_code == 400
        patch = c.patch(f"{RRS}/{name}%23other/status", json={"overallPhase": "Analyzing"})
        assert patch.status_code == 404, patch.text
        assert c.get(f"{RRS}/{name}").json()["status"]["overallPhase"] == "Pending"
