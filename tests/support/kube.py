"""Kubernetes-mode test helpers: the deploy/ RBAC applied for a test's own namespace, real
ServiceAccount tokens, kubeconfig files, and Gateways that talk to the test API server."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from e2ecov.kubeapi import KubeAPIServer
from tests.support.services import ServiceProcess, gateway_process

REPO = Path(__file__).resolve().parents[2]
RBAC_FILE = REPO / "deploy" / "kubernaut" / "rbac.yaml"
DEPLOY_NAMESPACE = "kubernaut-system"


def in_namespace(obj: Mapping[str, Any], namespace: str, suffix: str) -> dict[str, Any]:
    """A deploy/ object moved from kubernaut-system to `namespace`; cluster-wide names get
    `suffix`, so tests in parallel namespaces do not share ClusterRoles or bindings."""
    moved: dict[str, Any] = copy.deepcopy(dict(obj))
    metadata = moved["metadata"]
    if metadata.get("namespace") == DEPLOY_NAMESPACE:
        metadata["namespace"] = namespace
    elif "namespace" not in metadata and moved["kind"] != "ClusterRole":
        metadata["name"] = f"{metadata['name']}-{suffix}"
    for subject in moved.get("subjects", []):
        if subject.get("namespace") == DEPLOY_NAMESPACE:
            subject["namespace"] = namespace
    return moved


def apply_rbac(server: KubeAPIServer, namespace: str) -> None:
    """deploy/kubernetes/rbac.yaml, for the ServiceAccounts of `namespace`."""
    for obj in yaml.safe_load_all(RBAC_FILE.read_text()):
        if obj:
            server.apply(in_namespace(obj, namespace, namespace))


def service_account(server: KubeAPIServer, namespace: str, name: str) -> str:
    """Create ServiceAccount `namespace/name` and return a real token of it."""
    server.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace},
        }
    )
    return server.service_account_token(namespace, name)


def bind_cluster_role(server: KubeAPIServer, role: str, namespace: str, account: str) -> None:
    server.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{role}-{namespace}-{account}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        }
    )


def namespace(server: KubeAPIServer, name: str, labels: Mapping[str, str] | None = None) -> None:
    server.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": dict(labels or {})},
        }
    )


def kube_gateway(
    server: KubeAPIServer,
    controller_namespace: str,
    data_dir: Path,
    *,
    auth: str = "kubernetes",
    env: Mapping[str, str] | None = None,
    token_file: Path | None = None,
) -> ServiceProcess:
    """A Gateway whose RRs are custom resources in `controller_namespace`, running as its own
    ServiceAccount with deploy/'s RBAC (not as an admin), with `auth.mode` = `auth`. With
    `token_file`, the token is written there and the kubeconfig names the file (`tokenFile`,
    as a pod's projected token is read), so a test can replace it while the Gateway runs."""
    apply_rbac(server, controller_namespace)
    token = service_account(server, controller_namespace, "signalgate-gateway")
    data_dir.mkdir(parents=True, exist_ok=True)
    kubeconfig = server.write_kubeconfig(token, data_dir / "kubeconfig")
    if token_file is not None:
        token_file.write_text(token)
        config = json.loads(kubeconfig.read_text())
        for user in config["users"]:
            user["user"] = {"tokenFile": str(token_file)}
        kubeconfig.write_text(json.dumps(config, indent=2))
    settings = {
        "SIGNALGATE_STORE__DSN": f"kubernetes://{kubeconfig}",
        "SIGNALGATE_KUBERNETES__CONFIG": f"kubernetes://{kubeconfig}",
        "SIGNALGATE_CONTROLLERNAMESPACE": controller_namespace,
        "SIGNALGATE_AUTH__MODE": auth,
        **(env or {}),
    }
    return gateway_process(data_dir, env=settings)
