"""deploy/kind/up.py: the command sequence it prints for Docker and for Podman, how it picks
the engine, and how it fails when a tool is missing.

No container engine or cluster can run here, so the script runs as a subprocess with PATH
holding only *stub* executables named docker, podman, kind and kubectl that exit 0: enough
for its `shutil.which` checks, and `--dry-run` never runs them.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.deploy.deploy_objects import KIND

UP = KIND / "up.py"
KUBECTL = "kubectl --context kind-signalgate"
IN_NS = f"{KUBECTL} --namespace kubernaut-system"
WAITS = [
    f"{IN_NS} rollout status deployment/signalgate-postgres --timeout=300s",
    f"{IN_NS} rollout status deployment/signalgate-redis --timeout=300s",
    f"{IN_NS} rollout status deployment/signalgate-datastorage --timeout=300s",
    f"{IN_NS} rollout status deployment/signalgate-gateway --timeout=300s",
]
APPLY = [
    f"{KUBECTL} apply --filename deploy/kubernetes/namespace.yaml",
    f"{KUBECTL} apply --filename build/kind/secrets.json",
    f"{KUBECTL} apply --kustomize deploy/kind/manifests",
]
BUILD = "build --file deploy/Dockerfile --target runtime --tag localhost/signalgate:0.1.0 ."


def stub_path(tmp_path: Path, *tools: str) -> str:
    """A directory of stub executables (each just exits 0), used as the whole PATH."""
    stubs = tmp_path / "stub-bin"
    stubs.mkdir()
    for tool in tools:
        stub = stubs / tool
        stub.write_text("#!/bin/sh\n# test stub: no container engine or cluster here\nexit 0\n")
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return str(stubs)


def up_py(
    tmp_path: Path, tools: tuple[str, ...], *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(UP), *args],
        cwd=tmp_path,
        env={"PATH": stub_path(tmp_path, *tools), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def commands(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line and not line.startswith("#")]


ALL_TOOLS = ("docker", "podman", "kind", "kubectl")


def test_docker_sequence(tmp_path: Path) -> None:
    done = up_py(tmp_path, ALL_TOOLS, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert commands(done.stdout) == [
        "kind create cluster --name signalgate --config deploy/kind/cluster.yaml",
        f"docker {BUILD}",
        "kind load docker-image localhost/signalgate:0.1.0 --name signalgate",
        *APPLY,
        *WAITS,
    ]
    assert "build/kind/secrets.json" in done.stdout.splitlines()[0]  # says what it writes


@pytest.mark.parametrize(
    ("tools", "args", "env"),
    [
        (ALL_TOOLS, ("--engine", "podman"), {}),
        (ALL_TOOLS, (), {"KIND_EXPERIMENTAL_PROVIDER": "podman"}),
        (("podman", "kind", "kubectl"), (), {}),  # the only engine installed
    ],
    ids=["flag", "kind-provider", "detected"],
)
def test_podman_sequence_goes_through_an_archive_and_keeps_the_image_name(
    tmp_path: Path, tools: tuple[str, ...], args: tuple[str, ...], env: dict[str, str]
) -> None:
    done = up_py(tmp_path, tools, "--dry-run", *args, **env)
    assert done.returncode == 0, done.stderr
    provider = "KIND_EXPERIMENTAL_PROVIDER=podman"
    archive = "build/kind/signalgate-image.tar"
    assert commands(done.stdout) == [
        f"{provider} kind create cluster --name signalgate --config deploy/kind/cluster.yaml",
        f"podman {BUILD}",
        f"podman save --format docker-archive --output {archive} localhost/signalgate:0.1.0",
        f"{provider} kind load image-archive {archive} --name signalgate",
        *APPLY,
        *WAITS,
    ]


def test_cluster_name_and_timeout_are_options(tmp_path: Path) -> None:
    done = up_py(tmp_path, ALL_TOOLS, "--dry-run", "--name", "dev", "--timeout", "90s")
    assert done.returncode == 0, done.stderr
    lines = commands(done.stdout)
    assert lines[0].endswith("create cluster --name dev --config deploy/kind/cluster.yaml")
    assert all(
        line.startswith("kubectl --context kind-dev ") for line in lines if "kubectl" in line
    )
    assert lines[-1].endswith("--timeout=90s")


@pytest.mark.parametrize("missing", ["kind", "kubectl", "docker"])
def test_a_missing_tool_stops_before_anything_runs(tmp_path: Path, missing: str) -> None:
    tools = tuple(t for t in ("docker", "kind", "kubectl") if t != missing)
    args = ("--engine", "docker") if missing == "docker" else ()
    done = up_py(tmp_path, tools, *args)
    assert done.returncode == 3
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: {missing} not found on PATH — needed to ")
    assert "install it (https://" in line


def test_no_engine_at_all_is_named(tmp_path: Path) -> None:
    done = up_py(tmp_path, ("kind", "kubectl"))
    assert done.returncode == 3
    assert done.stderr.startswith("error: neither docker nor podman found on PATH")
    assert "--engine" in done.stderr


def test_dry_run_needs_none_of_the_tools_and_names_the_missing_ones(tmp_path: Path) -> None:
    done = up_py(tmp_path, (), "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = commands(done.stdout)
    assert lines[0].startswith("kind create cluster --name signalgate")
    assert f"docker {BUILD}" in lines
    assert lines[-4:] == WAITS
    note = done.stdout.splitlines()[0]
    assert note.startswith("# not found on PATH here, needed to run these: docker (https://")
    assert "kind (https://" in note and "kubectl (https://" in note


def test_dry_run_with_some_tools_names_only_the_missing(tmp_path: Path) -> None:
    done = up_py(tmp_path, ("podman", "kind"), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"podman {BUILD}" in commands(done.stdout)
    note = done.stdout.splitlines()[0]
    assert (
        note
        == "# not found on PATH here, needed to run these: kubectl (https://kubernetes.io/docs/tasks/tools/)"
    )


def test_an_unknown_engine_is_a_usage_error(tmp_path: Path) -> None:
    done = up_py(tmp_path, ALL_TOOLS, "--dry-run", "--engine", "nerdctl")
    assert done.returncode == 2
    assert "invalid choice: 'nerdctl'" in done.stderr


def test_development_secrets_are_written_once_and_private(up: ModuleType, tmp_path: Path) -> None:
    state = tmp_path / "state"
    token_file = up.write_secrets(state)
    secrets_file = state / "secrets.json"
    first = (token_file.read_text(), secrets_file.read_text())
    assert len(first[0]) == 64
    for path in (token_file, secrets_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    manifest = json.loads(first[1])
    assert manifest["kind"] == "List"
    assert {item["metadata"]["name"] for item in manifest["items"]} == {
        "signalgate-postgres",
        "signalgate-gateway",
        "signalgate-datastorage",
    }
    assert first[0] not in first[1]  # only its hash is in the Secrets
    # a second run keeps them: a new password would not match the running PostgreSQL
    up.write_secrets(state)
    assert (token_file.read_text(), secrets_file.read_text()) == first


def test_engine_choice_order(up: ModuleType) -> None:
    def which(*present: str) -> Callable[[str], str | None]:
        return lambda tool: f"/bin/{tool}" if tool in present else None

    assert up.choose_engine("podman", {}, which("docker")) == "podman"
    assert up.choose_engine(None, {"KIND_EXPERIMENTAL_PROVIDER": "podman"}, which("docker")) == (
        "podman"
    )
    assert up.choose_engine(None, {}, which("docker", "podman")) == "docker"
    assert up.choose_engine(None, {}, which("podman")) == "podman"


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = up_py(tmp_path, ALL_TOOLS, "--dry-run", "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    assert f"{KUBECTL} apply --filename {state}/secrets.json" in commands(done.stdout)
    assert not state.exists()
