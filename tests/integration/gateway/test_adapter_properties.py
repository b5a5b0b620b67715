"""Property-based tests of both adapters through a running Gateway.

Random JSON never produces a 5xx; a valid payload always yields the fingerprint of the
contract's formula.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.services import ServiceProcess, alert, k8s_event, webhook

PROM = "/api/v1/signals/prometheus"
EVENTS = "/api/v1/signals/kubernetes-event"
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
label_keys = st.sampled_from(
    ["alertname", "pod", "deployment", "node", "namespace", "severity", "cluster", "x", "job"]
)
alertish = st.fixed_dictionaries(
    {
        "alerts": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "labels": st.dictionaries(
                        label_keys, st.text(max_size=30) | json_values, max_size=6
                    ),
                    "status": st.sampled_from(["firing", "resolved", "", "pending"]) | json_values,
                    "startsAt": st.text(max_size=30) | json_values,
                    "annotations": json_values,
                },
            ),
            max_size=3,
        )
        | json_values
    },
    optional={"commonLabels": json_values, "status": json_values},
)
eventish = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["Warning", "Error", "Normal", "Info"]) | json_values,
        "reason": st.text(max_size=10) | json_values,
        "involvedObject": st.fixed_dictionaries(
            {}, optional={"kind": st.text(max_size=10) | json_values, "name": json_values}
        )
        | json_values,
        "regarding": json_values,
        "series": json_values,
        "lastTimestamp": st.text(max_size=30) | json_values,
        "eventTime": json_values,
    },
)
dns_names = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")


@pytest.fixture(scope="module")
def client(gateway: ServiceProcess) -> Iterator[httpx.Client]:
    with gateway.client() as c:
        yield c


@SETTINGS
@given(payload=json_values | alertish)
def test_random_json_never_5xx_on_alertmanager_route(client: httpx.Client, payload: object) -> None:
    response = client.post(PROM, content=json.dumps(payload))
    assert response.status_code < 500, response.text


@SETTINGS
@given(payload=json_values | eventish)
def test_random_json_never_5xx_on_event_route(client: httpx.Client, payload: object) -> None:
    response = client.post(EVENTS, content=json.dumps(payload))
    assert response.status_code < 500, response.text


@SETTINGS
@given(body=st.binary(max_size=200))
def test_random_bytes_never_5xx(client: httpx.Client, body: bytes) -> None:
    assert client.post(PROM, content=body).status_code < 500
    assert client.post(EVENTS, content=body).status_code < 500


@SETTINGS
@given(
    kind=st.sampled_from(["pod", "deployment", "statefulset", "daemonset", "node"]),
    name=dns_names,
    namespace=dns_names,
    cluster=st.none() | dns_names,
)
def test_valid_alert_fingerprint_matches_formula(
    client: httpx.Client, kind: str, name: str, namespace: str, cluster: str | None
) -> None:
    labels = {"pod": "", kind: name, "namespace": namespace}
    if cluster:
        labels["cluster"] = cluster
    response = client.post(PROM, json=webhook(alert(**labels)))
    assert response.status_code in (201, 202), response.text
    kinds = {
        "pod": "Pod",
        "deployment": "Deployment",
        "statefulset": "StatefulSet",
        "daemonset": "DaemonSet",
        "node": "Node",
    }
    # a namespace label is kept whatever the kind, as in Kubernaut
    key = f"{namespace}:{kinds[kind]}:{name}"
    if cluster:
        key = f"{cluster}:{key}"
    assert response.json()["fingerprint"] == hashlib.sha256(key.encode()).hexdigest()


@SETTINGS
@given(kind=st.sampled_from(["Pod", "Deployment", "Node"]), name=dns_names, namespace=dns_names)
def test_valid_event_fingerprint_matches_formula(
    client: httpx.Client, kind: str, name: str, namespace: str
) -> None:
    response = client.post(EVENTS, json=k8s_event(kind=kind, name=name, namespace=namespace))
    assert response.status_code in (201, 202), response.text
    key = f"{namespace}:{kind}:{name}"  # involvedObject.namespace as given
    assert response.json()["fingerprint"] == hashlib.sha256(key.encode()).hexdigest()
