#!/usr/bin/env python3
"""Bring signalgate up on a local Kind cluster, or print how (`--dry-run`).

    python3 deploy/kind/up.py [--engine docker|podman] [--name signalgate] [--dry-run]

The steps: create the cluster (deploy/kind/cluster.yaml; skipped when it exists), build the
image (deploy/Dockerfile) with Docker or Podman, load it into the cluster under its exact
name, apply the namespace and the development Secrets, apply deploy/kind/manifests (the
base in deploy/kubernetes plus a throwaway PostgreSQL and Redis), then wait for the
databases and both services (DataStorage's init container applies its schema). Every
kubectl call names the cluster's context, so no other cluster is touched.

The engine is `--engine`, else podman when KIND_EXPERIMENTAL_PROVIDER=podman, else docker
when on PATH, else podman. The development Secrets (random tokens and password) are written
once to the state directory (build/kind) and reused on the next run; the admin token, for
both services, is in <state>/admin.token.

Stdlib only. Exit codes: 0 up, 1 a step failed, 2 bad arguments, 3 a tool is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/signalgate:0.1.0"  # = the `images:` entry of deploy/kind/manifests
CLUSTER = "signalgate"
NAMESPACE = "kubernaut-system"
ENGINES = ("docker", "podman")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_MISSING_TOOL = 3

INSTALL_HINTS = {
    "docker": "https://docs.docker.com/engine/install/",
    "podman": "https://podman.io/docs/installation",
    "kind": "https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
    "kubectl": "https://kubernetes.io/docs/tasks/tools/",
}
NEEDED_FOR = {
    "docker": "to build the image",
    "podman": "to build the image",
    "kind": "to create the cluster and load the image into it",
    "kubectl": "to apply the manifests and wait for the rollouts",
}

GATEWAY_SCOPES = "signals:write,remediations:read,remediations:write"
DATASTORAGE_ADMIN_SCOPES = "audit:read,audit:write"


class UpError(Exception):
    """A controlled failure: the message is printed as one line, `code` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Step:
    """One command of the sequence, run from the repository root."""

    description: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    skip_if_cluster_exists: bool = False

    def render(self) -> str:
        prefix = "".join(f"{key}={shlex.quote(value)} " for key, value in self.env.items())
        return prefix + shlex.join(self.argv)


@dataclass(frozen=True)
class Options:
    engine: str
    cluster: str
    state_dir: Path
    timeout: str


def choose_engine(
    requested: str | None,
    environ: Mapping[str, str],
    which: Callable[[str], str | None] = shutil.which,
    fallback: str | None = None,
) -> str:
    """The container engine, and why: the flag wins, then kind's own provider setting (a
    Podman-backed kind needs a Podman-built image), then whichever engine is installed, then
    `fallback` (a dry run shows Docker's commands on a machine that has neither)."""
    if requested:
        return requested
    if environ.get("KIND_EXPERIMENTAL_PROVIDER") == "podman":
        return "podman"
    for engine in ENGINES:
        if which(engine):
            return engine
    if fallback:
        return fallback
    raise UpError(
        "neither docker nor podman found on PATH — one is needed to build the image; "
        f"install one ({INSTALL_HINTS['docker']} or {INSTALL_HINTS['podman']}) "
        "or pass --engine",
        EXIT_MISSING_TOOL,
    )


def missing_tools(engine: str, which: Callable[[str], str | None] = shutil.which) -> list[str]:
    return [tool for tool in (engine, "kind", "kubectl") if not which(tool)]


def check_tools(engine: str, which: Callable[[str], str | None] = shutil.which) -> None:
    """Stop before anything runs, naming the first missing tool and how to install it."""
    missing = missing_tools(engine, which)
    if missing:
        tool = missing[0]
        raise UpError(
            f"{tool} not found on PATH — needed {NEEDED_FOR[tool]}; "
            f"install it ({INSTALL_HINTS[tool]}) and run this again",
            EXIT_MISSING_TOOL,
        )


def relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def kind_env(engine: str) -> dict[str, str]:
    """kind drives Docker unless told otherwise: with Podman it must be told."""
    return {"KIND_EXPERIMENTAL_PROVIDER": "podman"} if engine == "podman" else {}


def plan(options: Options) -> list[Step]:
    """The whole sequence, in order."""
    kind = kind_env(options.engine)
    kubectl = ("kubectl", "--context", f"kind-{options.cluster}")
    namespaced = (*kubectl, "--namespace", NAMESPACE)
    timeout = f"--timeout={options.timeout}"
    steps = [
        Step(
            "create the cluster (skipped when it exists)",
            (
                "kind",
                "create",
                "cluster",
                "--name",
                options.cluster,
                "--config",
                "deploy/kind/cluster.yaml",
            ),
            kind,
            skip_if_cluster_exists=True,
        ),
        Step(
            f"build the image with {options.engine}",
            (
                options.engine,
                "build",
                "--file",
                "deploy/Dockerfile",
                "--target",
                "runtime",
                "--tag",
                IMAGE,
                ".",
            ),
        ),
    ]
    if options.engine == "podman":
        # kind cannot read Podman's image store: go through an archive, which keeps the
        # exact name (localhost/ prefix included) that the manifests ask for
        archive = relative(options.state_dir / "signalgate-image.tar")
        steps += [
            Step(
                "save the image to an archive",
                ("podman", "save", "--format", "docker-archive", "--output", archive, IMAGE),
            ),
            Step(
                "load the archive into the cluster",
                ("kind", "load", "image-archive", archive, "--name", options.cluster),
                kind,
            ),
        ]
    else:
        steps.append(
            Step(
                "load the image into the cluster",
                ("kind", "load", "docker-image", IMAGE, "--name", options.cluster),
            )
        )
    secrets_file = relative(options.state_dir / "secrets.json")
    steps += [
        Step(
            "create the namespace",
            (*kubectl, "apply", "--filename", "deploy/kubernetes/namespace.yaml"),
        ),
        Step("apply the development Secrets", (*kubectl, "apply", "--filename", secrets_file)),
        Step("apply the manifests", (*kubectl, "apply", "--kustomize", "deploy/kind/manifests")),
        Step(
            "wait for PostgreSQL",
            (*namespaced, "rollout", "status", "deployment/signalgate-postgres", timeout),
        ),
        Step(
            "wait for Redis",
            (*namespaced, "rollout", "status", "deployment/signalgate-redis", timeout),
        ),
        Step(
            "wait for DataStorage",
            (*namespaced, "rollout", "status", "deployment/signalgate-datastorage", timeout),
        ),
        Step(
            "wait for the Gateway",
            (*namespaced, "rollout", "status", "deployment/signalgate-gateway", timeout),
        ),
    ]
    return steps


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _secret(name: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "signalgate"},
        },
        "type": "Opaque",
        "stringData": dict(data),
    }


def development_secrets(admin_token: str, audit_token: str, password: str) -> dict[str, Any]:
    """The three Secrets the Kind overlay needs, as one `kubectl apply`-able List.

    One admin token for both services (as `signalgate up` does); the Gateway writes its audit
    events to DataStorage with a second token that may write only `gateway` events
    (`audit:write:gateway`).
    """
    dsn = f"postgresql://signalgate:{password}@signalgate-postgres.{NAMESPACE}.svc:5432/signalgate"
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            _secret("signalgate-postgres", {"password": password}),
            _secret(
                "signalgate-gateway",
                {
                    "store-dsn": dsn,
                    "tokens": f"{_sha256(admin_token)} {GATEWAY_SCOPES}\n",
                    "datastorage-token": audit_token,
                },
            ),
            _secret(
                "signalgate-datastorage",
                {
                    "store-dsn": dsn,
                    "redis-url": f"redis://signalgate-redis.{NAMESPACE}.svc:6379/0",
                    "tokens": (
                        f"{_sha256(admin_token)} {DATASTORAGE_ADMIN_SCOPES}\n"
                        f"{_sha256(audit_token)} audit:write:gateway\n"
                    ),
                },
            ),
        ],
    }


def write_secrets(state_dir: Path) -> Path:
    """Write the Secrets and the admin token once; later runs reuse them (a new PostgreSQL
    password would not match the running database)."""
    secrets_file = state_dir / "secrets.json"
    token_file = state_dir / "admin.token"
    if secrets_file.exists() and token_file.exists():
        return token_file
    state_dir.mkdir(parents=True, exist_ok=True)
    admin = secrets.token_hex(32)
    manifest = development_secrets(admin, secrets.token_hex(32), secrets.token_hex(16))
    for path, text in ((token_file, admin), (secrets_file, json.dumps(manifest, indent=2))):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
    return token_file


def cluster_exists(options: Options) -> bool:
    found = subprocess.run(
        ["kind", "get", "clusters"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **kind_env(options.engine)},
    )
    return options.cluster in found.stdout.split()


def run(steps: Sequence[Step], options: Options) -> None:
    token_file = write_secrets(options.state_dir)
    exists = cluster_exists(options)
    for number, step in enumerate(steps, 1):
        if step.skip_if_cluster_exists and exists:
            print(f"[{number}/{len(steps)}] cluster {options.cluster!r} exists: not creating it")
            continue
        print(f"[{number}/{len(steps)}] {step.description}: {step.render()}", flush=True)
        done = subprocess.run(step.argv, cwd=ROOT, env={**os.environ, **step.env}, check=False)
        if done.returncode != 0:
            raise UpError(
                f"step {number} ({step.description}) failed with exit code {done.returncode}: "
                f"{step.render()}\n  pods: kubectl --context kind-{options.cluster} "
                f"--namespace {NAMESPACE} get pods; then `describe pod` / `logs` the failing one",
                EXIT_FAILED,
            )
    print(
        f"signalgate is up on kind cluster {options.cluster!r}\n"
        f"  gateway  API http://127.0.0.1:8080\n"
        f"  admin token  {relative(token_file)}  (Authorization: Bearer $(cat ...))"
    )


def dry_run(steps: Sequence[Step], options: Options, missing: Sequence[str] = ()) -> None:
    """Print the steps; nothing runs, so the tools need not be installed on this machine."""
    if missing:
        hints = ", ".join(f"{tool} ({INSTALL_HINTS[tool]})" for tool in missing)
        print(f"# not found on PATH here, needed to run these: {hints}")
    secrets_file = relative(options.state_dir / "secrets.json")
    print(f"# write {secrets_file} and admin.token next to it (new random tokens), unless present")
    for step in steps:
        print(f"# {step.description}")
        print(step.render())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deploy/kind/up.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--engine", choices=ENGINES, help="container engine (default: detected)")
    parser.add_argument("--name", default=CLUSTER, help="Kind cluster name (default: %(default)s)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=ROOT / "build" / "kind",
        help="where the development Secrets, admin token and image archive go",
    )
    parser.add_argument("--timeout", default="300s", help="per wait (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        # a dry run only prints: it works without the tools and says which ones are missing
        engine = choose_engine(args.engine, os.environ, fallback="docker" if args.dry_run else None)
        options = Options(engine, args.name, args.state_dir, args.timeout)
        if args.dry_run:
            dry_run(plan(options), options, missing_tools(engine))
        else:
            check_tools(engine)
            run(plan(options), options)
    except UpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
