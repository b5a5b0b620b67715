"""DataStorage with `auth.mode: kubernetes`: Kubernaut's services write and read the audit
trail with their ServiceAccount tokens, authorised as Kubernaut's DataStorage asks
(`create` / `get` on services/data-storage-service)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2ecov.kubeapi import KubeAPIServer
from tests.integration.datastorage.dstools import datastorage_process
from tests.support.contract import problem
from tests.support.event_bodies import event_body
from tests.support.kube import apply_rbac, service_account
from tests.support.polling import answered
from tests.support.services import ServiceProcess

BATCH = "/api/v1/audit/events/batch"
QUERY = "/api/v1/audit/events"


def role(server: KubeAPIServer, namespace: str, account: str, verbs: list[str]) -> str:
    """A ServiceAccount allowed `verbs` on services/data-storage-service; its token."""
    token = service_account(server, namespace, account)
    name = f"ds-{account}"
    server.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services"],
                    "resourceNames": ["data-storage-service"],
                    "verbs": verbs,
                }
            ],
        }
    )
    server.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        }
    )
    return token


@pytest.fixture
def datastorage(
    kube_apiserver: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> Iterator[ServiceProcess]:
    # DataStorage runs as its own ServiceAccount with deploy/'s RBAC
    apply_rbac(kube_apiserver, kube_namespace)
    own = service_account(kube_apiserver, kube_namespace, "signalgate-datastorage")
    kubeconfig = kube_apiserver.write_kubeconfig(own, tmp_path / "kubeconfig")
    with datastorage_process(
        tmp_path / "ds",
        env={
            "SIGNALGATE_AUTH__MODE": "kubernetes",
            "SIGNALGATE_KUBERNETES__CONFIG": f"kubernetes://{kubeconfig}",
            "SIGNALGATE_KUBERNETES__NAMESPACE": kube_namespace,
        },
    ).start() as service:
        yield service


def test_service_accounts_write_and_read_by_rbac(
    datastorage: ServiceProcess, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    writer = role(kube_apiserver, kube_namespace, "remediationorchestrator", ["create"])
    reader = role(kube_apiserver, kube_namespace, "dashboard", ["get"])
    stranger = service_account(kube_apiserver, kube_namespace, "stranger")
    events = [event_body("rr-k8s-1"), event_body("rr-k8s-1")]

    with datastorage.client(writer) as c:
        written = c.post(BATCH, json=events)
        assert written.status_code == 201, written.text
        problem(c.get(QUERY, params={"correlation_id": "rr-k8s-1"}), 403, "forbidden", "get")
    with datastorage.client(reader) as c:
        found = c.get(QUERY, params={"correlation_id": "rr-k8s-1"})
        assert found.status_code == 200 and len(found.json()["data"]) == 2
        problem(c.post(BATCH, json=[event_body("rr-k8s-2")]), 403, "forbidden", "create")
    with datastorage.client(stranger) as c:
        problem(c.post(BATCH, json=[event_body("rr-k8s-3")]), 403, "forbidden")
    with datastorage.client("made-up") as c:
        problem(c.get(QUERY, params={"correlation_id": "rr-k8s-1"}), 401, "unauthorized")


def test_the_gateways_own_account_may_write_its_audit_events_with_deploys_rbac(
    datastorage: ServiceProcess, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    """deploy/kubernaut/rbac.yaml alone lets the Gateway's ServiceAccount deliver its audit
    events (its datastorage.tokenFile is that account's token); an outside check found the
    shipped RBAC missing it: every delivery 403, the journal growing."""
    gateway = service_account(kube_apiserver, kube_namespace, "signalgate-gateway")
    with datastorage.client(gateway) as c:
        written = c.post(BATCH, json=[event_body("rr-gw-1", event_category="gateway")])
        assert written.status_code == 201, written.text


def test_reviews_refused_to_its_own_account_are_503_counted_and_name_the_grant(
    datastorage: ServiceProcess, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    """DataStorage's ClusterRoleBinding for reviews removed: no caller can be authenticated.
    Each request is a 503 naming the review and the grant, counted in
    `datastorage_auth_reviews_refused_total` (the Gateway's twin counts its own), and it
    serves again once granted, without a restart."""
    writer = role(kube_apiserver, kube_namespace, "writer", ["create"])
    binding = (
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/"
        f"signalgate-datastorage-auth-{kube_namespace}"
    )
    status, saved = kube_apiserver.request("GET", binding)
    assert status == 200, saved
    assert kube_apiserver.request("DELETE", binding)[0] == 200
    with datastorage.client(writer) as c:
        # RBAC changes reach the authorizer within moments
        refused = answered(lambda: c.post(BATCH, json=[event_body("rr-review-1")]), 503)
        problem(refused, 503, "service-unavailable", "refused this service a TokenReview")
        metrics = httpx.get(f"{datastorage.ops_url}/metrics", timeout=10).text
        counted = re.search(
            r'datastorage_auth_reviews_refused_total\{review="TokenReview"\} ([0-9.]+)', metrics
        )
        assert counted is not None and float(counted.group(1)) >= 1, metrics
        kube_apiserver.apply(saved)
        written = answered(lambda: c.post(BATCH, json=[event_body("rr-review-2")]), 201)
        assert written.status_code == 201, written.text
