"""A throwaway Kubernetes API server: a real `etcd` and a real `kube-apiserver` on loopback.

No kubelet and no controllers: objects are created through the API as a controller would
make them. What a test of a Kubernetes client needs is on: a static token file for the
admin, a ServiceAccount signing key pair and issuer (so TokenRequest and TokenReview work
for real ServiceAccounts), RBAC authorisation, and the project's CustomResourceDefinitions
applied and established before `start()` returns.

The binaries are not downloaded here: `bin_dir` holds `etcd` and `kube-apiserver` built by
the project (signalgate's `tools/kube-testenv/build.sh` builds them from their Go modules).
Like the PostgreSQL and Redis recipes, the API server can be stopped and started again on
the same port and data (an outage), while etcd keeps running; everything lives in one
private directory that `cleanup()` removes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2ecov.recipes import RecipeFailed, RecipeUnavailable, free_port

ADMIN_USER = "e2ecov-admin"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
START_TIMEOUT = 30.0


def find_kube_binaries(bin_dir: Path | str | None) -> Path:
    """The directory holding `etcd` and `kube-apiserver`: `bin_dir`, else
    `$E2ECOV_KUBE_BIN`, else PATH."""
    candidates = [bin_dir, os.environ.get("E2ECOV_KUBE_BIN")]
    for candidate in candidates:
        if candidate:
            path = Path(candidate)
            if (path / "etcd").is_file() and (path / "kube-apiserver").is_file():
                return path
            raise RecipeUnavailable(
                f"recipe 'kube-apiserver': {path} lacks etcd or kube-apiserver "
                "(build them first, e.g. tools/kube-testenv/build.sh in signalgate)"
            )
    on_path = shutil.which("kube-apiserver")
    if on_path and shutil.which("etcd"):
        return Path(on_path).parent
    raise RecipeUnavailable(
        "recipe 'kube-apiserver' needs etcd and kube-apiserver binaries: give bin_dir, "
        "set E2ECOV_KUBE_BIN, or put them on PATH"
    )


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def load_manifests(path: Path) -> list[dict[str, Any]]:
    """The objects of a YAML (or JSON) manifest file, empty documents left out."""
    text = path.read_text()
    if path.suffix == ".json":
        loaded = json.loads(text)
        return loaded if isinstance(loaded, list) else [loaded]
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RecipeUnavailable(
            f"recipe 'kube-apiserver': reading {path} needs PyYAML (pip install PyYAML)"
        ) from exc
    return [doc for doc in yaml.safe_load_all(text) if doc]


@dataclass
class KubeAPIServer:
    """etcd + kube-apiserver for one test session (or one e2ecov run)."""

    bin_dir: Path | None = None
    crds: Sequence[Path] = ()
    # more kube-apiserver flags (e.g. an audit log a test reads), after the recipe's own
    extra_args: Sequence[str] = ()
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # the private directory, named now (so `connection_url` is known before start) and made
    # by `start()`
    _root: Path = field(
        default_factory=lambda: (
            Path(tempfile.gettempdir()) / f"e2ecov-kubeapi-{secrets.token_hex(6)}"
        )
    )
    _made: bool = False
    mark: dict[str, str] = field(default_factory=dict)  # added to both servers' environment
    spawned: Callable[[int], None] | None = None  # told each server's pid once started
    rooted: Callable[[Path], None] | None = None  # told the private directory once made
    _etcd: subprocess.Popen[bytes] | None = None
    _apiserver: subprocess.Popen[bytes] | None = None

    # --- where things are -----------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The API server's HTTPS address."""
        return f"https://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """How a client connects, as `{services.NAME.url}` gives it in a stack file:
        `kubernetes://` and the path of the admin kubeconfig (server, CA and token)."""
        return f"kubernetes://{self.kubeconfig}"

    @property
    def root(self) -> Path:
        return self._root

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._apiserver

    @property
    def ca_file(self) -> Path:
        """The CA bundle of the self-signed serving certificate."""
        return self.root / "certs" / "apiserver.crt"

    @property
    def kubeconfig(self) -> Path:
        """A kubeconfig for the admin (static token, cluster-admin through system:masters)."""
        return self.root / "kubeconfig"

    @property
    def log_path(self) -> Path:
        return self.root / "kube-apiserver.log"

    @property
    def pid(self) -> int | None:
        return self._apiserver.pid if self._apiserver is not None else None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> KubeAPIServer:
        """Start etcd (first time only) and the API server; apply the CRDs; wait for both."""
        bins = find_kube_binaries(self.bin_dir)
        if not self._made:
            self._root.mkdir(mode=0o700, parents=True)
            self._made = True
            if self.rooted is not None:
                self.rooted(self._root)
            self._prepare()
        if self._etcd is None or self._etcd.poll() is not None:
            self._etcd = self._spawn(bins / "etcd", self._etcd_args(), "etcd.log")
        self._apiserver = self._spawn(
            bins / "kube-apiserver", self._apiserver_args(), "kube-apiserver.log"
        )
        self._wait_ready()
        self._write_kubeconfig()
        for path in self.crds:
            for obj in load_manifests(Path(path)):
                self.apply(obj)
        self._wait_crds_established()
        return self

    def stop_apiserver(self, timeout: float = 15.0) -> None:
        """Stop only the API server (etcd and the data stay): an outage of the API."""
        proc, self._apiserver = self._apiserver, None
        _stop(proc, timeout)

    def start_apiserver(self) -> None:
        """Start the API server again on the same port, after `stop_apiserver()`."""
        self._apiserver = self._spawn(
            find_kube_binaries(self.bin_dir) / "kube-apiserver",
            self._apiserver_args(),
            "kube-apiserver.log",
        )
        self._wait_ready()

    def stop(self, timeout: float = 15.0) -> None:
        self.stop_apiserver(timeout)
        proc, self._etcd = self._etcd, None
        _stop(proc, timeout)

    def cleanup(self) -> None:
        self.stop()
        if self._made:
            shutil.rmtree(self._root, ignore_errors=True)
            self._made = False

    # --- set-up ---------------------------------------------------------------------------

    def _prepare(self) -> None:
        root = self.root
        (root / "certs").mkdir()
        key = root / "sa.key"
        made = subprocess.run(
            ["openssl", "genrsa", "-out", str(key), "2048"], capture_output=True, check=False
        )
        if made.returncode != 0:
            raise RecipeFailed(f"openssl genrsa failed: {made.stderr.decode(errors='replace')}")
        subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(root / "sa.pub")],
            capture_output=True,
            check=True,
        )
        # token,user,uid,"group1,group2"
        (root / "tokens.csv").write_text(
            f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
        )
        os.chmod(root / "tokens.csv", 0o600)

    def _etcd_args(self) -> list[str]:
        peer = f"http://{self.host}:{self.etcd_peer_port}"
        client = f"http://{self.host}:{self.etcd_port}"
        return [
            "--name=default",
            f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--log-level=error",
            # a test's etcd needs no durability across machine crashes, only speed
            "--unsafe-no-fsync",
        ]

    def _apiserver_args(self) -> list[str]:
        root = self.root
        return [
            f"--etcd-servers=http://{self.host}:{self.etcd_port}",
            f"--bind-address={self.host}",
            f"--advertise-address={self.host}",
            f"--secure-port={self.port}",
            f"--cert-dir={root / 'certs'}",
            f"--token-auth-file={root / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SA_ISSUER}",
            f"--api-audiences={SA_ISSUER}",
            f"--service-account-key-file={root / 'sa.pub'}",
            f"--service-account-signing-key-file={root / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/24",
            # no controller-manager creates the `default` ServiceAccount a Pod would need
            "--disable-admission-plugins=ServiceAccount",
            "--enable-priority-and-fairness=false",
            "--v=0",
            *self.extra_args,
        ]

    def _spawn(self, binary: Path, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with open(self.root / log_name, "ab") as log:
            proc = subprocess.Popen(
                [str(binary), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.mark},
                start_new_session=True,
            )
        if self.spawned is not None:
            self.spawned(proc.pid)
        return proc

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            for name, proc in (("etcd", self._etcd), ("kube-apiserver", self._apiserver)):
                if proc is not None and proc.poll() is not None:
                    raise RecipeFailed(
                        f"{name} exited with {proc.returncode}:\n"
                        f"{_tail(self.root / (name + '.log'))}"
                    )
            if self.ca_file.exists():
                try:
                    status, body = self.request("GET", "/readyz")
                    if status == 200:
                        return
                    last = f"{status} {str(body)[:200]}"
                except OSError as exc:
                    last = repr(exc)
            time.sleep(0.1)
        raise RecipeFailed(
            f"kube-apiserver not ready after {START_TIMEOUT:g}s ({last}):\n{_tail(self.log_path)}"
        )

    def _write_kubeconfig(self) -> None:
        self.write_kubeconfig(self.admin_token, self.kubeconfig, user=ADMIN_USER)

    def write_kubeconfig(self, token: str, path: Path, user: str = "user") -> Path:
        """A kubeconfig (mode 0600) that reaches this API server as the bearer of `token`,
        e.g. a ServiceAccount token from `service_account_token`."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "e2ecov",
                    "cluster": {
                        "server": self.api_url,
                        "certificate-authority": str(self.ca_file),
                    },
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "e2ecov", "context": {"cluster": "e2ecov", "user": user}}],
            "current-context": "e2ecov",
        }
        path.write_text(json.dumps(config, indent=2))
        os.chmod(path, 0o600)
        return path

    def _wait_crds_established(self) -> None:
        crds = [
            obj
            for path in self.crds
            for obj in load_manifests(Path(path))
            if obj.get("kind") == "CustomResourceDefinition"
        ]
        deadline = time.monotonic() + START_TIMEOUT
        for crd in crds:
            name = crd["metadata"]["name"]
            while True:
                status, body = self.request(
                    "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                )
                conditions = (body.get("status") or {}).get("conditions") or []
                if status == 200 and any(
                    c.get("type") == "Established" and c.get("status") == "True" for c in conditions
                ):
                    break
                if time.monotonic() > deadline:
                    raise RecipeFailed(f"CRD {name} not established: {body}")
                time.sleep(0.05)
            # established is not yet servable: the resource's storage starts a moment later
            spec = crd["spec"]
            version = spec["versions"][0]["name"]
            plural = spec["names"]["plural"]
            scope = "namespaces/default/" if spec.get("scope") == "Namespaced" else ""
            while True:
                status, body = self.request(
                    "GET", f"/apis/{spec['group']}/{version}/{scope}{plural}?limit=1"
                )
                if status == 200:
                    break
                if time.monotonic() > deadline:
                    raise RecipeFailed(f"CRD {name} not servable ({status}): {body}")
                time.sleep(0.05)

    # --- talking to it as the admin -------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, Any]]:
        """One API call (as the admin unless `token` is given): (status, JSON body)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.api_url}{path}", data=data, method=method)  # noqa: S310 - https to our own server
        request.add_header("Authorization", f"Bearer {token or self.admin_token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._ssl()) as answer:  # noqa: S310
                return answer.status, _json(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, _json(error.read())

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create `obj`, or replace it if it exists (server-side apply's simple cousin)."""
        path = collection_path(obj)
        fresh = dict(obj)
        fresh["metadata"] = {
            k: v for k, v in obj["metadata"].items() if k not in ("resourceVersion", "uid")
        }
        status, body = self.request("POST", path, fresh)
        if status == 409:
            name = obj["metadata"]["name"]
            _, current = self.request("GET", f"{path}/{name}")
            update = dict(fresh)
            update["metadata"] = dict(fresh["metadata"])
            update["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            status, body = self.request("PUT", f"{path}/{name}", update)
        if status >= 300:
            raise RecipeFailed(f"applying {obj.get('kind')} failed ({status}): {body}")
        return body

    def service_account_token(
        self, namespace: str, name: str, audiences: Iterable[str] = (), seconds: int = 3600
    ) -> str:
        """A real token for ServiceAccount `namespace/name` (TokenRequest)."""
        spec: dict[str, Any] = {"expirationSeconds": seconds}
        if audiences:
            spec["audiences"] = list(audiences)
        status, body = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        if status != 201:
            raise RecipeFailed(f"TokenRequest for {namespace}/{name} failed ({status}): {body}")
        token: str = body["status"]["token"]
        return token


# kind -> (API path prefix, plural, namespaced) for the kinds a test typically creates
_KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Service": ("/api/v1", "services", True),
    "Pod": ("/api/v1", "pods", True),
    "Node": ("/api/v1", "nodes", False),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Secret": ("/api/v1", "secrets", True),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "ReplicaSet": ("/apis/apps/v1", "replicasets", True),
    "StatefulSet": ("/apis/apps/v1", "statefulsets", True),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "Job": ("/apis/batch/v1", "jobs", True),
    "CronJob": ("/apis/batch/v1", "cronjobs", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "CustomResourceDefinition": (
        "/apis/apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        False,
    ),
}


def collection_path(obj: Mapping[str, Any]) -> str:
    """The collection URL path of `obj` (its kind must be a known one, or a custom resource
    whose plural is the lowercase kind + 's')."""
    kind = str(obj["kind"])
    namespace = (obj.get("metadata") or {}).get("namespace")
    if kind in _KINDS:
        prefix, plural, namespaced = _KINDS[kind]
    else:
        prefix, plural, namespaced = f"/apis/{obj['apiVersion']}", kind.lower() + "s", True
    if namespaced:
        return f"{prefix}/namespaces/{namespace or 'default'}/{plural}"
    return f"{prefix}/{plural}"


def _json(raw: bytes) -> dict[str, Any]:
    try:
        loaded = json.loads(raw or b"{}")
    except ValueError:
        return {"raw": raw.decode(errors="replace")}
    return loaded if isinstance(loaded, dict) else {"items": loaded}


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
