"""Reading deploy/: the Kubernetes objects a kustomization applies, and ways into them.

Nothing here needs a cluster or a container engine: the manifests are read as YAML.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kubernetes"
KIND = DEPLOY / "kind"
KIND_OVERLAY = KIND / "manifests"
KUSTOMIZATIONS = (BASE, KIND_OVERLAY)
NAMESPACE = "kubernaut-system"
WORKLOAD_KINDS = ("Deployment", "Job", "CronJob")


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and the file it came from."""

    path: Path
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    def __repr__(self) -> str:
        return f"{self.kind}/{self.name} ({self.path.relative_to(ROOT)})"


def yaml_files() -> list[Path]:
    return sorted(DEPLOY.rglob("*.yaml"))


def is_object_file(path: Path) -> bool:
    """Kubernetes object files, as opposed to kustomizations, settings and the Kind config."""
    return (
        path.name != "kustomization.yaml" and path.parent.name != "config" and path.parent != KIND
    )


def read_manifests(directory: Path) -> list[Manifest]:
    found = []
    for path in sorted(directory.rglob("*.yaml")):
        if is_object_file(path):
            for obj in yaml.safe_load_all(path.read_text()):
                if obj is not None:
                    found.append(Manifest(path, obj))
    return found


def kustomization(directory: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return loaded


def rendered(directory: Path) -> list[Manifest]:
    """The objects `kubectl apply -k directory` starts from: its files and its bases'
    (the generators and `images:` are looked at by the tests that need them)."""
    found: list[Manifest] = []
    for resource in kustomization(directory).get("resources", []):
        target = (directory / resource).resolve()
        if target.is_dir():
            found.extend(rendered(target))
        else:
            for obj in yaml.safe_load_all(target.read_text()):
                if obj is not None:
                    found.append(Manifest(target, obj))
    return found


def pod_spec(manifest: Manifest) -> dict[str, Any]:
    spec = manifest.obj["spec"]
    if manifest.kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


def every_container(manifest: Manifest) -> list[dict[str, Any]]:
    """Init containers too: they run the same image with the same rules."""
    pod = pod_spec(manifest)
    found: list[dict[str, Any]] = pod.get("initContainers", []) + pod["containers"]
    return found


def workloads(manifests: list[Manifest]) -> Iterator[Manifest]:
    return (m for m in manifests if m.kind in WORKLOAD_KINDS)


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [m for m in manifests if m.kind == kind and m.name == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {matches}"
    return matches[0]


def container(manifest: Manifest, name: str) -> dict[str, Any]:
    matches = [c for c in pod_spec(manifest)["containers"] if c["name"] == name]
    assert len(matches) == 1, f"{manifest!r}: expected one container {name!r}"
    found: dict[str, Any] = matches[0]
    return found


def port_number(c: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a number or a container port's name) as a number."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == port]
    assert len(named) == 1, f"container {c['name']!r} has no port named {port!r}"
    return int(named[0])


def generated_config(directory: Path, name: str) -> tuple[str, Path]:
    """The (key, source file) of a one-file configMapGenerator entry."""
    entries = [
        g for g in kustomization(directory).get("configMapGenerator", []) if g["name"] == name
    ]
    assert len(entries) == 1, f"no configMapGenerator {name!r} in {directory}"
    (item,) = entries[0]["files"]
    key, _, source = item.partition("=")
    return key, directory / source
