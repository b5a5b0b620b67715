"""Resource identity over real HTTP: look-alike namespaces cannot slip past
`scope.unmanagedNamespaces`, and `c1:prod` cannot pose as cluster c1's namespace prod —
each is a 400 naming the field, on both signal routes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.services import alert, gateway_process, k8s_event, webhook

PROM = "/api/v1/signals/prometheus"
EVENTS = "/api/v1/signals/kubernetes-event"


@pytest.fixture(scope="module")
def scoped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    service = gateway_process(
        tmp_path_factory.mktemp("gw-scope"),
        env={"SIGNALGATE_SCOPE__UNMANAGEDNAMESPACES": '["kube-system"]'},
    ).start()
    try:
        with service.client() as client:
            yield client
    finally:
        service.stop()


def test_the_real_namespace_is_rejected_by_scope(scoped: httpx.Client) -> None:
    answer = scoped.post(EVENTS, json=k8s_event(namespace="kube-system", name="dns-1"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["rejection"]["reason"] == "unmanaged_resource"


@pytest.mark.parametrize(
    "namespace", ["kube-system\u200b", "Kube-System", "kube-system ", "c1:prod"]
)
def test_look_alike_namespaces_are_400_naming_the_field(
    scoped: httpx.Client, namespace: str
) -> None:
    event = scoped.post(EVENTS, json=k8s_event(namespace=namespace, name="dns-1"))
    assert event.status_code == 400, event.text
    assert "involvedObject.namespace" in event.json()["detail"]
    alerted = scoped.post(PROM, json=webhook(alert(namespace=namespace, pod="dns-1")))
    assert alerted.status_code == 400, alerted.text
    assert "alerts[0].labels.namespace" in alerted.json()["detail"]


def test_a_cluster_id_must_be_a_label_value(scoped: httpx.Client) -> None:
    body = webhook(alert(pod="api-1", cluster="c1:prod"))
    answer = scoped.post(PROM, json=body)
    assert answer.status_code == 400, answer.text
    assert "commonLabels.cluster" in answer.json()["detail"]
