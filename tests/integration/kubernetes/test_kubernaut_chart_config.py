"""The Gateway started the way Kubernaut's chart starts it: `--config=` Kubernaut's own
`config.yaml` (tests/fixtures/kubernaut/gateway-config.yaml), no command, `POD_NAMESPACE`
from the pod, against a real API server and a real DataStorage.

Only the file's addresses are changed for the test (free loopback ports instead of :8080,
:8081, :9090; the test's DataStorage instead of the cluster's Service name); everything else
is the chart's rendering, read as it is. The Gateway runs as the chart's ServiceAccount with
the chart's own RBAC (tests/fixtures/kubernaut/gateway-chart-rendered.yaml), so the test also
shows that Kubernaut's permissions are all signalgate's Gateway needs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import yaml

from e2ecov.kubeapi import KubeAPIServer
from e2ecov.recipes import free_port
from tests.integration.datastorage.dstools import (
    WRITER_TOKEN,
    datastorage_process,
    gateway_events_stored,
)
from tests.support.contract import problem
from tests.support.kube import (
    REPO,
    apply_rbac,
    bind_cluster_role,
    in_namespace,
    namespace,
    service_account,
)
from tests.support.services import ServiceProcess, alert, webhook

KUBERNAUT_CONFIG = REPO / "tests" / "fixtures" / "kubernaut" / "gateway-config.yaml"
CHART_RENDERED = REPO / "tests" / "fixtures" / "kubernaut" / "gateway-chart-rendered.yaml"
PROM = "/api/v1/signals/prometheus"


def test_kubernauts_config_file_runs_the_gateway_in_kubernetes_mode(
    kube_apiserver: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> None:
    datastorage = datastorage_process(tmp_path / "ds").start()
    try:
        ports = {name: free_port() for name in ("listenAddr", "healthAddr", "metricsAddr")}
        config = yaml.safe_load(KUBERNAUT_CONFIG.read_text())
        config["server"].update({key: f"127.0.0.1:{port}" for key, port in ports.items()})
        config["datastorage"]["url"] = datastorage.api_url
        config["datastorage"]["buffer"]["flushInterval"] = "200ms"
        config_file = tmp_path / "config.yaml"
        config_file.write_text(yaml.safe_dump(config))

        # the pod: the chart's ServiceAccount and RBAC, found through KUBECONFIG
        for obj in yaml.safe_load_all(CHART_RENDERED.read_text()):
            if obj and obj["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
                kube_apiserver.apply(in_namespace(obj, kube_namespace, kube_namespace))
        own_token = kube_apiserver.service_account_token(kube_namespace, "gateway")
        kubeconfig = kube_apiserver.write_kubeconfig(own_token, tmp_path / "kubeconfig")
        token_file = tmp_path / "ds.token"  # stands for the pod's mounted token
        token_file.write_text(WRITER_TOKEN)
        gateway = ServiceProcess(
            command=[sys.executable, "-m", "signalgate.gateway.cli", f"--config={config_file}"],
            env={
                "PATH": "/usr/bin:/bin",
                "KUBECONFIG": str(kubeconfig),
                "POD_NAMESPACE": kube_namespace,
                "SIGNALGATE_DATADIR": str(tmp_path / "gw"),
                "SIGNALGATE_DATASTORAGE__TOKENFILE": str(token_file),
            },
            api_url=f"http://127.0.0.1:{ports['listenAddr']}",
            ops_url=f"http://127.0.0.1:{ports['healthAddr']}",
            log_path=tmp_path / "gateway.log",
        ).start()
        try:
            exercise(gateway, kube_apiserver, kube_namespace, ports["metricsAddr"], datastorage)
        finally:
            assert gateway.stop() == 0
        log = gateway.output()
        assert "is in Kubernaut's Gateway layout: read as signalgate settings" in log
        for key in ("server.writeTimeout", "processing.retry.*", "telemetry.*"):
            assert key in log, key
    finally:
        datastorage.stop()


def exercise(
    gateway: ServiceProcess,
    server: KubeAPIServer,
    pod_namespace: str,
    metrics_port: int,
    datastorage: ServiceProcess,
) -> None:
    # probes where the chart's probes are, metrics where its scrape annotation points
    assert httpx.get(f"{gateway.ops_url}/healthz").status_code == 200
    assert httpx.get(f"{gateway.ops_url}/readyz").status_code == 200
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert metrics.status_code == 200 and "gateway_signals_received_total" in metrics.text

    # callers present ServiceAccount tokens, decided by Kubernaut's RBAC
    apply_rbac(server, pod_namespace)  # for Kubernaut's gateway-signal-source ClusterRole
    sender = service_account(server, pod_namespace, "alertmanager")
    bind_cluster_role(server, "gateway-signal-source", pod_namespace, "alertmanager")
    target = f"{pod_namespace}-apps"
    namespace(server, target, {"kubernaut.ai/managed": "true"})  # scope from the cluster
    body = webhook(alert(namespace=target, pod="web-1"))
    with gateway.client("an-invented-token") as client:
        problem(client.post(PROM, json=body), 401, "unauthorized")
    with gateway.client(sender) as client:
        created = client.post(PROM, json=body)
        assert created.status_code == 201, created.text
        name = created.json()["remediationRequestName"]
        assert client.post(PROM, json=body).status_code == 202

    # the RR is a custom resource in the pod's namespace, on the API server
    status, rr = server.request(
        "GET", f"/apis/kubernaut.ai/v1alpha1/namespaces/{pod_namespace}/remediationrequests/{name}"
    )
    assert status == 200, rr
    assert rr["spec"]["targetResource"] == {
        "kind": "Pod",
        "name": "web-1",
        "namespace": target,
        "apiVersion": "v1",
    }
    assert rr["status"]["deduplication"]["occurrenceCount"] == 2

    # and the audit trail reached DataStorage (datastorage.url and buffer.* of the file)
    deadline = time.monotonic() + 15
    while gateway_events_stored(datastorage) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gateway_events_stored(datastorage) >= 2
