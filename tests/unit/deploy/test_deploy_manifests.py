"""deploy/ as files: every YAML parses, every object is named, the kustomizations list what is
there, and the names the objects use to find each other resolve."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.unit.deploy.deploy_objects import (
    BASE,
    DEPLOY,
    KIND,
    KIND_OVERLAY,
    KUSTOMIZATIONS,
    NAMESPACE,
    ROOT,
    Manifest,
    container,
    every_container,
    find,
    is_object_file,
    kustomization,
    pod_spec,
    port_number,
    read_manifests,
    workloads,
    yaml_files,
)

CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_every_yaml_file_parses() -> None:
    files = yaml_files()
    assert len(files) >= 10, files
    for path in files:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert documents, f"{path}: no YAML document"
        assert all(isinstance(d, dict) for d in documents), f"{path}: not a mapping"


def test_every_object_has_api_version_kind_and_name() -> None:
    for path in filter(is_object_file, yaml_files()):
        for obj in yaml.safe_load_all(path.read_text()):
            where = f"{path.relative_to(ROOT)}: {obj.get('kind')}"
            assert isinstance(obj.get("apiVersion"), str) and obj["apiVersion"], where
            assert isinstance(obj.get("kind"), str) and obj["kind"], where
            assert isinstance(obj.get("metadata", {}).get("name"), str), where
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", obj["metadata"]["name"]), where
            if obj["kind"] not in CLUSTER_SCOPED:
                assert obj["metadata"].get("namespace") == NAMESPACE, where


def test_the_kustomizations_and_the_kind_config_are_what_their_tools_expect() -> None:
    for directory in KUSTOMIZATIONS:
        k = kustomization(directory)
        assert (k["apiVersion"], k["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
    cluster = yaml.safe_load((KIND / "cluster.yaml").read_text())
    assert (cluster["apiVersion"], cluster["kind"]) == ("kind.x-k8s.io/v1alpha4", "Cluster")
    assert cluster["name"] == "signalgate"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(ROOT)))
def test_kustomization_lists_exactly_the_files_present(directory: Path) -> None:
    k = kustomization(directory)
    listed: set[Path] = set()
    for resource in k.get("resources", []):
        target = (directory / resource).resolve()
        assert target.exists(), f"{directory}: resource {resource!r} does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").is_file(), f"{resource!r} is no kustomization"
            assert directory not in target.parents, f"{resource!r}: a base inside the overlay"
        else:
            assert target.parent == directory, f"{resource!r}: files are listed where they live"
            listed.add(target)
    for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        for item in generator.get("files", []):
            source = item.partition("=")[2] or item  # `key=path` or `path`
            listed.add((directory / source).resolve())
    present = {
        path.resolve()
        for path in directory.rglob("*")
        if path.is_file() and path.name != "kustomization.yaml"
    }
    assert present == listed, (
        f"not listed: {sorted(str(p) for p in present - listed)}; "
        f"listed but absent: {sorted(str(p) for p in listed - present)}"
    )


def test_no_two_objects_share_kind_and_name(kind_overlay: list[Manifest]) -> None:
    keys = [(m.kind, m.name) for m in kind_overlay]
    assert len(keys) == len(set(keys)), sorted(keys)


def test_base_holds_namespace_crd_both_services_and_the_schema_jobs(base: list[Manifest]) -> None:
    assert {(m.kind, m.name) for m in base} == {
        ("Namespace", NAMESPACE),
        ("CustomResourceDefinition", "remediationrequests.kubernaut.ai"),
        ("ServiceAccount", "signalgate-gateway"),
        ("Deployment", "signalgate-gateway"),
        ("Service", "signalgate-gateway"),
        ("ServiceAccount", "signalgate-datastorage"),
        ("Deployment", "signalgate-datastorage"),
        ("Service", "signalgate-datastorage"),
        ("CronJob", "signalgate-datastorage-maintain"),
    }
    # Secrets are the operator's (README), never committed
    assert not [m for m in read_manifests(DEPLOY) if m.kind == "Secret"]


def test_service_accounts_and_config_maps_referenced_exist(kind_overlay: list[Manifest]) -> None:
    accounts = {m.name for m in kind_overlay if m.kind == "ServiceAccount"}
    generated = {g["name"] for g in kustomization(BASE)["configMapGenerator"]}
    for workload in workloads(kind_overlay):
        pod = pod_spec(workload)
        if "serviceAccountName" in pod:
            assert pod["serviceAccountName"] in accounts, workload
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in generated, workload


def test_every_secret_reference_is_one_up_py_writes(
    kind_overlay: list[Manifest], up: ModuleType
) -> None:
    """The Kind path's Secrets carry every key the workloads ask for (and no other)."""
    written = {
        item["metadata"]["name"]: set(item["stringData"])
        for item in up.development_secrets("admin", "audit", "pw")["items"]
    }
    wanted: dict[str, set[str]] = {}
    for workload in workloads(kind_overlay):
        pod = pod_spec(workload)
        for c in every_container(workload):
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    wanted.setdefault(ref["name"], set()).add(ref["key"])
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                keys = {item["key"] for item in volume["secret"]["items"]}
                wanted.setdefault(volume["secret"]["secretName"], set()).update(keys)
    assert wanted == written


def test_services_select_their_pods_and_target_named_container_ports(
    kind_overlay: list[Manifest],
) -> None:
    deployments = [m for m in kind_overlay if m.kind == "Deployment"]
    services = [m for m in kind_overlay if m.kind == "Service"]
    assert len(services) == 5  # gateway, gateway-nodeport, datastorage, postgres, redis
    for service in services:
        selector = service.obj["spec"]["selector"]
        matched = [
            d
            for d in deployments
            if selector.items() <= d.obj["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, f"{service!r} selects {matched}"
        (deployment,) = matched
        assert (
            deployment.obj["spec"]["selector"]["matchLabels"].items()
            <= deployment.obj["spec"]["template"]["metadata"]["labels"].items()
        )
        c = pod_spec(deployment)["containers"][0]
        for port in service.obj["spec"]["ports"]:
            port_number(c, port["targetPort"])  # a port the container declares


def test_kind_publishes_the_gateway_node_port(kind_overlay: list[Manifest]) -> None:
    cluster = yaml.safe_load((KIND / "cluster.yaml").read_text())
    (mapping,) = cluster["nodes"][0]["extraPortMappings"]
    node_port = find(kind_overlay, "Service", "signalgate-gateway-nodeport")
    (port,) = node_port.obj["spec"]["ports"]
    assert port["nodePort"] == mapping["containerPort"]
    assert mapping["hostPort"] == 8080 and mapping["listenAddress"] == "127.0.0.1"
    assert port["targetPort"] == "api"


def test_images_name_the_project_version_and_kind_gets_the_one_up_py_loads(
    base: list[Manifest], up: ModuleType
) -> None:
    for workload in workloads(base):
        for c in every_container(workload):
            assert c["image"] == f"signalgate:{VERSION}", workload
    (image,) = kustomization(KIND_OVERLAY)["images"]
    assert image["name"] == "signalgate"
    assert f"{image['newName']}:{image['newTag']}" == up.IMAGE == f"localhost/signalgate:{VERSION}"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f'org.opencontainers.image.version="{VERSION}"' in dockerfile


def test_schema_commands_run_with_the_servers_settings(base: list[Manifest]) -> None:
    """`migrate` runs before the server in its pod (no crash-loop while a Job catches up);
    `maintain` runs daily. Both with the server's image, settings file and database."""
    deployment = find(base, "Deployment", "signalgate-datastorage")
    serve = container(deployment, "datastorage")
    (migrate,) = pod_spec(deployment)["initContainers"]
    (maintain,) = pod_spec(find(base, "CronJob", "signalgate-datastorage-maintain"))["containers"]
    assert pod_spec(find(base, "CronJob", "signalgate-datastorage-maintain"))["restartPolicy"] == (
        "Never"
    )
    dsn = [e for e in serve["env"] if e["name"] == "SIGNALGATE_STORE__DSN"]
    for c, command in ((migrate, "migrate"), (maintain, "maintain")):
        assert c["command"] == ["signalgate-datastorage", command, *serve["command"][2:]]
        assert c["image"] == serve["image"]
        assert [e for e in c["env"] if e["name"] == "SIGNALGATE_STORE__DSN"] == dsn
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["config"] == "/etc/signalgate/config"
    maintain = find(base, "CronJob", "signalgate-datastorage-maintain").obj["spec"]
    assert maintain["concurrencyPolicy"] == "Forbid"
