"""Owners, scope and kinds from the cluster (scope.source: cluster), against objects created
through a real API server with the owner references a controller would set."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2ecov.kubeapi import KubeAPIServer
from signalgate.gateway.cluster import ClusterView, ScopeUnreadable
from signalgate.kube.client import KubeClient
from signalgate.kube.config import config_from_dsn
from signalgate.kube.settings import KubernetesSettings
from signalgate.remediation.model import TargetResource
from tests.conftest import CRD_FILE, kube_testenv_bin
from tests.support.kube import (
    apply_rbac,
    bind_cluster_role,
    kube_gateway,
    namespace,
    service_account,
)
from tests.support.services import ServiceProcess, alert, k8s_event, webhook

PROM = "/api/v1/signals/prometheus"
EVENT = "/api/v1/signals/kubernetes-event"
MANAGED = "kubernaut.ai/managed"


def fingerprint(ns: str, kind: str, name: str) -> str:
    return hashlib.sha256(f"{ns}:{kind}:{name}".encode()).hexdigest()


def owned_by(owner: dict[str, Any]) -> list[dict[str, Any]]:
    meta = owner["metadata"]
    return [
        {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


POD_SPEC = {"containers": [{"name": "app", "image": "registry.example/app:1"}]}


def workload(server: KubeAPIServer, ns: str, name: str) -> list[str]:
    """Deployment → ReplicaSet → two Pods, as the controllers would link them; pod names."""
    labels = {"app": name}
    template = {"metadata": {"labels": labels}, "spec": POD_SPEC}
    deployment = server.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": labels}, "template": template},
        }
    )
    replicaset = server.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name}-7d9f8",
                "namespace": ns,
                "ownerReferences": owned_by(deployment),
            },
            "spec": {"selector": {"matchLabels": labels}, "template": template},
        }
    )
    pods = [f"{name}-7d9f8-{suffix}" for suffix in ("x2x4k", "q8z1m")]
    for pod in pods:
        server.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod,
                    "namespace": ns,
                    "labels": labels,
                    "ownerReferences": owned_by(replicaset),
                },
                "spec": POD_SPEC,
            }
        )
    return pods


@pytest.fixture
def gateway(
    kube_apiserver: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> Iterator[ServiceProcess]:
    # static tokens here: these tests are about scope and owners, not who may call
    with kube_gateway(
        kube_apiserver, kube_namespace, tmp_path / "gw", auth="static"
    ).start() as service:
        yield service


@pytest.fixture
def app_ns(kube_apiserver: KubeAPIServer) -> str:
    name = f"app-{uuid.uuid4().hex[:8]}"
    namespace(kube_apiserver, name, {MANAGED: "true"})
    return name


def test_pods_of_one_deployment_share_the_deployments_rr(
    gateway: ServiceProcess, kube_apiserver: KubeAPIServer, app_ns: str
) -> None:
    first, second = workload(kube_apiserver, app_ns, "web")
    with gateway.client() as c:
        created = c.post(PROM, json=webhook(alert(namespace=app_ns, pod=first)))
        assert created.status_code == 201, created.text
        assert created.json()["fingerprint"] == fingerprint(app_ns, "Deployment", "web")
        rr = c.get(f"/api/v1/remediation-requests/{created.json()['remediationRequestName']}")
        assert rr.json()["spec"]["targetResource"] == {
            "kind": "Deployment",
            "name": "web",
            "namespace": app_ns,
            "apiVersion": "apps/v1",
        }
        other_pod = c.post(PROM, json=webhook(alert(namespace=app_ns, pod=second)))
        assert other_pod.status_code == 202
        assert other_pod.json()["metadata"]["count"] == 2
        event = c.post(EVENT, json=k8s_event(name=first, namespace=app_ns))
        assert event.status_code == 202, event.text
        assert event.json()["remediationRequestName"] == created.json()["remediationRequestName"]
        # a pod that does not exist (any more): the walk stops there, the signal is about it
        gone = c.post(PROM, json=webhook(alert(namespace=app_ns, pod="web-7d9f8-gone1")))
        assert gone.status_code == 201, gone.text
        assert gone.json()["fingerprint"] == fingerprint(app_ns, "Pod", "web-7d9f8-gone1")
        # the best candidate label names nothing that exists: the next candidate that does is
        # taken (the pod), then its owners, as Kubernaut picks
        either = c.post(PROM, json=webhook(alert(namespace=app_ns, pod=second, deployment="nope")))
        assert either.status_code == 202, either.text
        assert either.json()["fingerprint"] == fingerprint(app_ns, "Deployment", "web")
        # an event about the Service in front of the pods is about their workload too
        kube_apiserver.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": app_ns},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
            }
        )
        service = c.post(EVENT, json=k8s_event(kind="Service", name="web", namespace=app_ns))
        assert service.status_code == 202, service.text
        assert service.json()["fingerprint"] == fingerprint(app_ns, "Deployment", "web")
    metrics = httpx.get(f"{gateway.ops_url}/metrics", timeout=10).text
    assert 'gateway_owner_resolution_total{kind="Pod",outcome="success"} 5.0' in metrics


def test_a_job_of_a_cronjob_is_about_the_cronjob(
    gateway: ServiceProcess, kube_apiserver: KubeAPIServer, app_ns: str
) -> None:
    job_template = {"template": {"spec": {**POD_SPEC, "restartPolicy": "Never"}}}
    cronjob = kube_apiserver.apply(
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "nightly", "namespace": app_ns},
            "spec": {"schedule": "0 2 * * *", "jobTemplate": {"spec": job_template}},
        }
    )
    kube_apiserver.apply(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": "nightly-29000000",
                "namespace": app_ns,
                "ownerReferences": owned_by(cronjob),
            },
            "spec": job_template,
        }
    )
    with gateway.client() as c:
        event = k8s_event(kind="Job", name="nightly-29000000", namespace=app_ns)
        event["involvedObject"]["apiVersion"] = "batch/v1"  # type: ignore[index]
        answer = c.post(EVENT, json=event)
        assert answer.status_code == 201, answer.text
        assert answer.json()["fingerprint"] == fingerprint(app_ns, "CronJob", "nightly")


def test_an_owner_reference_that_is_no_kubernetes_name_ends_the_walk(
    gateway: ServiceProcess, kube_apiserver: KubeAPIServer, app_ns: str
) -> None:
    """The API server does not check an ownerReference's kind or name: anyone who may create
    a Pod can write one. Its name went into the metadata read's path unescaped, so
    `../../../../../../api/v1/namespaces/<managed>` read a managed Namespace's labels for a Pod
    of an unmanaged namespace (an outside check): an RR for an unmanaged resource, its target a
    path. An owner that is no Kubernetes kind or name, or a cluster-scoped one of a namespaced
    object (a Pod "owned" by the managed Namespace), now ends the walk at its dependent."""
    unmanaged = f"plain-{uuid.uuid4().hex[:8]}"
    namespace(kube_apiserver, unmanaged)
    owners = {
        "p-traversal": ("apps/v1", "ReplicaSet", "../../../../../../api/v1/namespaces/" + app_ns),
        "p-bad-name": ("apps/v1", "ReplicaSet", "Bad_Name"),
        "p-bad-kind": ("apps/v1", "Replica Set!", "rs-1"),
        # valid names, but a cluster-scoped "controller": the managed Namespace itself
        "p-cluster-owner": ("v1", "Namespace", app_ns),
    }
    for ns in (unmanaged, app_ns):
        for pod, (api_version, kind, name) in owners.items():
            ref = {"apiVersion": api_version, "kind": kind, "name": name, "uid": str(uuid.uuid4())}
            kube_apiserver.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": pod,
                        "namespace": ns,
                        "ownerReferences": [{**ref, "controller": True}],
                    },
                    "spec": POD_SPEC,
                }
            )
    with gateway.client() as c:
        for pod in owners:
            refused = c.post(PROM, json=webhook(alert(namespace=unmanaged, pod=pod)))
            assert refused.status_code == 200, refused.text
            assert refused.json()["rejection"]["resource"] == f"{unmanaged}:Pod:{pod}"
            kept = c.post(PROM, json=webhook(alert(namespace=app_ns, pod=pod)))
            assert kept.status_code == 201, kept.text
            assert kept.json()["fingerprint"] == fingerprint(app_ns, "Pod", pod)


def test_scope_labels_on_namespace_and_resource(
    gateway: ServiceProcess, kube_apiserver: KubeAPIServer
) -> None:
    off = f"off-{uuid.uuid4().hex[:8]}"
    namespace(kube_apiserver, off, {MANAGED: "false"})
    unlabelled = f"plain-{uuid.uuid4().hex[:8]}"
    namespace(kube_apiserver, unlabelled)
    (pod,) = workload(kube_apiserver, off, "api")[:1]
    with gateway.client() as c:
        rejected = c.post(PROM, json=webhook(alert(namespace=off, pod=pod)))
        assert rejected.status_code == 200, rejected.text
        rejection = rejected.json()["rejection"]
        assert rejection["reason"] == "unmanaged_resource"
        assert rejection["resource"] == f"{off}:Deployment:api"
        # Kubernaut's two wordings (scope.go): the answer's and the rejection's
        assert rejected.json()["message"] == (
            f"Signal rejected: resource {off}:Deployment:api is not managed by Kubernaut"
        )
        assert rejection["message"] == (
            f"Resource {off}:Deployment:api is not in Kubernaut's management scope"
        )
        assert rejection["action"] == (
            f"To manage this resource, add the label: kubectl label -n {off} deployment api "
            f"{MANAGED}=true"
        )
        # nothing labelled at all: unmanaged too
        nothing = c.post(PROM, json=webhook(alert(namespace=unlabelled, pod="lonely-1")))
        assert nothing.json()["status"] == "rejected"

        # the label on the resource wins over its namespace's
        status, deployment = kube_apiserver.request(
            "GET", f"/apis/apps/v1/namespaces/{off}/deployments/api"
        )
        assert status == 200
        deployment["metadata"].setdefault("labels", {})[MANAGED] = "true"
        kube_apiserver.apply(deployment)
    # the Gateway's metadata cache may hold the old answer for up to metadataTTL
    _eventually(
        lambda: gateway.client().post(PROM, json=webhook(alert(namespace=off, pod=pod))),
        201,
    )


def test_any_kind_the_cluster_serves_can_be_a_target(
    gateway: ServiceProcess, kube_apiserver: KubeAPIServer, app_ns: str, kube_namespace: str
) -> None:
    # a custom resource kind the Gateway learns from API discovery; discovery is read at
    # start (and refreshed every few minutes), so the Gateway is restarted to see it now
    widget_crd(kube_apiserver)
    gateway.stop()
    gateway.start()
    # deploy/'s RBAC does not let the Gateway read widgets: their scope label cannot be
    # read, so nothing is decided (503, retried), and the log says what to grant
    with gateway.client() as c:
        unread = c.post(PROM, json=webhook(alert(namespace=app_ns, pod="", widget="w-1")))
        assert unread.status_code == 503, unread.text
        assert "Retry-After" in unread.headers
    assert "grant its ServiceAccount get on widgets in the API group example.com" in (
        gateway.output()
    )
    may_read_widgets(kube_apiserver, kube_namespace)
    _eventually(
        lambda: gateway.client().post(
            PROM, json=webhook(alert(namespace=app_ns, pod="", widget="w-1"))
        ),
        201,
    )
    with gateway.client() as c:
        answer = c.post(PROM, json=webhook(alert(namespace=app_ns, pod="", widget="w-1")))
        assert answer.status_code == 202, answer.text
        assert answer.json()["fingerprint"] == fingerprint(app_ns, "Widget", "w-1")
        name = answer.json()["remediationRequestName"]
        target = c.get(f"/api/v1/remediation-requests/{name}").json()["spec"]["targetResource"]
        assert target["apiVersion"] == "example.com/v1"


def test_a_resource_opted_out_is_never_opened_for_while_its_label_cannot_be_read(
    gateway: ServiceProcess, kube_apiserver: KubeAPIServer, app_ns: str, kube_namespace: str
) -> None:
    """A widget labelled `kubernaut.ai/managed: "false"` in a managed namespace, under RBAC
    that does not let the Gateway read widgets: its label was taken as absent, the
    namespace's decided, and an RR was opened for a resource opted out (an outside check).
    Now 503 until the Gateway may read it, then rejected as unmanaged."""
    widget_crd(kube_apiserver)
    code, body = kube_apiserver.request(
        "POST",
        f"/apis/example.com/v1/namespaces/{app_ns}/widgets",
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "opted-out", "labels": {MANAGED: "false"}},
        },
    )
    assert code == 201, body
    gateway.stop()
    gateway.start()
    body = webhook(alert(namespace=app_ns, pod="", widget="opted-out"))
    with gateway.client() as c:
        unread = c.post(PROM, json=body)
        assert unread.status_code == 503, unread.text
    may_read_widgets(kube_apiserver, kube_namespace)
    _eventually(lambda: gateway.client().post(PROM, json=body), 200)
    with gateway.client() as c:
        assert c.post(PROM, json=body).json()["status"] == "rejected"
        assert c.get("/api/v1/remediation-requests").json()["items"] == []


def widget_crd(server: KubeAPIServer) -> None:
    """The custom resource kind `Widget` (example.com/v1), served."""
    server.apply(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": {"type": "object"}},
                    }
                ],
            },
        }
    )
    _eventually(lambda: _status(server.request("GET", "/apis/example.com/v1")), 200, attempts=100)


def may_read_widgets(server: KubeAPIServer, controller_namespace: str) -> None:
    """Grant the Gateway's ServiceAccount `get` on widgets."""
    role = f"widget-reader-{controller_namespace}"
    server.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]}],
        }
    )
    bind_cluster_role(server, role, controller_namespace, "signalgate-gateway")


class _Answer:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


def _status(answer: tuple[int, dict[str, Any]]) -> _Answer:
    return _Answer(answer[0])


def _eventually(call: Any, status: int, attempts: int = 80) -> None:
    last = None
    for _ in range(attempts):
        last = call()
        if last.status_code == status:
            return
        time.sleep(0.5)
    raise AssertionError(f"never {status}: {getattr(last, 'text', last)}")


def test_an_rr_the_api_server_refuses_is_a_500_and_an_audited_failure(
    gateway: ServiceProcess, kube_apiserver: KubeAPIServer, kube_namespace: str, app_ns: str
) -> None:
    """The cluster refuses the RR as written (here an admission policy; in life a CRD of
    another version validating more strictly): the sender gets a 5xx naming the refusal (it
    retries, and succeeds once the operator fixes the cluster), and the failure is audited as
    `gateway.crd.failed` (it was an unhandled error: a bare 500 and no audit event)."""
    policy = f"refuse-rrs-{kube_namespace}"
    policies = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
    bindings = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
    status, made = kube_apiserver.request(
        "POST",
        policies,
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["kubernaut.ai"],
                            "apiVersions": ["*"],
                            "operations": ["CREATE"],
                            "resources": ["remediationrequests"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "!object.spec.signalName.startsWith('Refused')",
                        "message": "this cluster takes no Refused alerts",
                    }
                ],
            },
        },
    )
    assert status == 201, made
    status, made = kube_apiserver.request(
        "POST",
        bindings,
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": kube_namespace}
                    }
                },
            },
        },
    )
    assert status == 201, made
    body = webhook(alert(namespace=app_ns, pod="refused-1", alertname="RefusedAlert"))
    with gateway.client() as c:
        for _ in range(100):  # the policy reaches the admission chain within moments
            answer = c.post(PROM, json=body)
            if answer.status_code != 201:
                break
            time.sleep(0.1)
            pod = f"refused-{uuid.uuid4().hex[:6]}"
            body = webhook(alert(namespace=app_ns, pod=pod, alertname="RefusedAlert"))
        assert answer.status_code == 500, answer.text
        assert "no Refused alerts" in answer.json()["detail"]
        # other alerts are stored as before
        fine = c.post(PROM, json=webhook(alert(namespace=app_ns, pod="fine-1")))
        assert fine.status_code == 201, fine.text
    assert '"event_type":"gateway.crd.failed"' in gateway.output()
    metrics = httpx.get(f"{gateway.ops_url}/metrics", timeout=10).text
    assert 'gateway_crd_creation_errors_total{error_type="store_refused"} 1.0' in metrics
    # in a webhook of 40 alerts, one refused: the other 39 are each stored and audited once
    # (the first failure cancelled the rest: RRs never created on any retry, and RRs whose
    # creation was cut short stored without their audit event)
    pods = [f"group-{n}" for n in range(40)]
    alerts = [alert(namespace=app_ns, pod=pod) for pod in pods]
    alerts.insert(3, alert(namespace=app_ns, pod="odd-1", alertname="RefusedAlert"))
    group = webhook(*alerts)
    with gateway.client() as c:
        answer = c.post(PROM, json=group)
    assert answer.status_code == 500 and "no Refused alerts" in answer.json()["detail"]
    status, listed = kube_apiserver.request(
        "GET", f"/apis/kubernaut.ai/v1alpha1/namespaces/{kube_namespace}/remediationrequests"
    )
    assert status == 200
    stored = {
        item["spec"]["targetResource"]["name"]: item["metadata"]["name"] for item in listed["items"]
    }
    assert set(pods) <= set(stored)
    logged = gateway.output()
    for pod in pods:
        assert logged.count(f'"correlation_id":"{stored[pod]}"') >= 2  # received, created
    kube_apiserver.request("DELETE", f"{bindings}/{policy}")
    kube_apiserver.request("DELETE", f"{policies}/{policy}")


def test_an_aggregated_api_that_does_not_answer_leaves_discovery_to_the_rest(
    tmp_path: Path,
) -> None:
    """metrics-server registered but not answering (starting, crashed: the API server
    answers its discovery 503), as clusters often have it: the Gateway starts and serves,
    its kinds from every other group, and says which group it left out. The Gateway did
    not start at all (discovery failed whole; an outside check)."""
    server = KubeAPIServer(bin_dir=kube_testenv_bin(), crds=[CRD_FILE]).start()
    try:
        code, body = server.request(
            "POST",
            "/apis/apiregistration.k8s.io/v1/apiservices",
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": "v1beta1.metrics.k8s.io"},
                "spec": {
                    "group": "metrics.k8s.io",
                    "version": "v1beta1",
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                    "insecureSkipTLSVerify": True,
                    "service": {"name": "metrics-server", "namespace": "kube-system"},
                },
            },
        )
        assert code == 201, body
        _eventually(lambda: _status(server.request("GET", "/apis/metrics.k8s.io/v1beta1")), 503)
        controller, apps = "kubernaut-system", "apps"
        namespace(server, controller)
        namespace(server, apps, {MANAGED: "true"})
        with kube_gateway(server, controller, tmp_path / "gw", auth="static").start() as gw:
            with gw.client() as c:
                answer = c.post(PROM, json=webhook(alert(namespace=apps, pod="web-1")))
                assert answer.status_code == 201, answer.text
                name = answer.json()["remediationRequestName"]
                target = c.get(f"/api/v1/remediation-requests/{name}").json()["spec"][
                    "targetResource"
                ]
                assert target["apiVersion"] == "v1"
            assert "metrics.k8s.io/v1beta1" in gw.output()
    finally:
        server.cleanup()


class CountingClient(KubeClient):
    """A real client to the real API server that counts the GETs of each path it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gets: Counter[str] = Counter()

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if method == "GET":
            self.gets[path] += 1
        return await super().request(method, path, **kwargs)


async def test_a_refused_scope_label_is_decided_closed_and_not_asked_again_within_the_ttl(
    kube_apiserver: KubeAPIServer, app_ns: str, kube_namespace: str, tmp_path: Path
) -> None:
    """The scope check of a widget the Gateway may not read fails closed with the refusal
    naming what to grant, every time, while the API server is asked once per
    `kubernetes.metadataTtl`: the refusal is remembered like an answer, not hammered."""
    widget_crd(kube_apiserver)
    apply_rbac(kube_apiserver, kube_namespace)
    token = service_account(kube_apiserver, kube_namespace, "signalgate-gateway")
    kubeconfig = kube_apiserver.write_kubeconfig(token, tmp_path / "kubeconfig")
    client = CountingClient(config_from_dsn(f"kubernetes://{kubeconfig}"))
    view = ClusterView(client, KubernetesSettings(metadata_ttl=30))
    target = TargetResource("Widget", "w-refused", app_ns, "example.com/v1")
    try:
        await view.discover()
        for _ in range(10):
            with pytest.raises(ScopeUnreadable) as refused:
                await view.check_scope(target)
            assert refused.value.status == 403
            assert "grant its ServiceAccount get on widgets in the API group example.com" in (
                refused.value.message
            )
        path = f"/apis/example.com/v1/namespaces/{app_ns}/widgets/w-refused"
        assert client.gets[path] == 1
        # the owner walk is not refused: it stops at the widget, which is the target
        assert await view.top_owner(target) == target
        assert client.gets[path] == 1
    finally:
        await client.close()


async def test_refused_reads_of_many_objects_are_logged_once_with_a_count(
    kube_apiserver: KubeAPIServer, app_ns: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Gateway's reading RBAC revoked (here an account never granted it) under traffic
    naming ever new pods: each refused object wrote a warning of its own, a line per signal.
    Now one line per kind refused an interval, naming the path and the refusal."""
    namespace = f"norbac-{uuid.uuid4().hex[:8]}"
    kube_apiserver.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    token = service_account(kube_apiserver, namespace, "unbound")
    kubeconfig = kube_apiserver.write_kubeconfig(token, tmp_path / "kubeconfig")
    client = KubeClient(config_from_dsn(f"kubernetes://{kubeconfig}"))
    view = ClusterView(client, KubernetesSettings())
    caplog.set_level(logging.WARNING, logger="signalgate.gateway.cluster")
    try:
        await view.discover()
        for n in range(20):
            target = TargetResource("Pod", f"pod-{n}", app_ns, "v1")
            with pytest.raises(ScopeUnreadable):
                await view.check_scope(target)
        lines = [r for r in caplog.records if r.getMessage() == "cannot read metadata"]
        assert len(lines) == 1, [r.__dict__.get("path") for r in lines]
        assert "/pods/pod-0" in lines[0].__dict__["path"]
        assert "403" in lines[0].__dict__["error"]
    finally:
        await client.close()
