"""The Kubernetes tier: a Gateway whose RemediationRequests are custom resources on a real
kube-apiserver (e2e/stack.toml services `kube` and `gateway-kube`), auditing to the same
DataStorage as the rest of the stack. What the Gateway answers is checked against the objects
on the API server, read with the recipe's admin kubeconfig."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.stack import Audit, signal_resolved, token, unique
from tests.support.services import alert, k8s_event, webhook

PROMETHEUS = "/api/v1/signals/prometheus"
EVENTS = "/api/v1/signals/kubernetes-event"
NAMESPACE = "kubernaut-system"


class ApiServer:
    """The tier's API server, as its admin (the kubeconfig the recipe wrote)."""

    def __init__(self, kubeconfig: str) -> None:
        config = json.loads(Path(kubeconfig).read_text())
        cluster = config["clusters"][0]["cluster"]
        self.client = httpx.Client(
            base_url=cluster["server"],
            verify=ssl.create_default_context(cafile=cluster["certificate-authority"]),
            headers={"Authorization": f"Bearer {config['users'][0]['user']['token']}"},
            timeout=30,
        )

    def rr(self, name: str) -> dict[str, Any]:
        answer = self.client.get(
            f"/apis/kubernaut.ai/v1alpha1/namespaces/{NAMESPACE}/remediationrequests/{name}"
        )
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found


@pytest.fixture(scope="module")
def gateway_kube() -> Iterator[httpx.Client]:
    url = os.environ.get("E2E_GATEWAY_KUBE_URL")
    if not url:
        pytest.fail("E2E_GATEWAY_KUBE_URL is not set: run under e2ecov (make e2e-coverage)")
    headers = {"Authorization": f"Bearer {token('gateway-admin')}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def apiserver() -> Iterator[ApiServer]:
    url = os.environ.get("E2E_KUBE_URL", "")
    if not url.startswith("kubernetes://"):
        pytest.fail("E2E_KUBE_URL is not a kubernetes:// kubeconfig: run under e2ecov")
    server = ApiServer(url.removeprefix("kubernetes://"))
    try:
        yield server
    finally:
        server.client.close()


def test_an_alert_opens_an_rr_custom_resource_and_is_audited(
    gateway_kube: httpx.Client, apiserver: ApiServer, audit: Audit
) -> None:
    namespace, pod = unique("ns"), unique("api")
    created = gateway_kube.post(PROMETHEUS, json=webhook(alert(namespace=namespace, pod=pod)))
    assert created.status_code == 201, created.text
    name = created.json()["remediationRequestName"]
    stored = apiserver.rr(name)
    assert stored["spec"]["targetResource"]["name"] == pod
    assert stored["spec"]["signalFingerprint"] == created.json()["fingerprint"]
    # created without a status: it reads as Pending, seen once, and no phase is written
    # (Kubernaut's orchestrator starts its work on an RR whose phase nobody set)
    assert "deduplication" not in stored.get("status", {})
    assert "overallPhase" not in stored.get("status", {})
    shown = gateway_kube.get(f"/api/v1/remediation-requests/{name}").json()["status"]
    assert (shown["overallPhase"], shown["deduplication"]["occurrenceCount"]) == ("Pending", 1)
    again = gateway_kube.post(PROMETHEUS, json=webhook(alert(namespace=namespace, pod=pod)))
    assert again.status_code == 202
    status = apiserver.rr(name)["status"]
    assert status["deduplication"]["occurrenceCount"] == 2
    assert "overallPhase" not in status, "a duplicate leaves the phase to the orchestrator"
    audit.wait_types(name, ["gateway.signal.received", "gateway.crd.created"])


def test_concurrent_duplicates_are_counted_on_the_api_server(
    gateway_kube: httpx.Client, apiserver: ApiServer
) -> None:
    namespace, pod = unique("ns"), unique("hot")
    body = webhook(alert(namespace=namespace, pod=pod))

    async def storm() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=str(gateway_kube.base_url), headers=gateway_kube.headers, timeout=60
        ) as client:
            return await asyncio.gather(*(client.post(PROMETHEUS, json=body) for _ in range(60)))

    answers = asyncio.run(storm())
    assert sorted(a.status_code for a in answers) == [201] + [202] * 59
    (name,) = {a.json()["remediationRequestName"] for a in answers}
    assert apiserver.rr(name)["status"]["deduplication"]["occurrenceCount"] == 60


def test_resolved_event_and_status_patch_land_on_the_custom_resource(
    gateway_kube: httpx.Client, apiserver: ApiServer
) -> None:
    namespace, pod = unique("ns"), unique("web")
    name = gateway_kube.post(EVENTS, json=k8s_event(name=pod, namespace=namespace)).json()[
        "remediationRequestName"
    ]
    resolved = webhook(alert(status="resolved", namespace=namespace, pod=pod), status="resolved")
    assert gateway_kube.post(PROMETHEUS, json=resolved).status_code == 202
    assert signal_resolved(apiserver.rr(name)["status"]) == "True"

    patched = gateway_kube.patch(
        f"/api/v1/remediation-requests/{name}/status",
        json={"overallPhase": "Completed", "completionStatus": {"outcome": "Remediated"}},
    )
    assert patched.status_code == 200, patched.text
    status = apiserver.rr(name)["status"]
    assert status["overallPhase"] == "Completed"
    assert status["completionStatus"]["outcome"] == "Remediated"
    # the next signal opens a new RR (a new generation's name)
    again = gateway_kube.post(EVENTS, json=k8s_event(name=pod, namespace=namespace))
    assert again.status_code == 201 and again.json()["remediationRequestName"] != name
