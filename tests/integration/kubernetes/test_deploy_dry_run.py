"""Every kustomization in deploy/ passes a server-side dry run against the real API server:
real schemas, defaulting and admission, through kubectl's own kustomize, as `kubectl apply -k`
would send it (not only the offline checks of tests/unit/deploy)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from e2ecov.kubeapi import KubeAPIServer
from signalgate.common.config import load_settings
from signalgate.datastorage import settings as datastorage_settings
from signalgate.gateway.settings import SHORTHANDS, GatewaySettings
from tests.conftest import REPO, kube_testenv_bin

KUSTOMIZATIONS = [
    "deploy/kubernetes",
    "deploy/kind/manifests",
    "deploy/kubernaut",
    "deploy/kubernaut-tls",
]


def kubectl(server: KubeAPIServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(kube_testenv_bin() / "kubectl"), "--kubeconfig", str(server.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_server_side_dry_run(kube_apiserver: KubeAPIServer, directory: str) -> None:
    kube_apiserver.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubernaut-system"}}
    )
    done = kubectl(
        kube_apiserver, "apply", "-k", str(REPO / directory), "--dry-run=server", "-o", "name"
    )
    assert done.returncode == 0, done.stderr
    applied = set(done.stdout.split())
    assert "deployment.apps/signalgate-gateway" in applied
    assert "deployment.apps/signalgate-datastorage" in applied
    if directory.startswith("deploy/kubernaut"):
        assert {"service/gateway-service", "service/data-storage-service"} <= applied
        assert "clusterrole.rbac.authorization.k8s.io/gateway-signal-source" in applied


def test_the_kubernaut_overlay_runs_the_gateway_in_kubernetes_mode(
    kube_apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    done = kubectl(kube_apiserver, "kustomize", str(REPO / "deploy/kubernaut"))
    assert done.returncode == 0, done.stderr
    objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(done.stdout) if o}
    gateway = objects[("Deployment", "signalgate-gateway")]["spec"]["template"]["spec"]
    assert gateway["automountServiceAccountToken"] is True
    assert gateway["containers"][0]["env"] == [
        {"name": "SIGNALGATE_STORE__DSN", "value": "kubernetes://"}
    ]
    config_maps = [o for (kind, _), o in objects.items() if kind == "ConfigMap"]
    # the settings files load with the services' own models, in Kubernetes mode
    gateway_file = tmp_path / "gateway.yaml"
    gateway_file.write_text(
        next(c for c in config_maps if "gateway.yaml" in c["data"])["data"]["gateway.yaml"]
    )
    env = {"SIGNALGATE_STORE__DSN": "kubernetes://"}
    settings = load_settings(GatewaySettings, gateway_file, env, SHORTHANDS)
    assert settings.auth.mode == "kubernetes" and settings.scope_source == "cluster"
    assert str(settings.datastorage.url).startswith("http://data-storage-service.")
    ds_file = tmp_path / "datastorage.yaml"
    ds_file.write_text(
        next(c for c in config_maps if "datastorage.yaml" in c["data"])["data"]["datastorage.yaml"]
    )
    assert datastorage_settings.load(ds_file, {}).auth.mode == "kubernetes"
    for name in ("gateway-service", "data-storage-service"):
        (port,) = objects[("Service", name)]["spec"]["ports"]
        assert (port["port"], port["targetPort"]) == (8080, "api")


@pytest.mark.parametrize(
    "chart_image",
    ["quay.io/kubernaut-ai/gateway:v1.6.0", "mirror.example.com:5000/kubernaut/gateway:v1.7.0-rc1"],
)
def test_the_chart_post_renderer_swaps_the_gateway_and_gives_it_a_journal_volume(
    kube_apiserver: KubeAPIServer, tmp_path: Path, chart_image: str
) -> None:
    """deploy/kubernaut-chart/post-render over Kubernaut's chart rendering (recorded:
    tests/fixtures/kubernaut/gateway-chart-rendered.yaml), as helm would pipe it, with the
    chart's default image and with one from another registry (the chart's
    `global.image.registry`); the result passes a server-side dry run."""
    import os

    rendered = REPO / "tests" / "fixtures" / "kubernaut" / "gateway-chart-rendered.yaml"
    chart = rendered.read_text()
    assert "image: quay.io/kubernaut-ai/gateway:v1.6.0" in chart
    done = subprocess.run(
        [str(REPO / "deploy" / "kubernaut-chart" / "post-render")],
        input=chart.replace("quay.io/kubernaut-ai/gateway:v1.6.0", chart_image),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": f"{kube_testenv_bin()}:{os.environ['PATH']}"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(done.stdout) if o}
    assert {("Deployment", "gateway"), ("Service", "gateway-service")} <= set(objects)
    assert ("ClusterRole", "gateway-role") in objects  # the chart's own RBAC, untouched
    pod = objects[("Deployment", "gateway")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "localhost/signalgate-gateway:0.1.0"
    assert container["args"] == ["--config=/etc/gateway/config.yaml"]  # the chart's, kept
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "signalgate-data", "mountPath": "/var/lib/signalgate"} in container[
        "volumeMounts"
    ]
    assert {"name": "signalgate-data", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]

    kube_apiserver.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubernaut-system"}}
    )
    manifest = tmp_path / "post-rendered.yaml"
    manifest.write_text(done.stdout)
    applied = kubectl(
        kube_apiserver, "apply", "-f", str(manifest), "--dry-run=server", "-o", "name"
    )
    assert applied.returncode == 0, applied.stderr
    assert {"deployment.apps/gateway", "service/gateway-service"} <= set(applied.stdout.split())
