"""Every pod deploy/ runs is locked down, and the image is built the way the manifests assume:
non-root numeric user, exec-form instructions, the four ports, a coverage variant."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from signalgate.common.config import split_listen
from signalgate.datastorage.settings import DataStorageSettings
from signalgate.gateway.settings import GatewaySettings
from tests.unit.deploy.deploy_objects import (
    DEPLOY,
    ROOT,
    Manifest,
    every_container,
    pod_spec,
    workloads,
)

DOCKERFILE = DEPLOY / "Dockerfile"
INSTRUCTION = re.compile(r"^(?P<op>[A-Z]+)\s+(?P<rest>.*)$")


def instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            match = INSTRUCTION.match(line)
            assert match, f"not an instruction: {line!r}"
            found.append((match.group("op"), match.group("rest")))
    return found


def stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name → its instructions (the FROM line first)."""
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for op, rest in instructions():
        if op == "FROM":
            name = rest.split(" AS ")[1]
            current = result[name] = []
        current.append((op, rest))
    return result


def dockerfile_uid() -> int:
    (user,) = [rest for op, rest in instructions() if op == "USER"]
    uid, _, gid = user.partition(":")
    assert uid == gid, f"USER {user}: the manifests use one number for both"
    return int(uid)


@pytest.fixture(scope="module", params=["base", "kind_overlay"])
def pods(request: pytest.FixtureRequest) -> list[Manifest]:
    return list(workloads(request.getfixturevalue(request.param)))


def test_pods_run_as_non_root_under_the_restricted_profile(pods: list[Manifest]) -> None:
    assert pods
    for workload in pods:
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, workload
        assert pod["securityContext"]["runAsUser"] > 0, workload
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, workload
        assert pod.get("automountServiceAccountToken") is False, workload
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), workload
        for volume in pod.get("volumes", []):
            assert "hostPath" not in volume, workload


def test_containers_drop_everything(pods: list[Manifest]) -> None:
    for workload in pods:
        for c in every_container(workload):
            where = f"{workload!r} container {c['name']}"
            context = c["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert not context.get("privileged"), where
            assert context.get("runAsNonRoot", True) is True, where


def test_images_are_pinned_and_resources_bounded(pods: list[Manifest]) -> None:
    for workload in pods:
        for c in every_container(workload):
            where = f"{workload!r} container {c['name']}"
            name, _, tag = c["image"].rpartition(":")
            assert name and "/" not in tag, f"{where}: {c['image']} has no tag"
            assert tag != "latest", where
            assert c["imagePullPolicy"] == "IfNotPresent", where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
            assert "memory" in c["resources"]["limits"], where


def test_signalgate_pods_run_as_the_image_user(base: list[Manifest]) -> None:
    for workload in workloads(base):
        context = pod_spec(workload)["securityContext"]
        assert context["runAsUser"] == context["runAsGroup"] == dockerfile_uid(), workload
        assert context["fsGroup"] == dockerfile_uid(), workload  # secret files are 0440


def test_dockerfile_is_multi_stage_on_python_311_slim_with_exec_form() -> None:
    found = stages()
    # runtime is the default
    assert list(found) == ["build", "base", "coverage", "gateway", "datastorage", "runtime"]
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in instructions()
    assert found["build"][0][1] == "${PYTHON_IMAGE} AS build"
    assert found["base"][0][1] == "${PYTHON_IMAGE} AS base"  # no build tools in the image
    assert found["coverage"][0][1] == found["runtime"][0][1].replace("runtime", "coverage")
    assert ("COPY", "--from=build /opt/signalgate /opt/signalgate") in found["base"]
    for op, rest in instructions():
        if op in ("RUN", "CMD", "ENTRYPOINT"):
            assert rest.startswith("["), f"{op} {rest}: shell form"
    assert dockerfile_uid() >= 10000


def test_the_image_exposes_the_default_ports_and_serves_the_gateway() -> None:
    ports: set[int] = set()
    for op, rest in instructions():
        if op == "EXPOSE":
            ports.update(int(p) for p in rest.split())
    defaults = {
        split_listen(s.server.listen)[1] for s in (GatewaySettings(), DataStorageSettings())
    } | {split_listen(s.server.ops_listen)[1] for s in (GatewaySettings(), DataStorageSettings())}
    assert ports == defaults == {8080, 8081, 8090, 8091}
    (cmd,) = [rest for op, rest in stages()["base"] if op == "CMD"]
    assert cmd == '["signalgate-gateway", "serve"]'
    assert not [rest for op, rest in stages()["runtime"] if op in ("CMD", "ENTRYPOINT")]


@pytest.mark.parametrize("service", ["gateway", "datastorage"])
def test_the_per_service_images_serve_with_only_kubernauts_args(service: str) -> None:
    """Kubernaut's chart runs an image of its own per service with `args:
    ["--config=/etc/<service>/config.yaml"]`, which replace CMD: the service's command is the
    ENTRYPOINT, and given only `--config=…` it serves. (No container engine here: the
    composition is checked as the runtime would make it, then parsed by the real CLI.)"""
    import importlib

    steps = dict((op, rest) for op, rest in stages()[service] if op in ("ENTRYPOINT", "CMD"))
    assert steps == {"ENTRYPOINT": f'["signalgate-{service}"]', "CMD": '["serve"]'}
    (entrypoint,) = json.loads(steps["ENTRYPOINT"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module_name, _, function = scripts[entrypoint].partition(":")
    # the console script ignores SIGHUP, then runs the command's module (signalgate/__main__.py)
    cli = importlib.import_module(importlib.import_module(module_name).COMMANDS[function])
    argv = cli.with_default_command([f"--config=/etc/{service}/config.yaml"])
    args = cli._parser().parse_args(argv)
    assert (args.command, str(args.config)) == ("serve", f"/etc/{service}/config.yaml")


def test_the_coverage_stage_puts_e2ecov_startup_hook_first() -> None:
    coverage = stages()["coverage"]
    (env,) = [rest for op, rest in coverage if op == "ENV"]
    name, _, value = env.partition("=")
    assert name == "PYTHONPATH"
    site_packages = "/opt/signalgate/lib/python3.11/site-packages/"
    assert value.startswith(site_packages)
    # the installed package mirrors src/: the hook is e2ecov/startup/sitecustomize.py
    hook = ROOT / "src" / value.removeprefix(site_packages) / "sitecustomize.py"
    assert hook.is_file(), hook
    assert (hook.parent / "__init__.py").is_file()  # so setuptools packages the directory


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied: set[str] = set()
    for op, rest in stages()["build"]:
        if op == "COPY":
            copied.update(Path(p).as_posix().rstrip("/") for p in rest.split()[:-1])
    assert kept == copied == {"pyproject.toml", "README.md", "src"}
