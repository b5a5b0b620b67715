"""Where the Kubernetes API server is and how to authenticate to it.

Two sources, as every Kubernetes client knows them: the pod's own ServiceAccount (in-cluster:
`KUBERNETES_SERVICE_HOST`/`PORT` and the files under
`/var/run/secrets/kubernetes.io/serviceaccount`), or a kubeconfig file (its current context:
server, certificate authority, and a bearer token or a client certificate). Exec and
auth-provider plugins are not supported: they run programs the Gateway should not run.

`store.dsn: kubernetes://` picks in-cluster config; `kubernetes:///path/to/kubeconfig` a file.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from signalgate.common.config import ConfigError, check_url

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class KubeConfig:
    """How to reach one API server. A token file is re-read by the client as it rotates."""

    server: str
    ca_file: str | None = None
    insecure: bool = False
    token: str | None = None
    token_file: Path | None = None
    client_cert: str | None = None
    client_key: str | None = None
    # the namespace of a pod (in-cluster) or of the kubeconfig context, when one is known
    namespace: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        if self.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


def config_from_dsn(dsn: str, key: str = "store.dsn") -> KubeConfig:
    """`kubernetes://` → in-cluster; `kubernetes:///path/to/kubeconfig` → that file. `key`
    is the setting `dsn` came from (`store.dsn` or `kubernetes.config`), named by errors."""
    parts = urlsplit(dsn)
    if parts.scheme != "kubernetes" or parts.netloc:
        raise ConfigError(
            f"config key '{key}': {dsn!r} is not kubernetes:// (in-cluster) or "
            "kubernetes:///absolute/path/to/kubeconfig"
        )
    path = unquote(parts.path)
    if path in ("", "/"):
        return in_cluster_config(key=key)
    return kubeconfig_file(Path(path))


def in_cluster_config(sa_dir: Path = SERVICE_ACCOUNT_DIR, key: str = "store.dsn") -> KubeConfig:
    """The pod's own ServiceAccount. Outside a pod, the error names `key`: the two settings
    are separate (`store.dsn` for the RemediationRequests, `kubernetes.config` for auth and
    scope), so a kubeconfig in one is not used for the other, which stays in-cluster."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token_file = sa_dir / "token"
    if not host or not token_file.is_file():
        other = "kubernetes.config" if key == "store.dsn" else "store.dsn"
        raise ConfigError(
            f"config key '{key}': kubernetes:// is the in-cluster Kubernetes config, and "
            f"KUBERNETES_SERVICE_HOST is not set or {token_file} is missing (not running in a "
            f"pod?); set {key} to kubernetes:///path/to/kubeconfig ({other}'s kubeconfig is "
            "not used for it), or KUBECONFIG with Kubernaut's config file"
        )
    namespace_file = sa_dir / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.is_file() else None
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return loadable(
        KubeConfig(
            server=f"https://{host}:{port}",
            ca_file=str(sa_dir / "ca.crt"),
            token_file=token_file,
            namespace=namespace,
        ),
        "in-cluster Kubernetes config",
    )


def kubeconfig_file(path: Path) -> KubeConfig:
    """The current context of the kubeconfig at `path`."""
    where = f"kubeconfig {str(path)!r}"
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not YAML ({exc})") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{where}: not a kubeconfig")
    context_name = loaded.get("current-context")
    context = _section(_named(loaded, "contexts", context_name, where), "context")
    cluster = _section(_named(loaded, "clusters", context.get("cluster"), where), "cluster")
    user = _section(_named(loaded, "users", context.get("user"), where), "user")
    if "exec" in user or "auth-provider" in user:
        raise ConfigError(
            f"{where}: user {context.get('user')!r} authenticates through a plugin, which "
            "signalgate does not run; use a token or a client certificate"
        )
    base = path.parent
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"{where}: cluster {context.get('cluster')!r} has no server")
    try:
        check_url(str(server), ("https", "http"), "https://api.example:6443")
    except ValueError as exc:
        raise ConfigError(f"{where}: server {str(server)!r} {exc}") from None
    token_file = user.get("tokenFile")
    config = KubeConfig(
        server=str(server).rstrip("/"),
        ca_file=_file_or_data(cluster, "certificate-authority", base, where),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        token=None if user.get("token") is None else str(user["token"]),
        token_file=_existing(base / str(token_file), "tokenFile", where) if token_file else None,
        client_cert=_file_or_data(user, "client-certificate", base, where),
        client_key=_file_or_data(user, "client-key", base, where),
        namespace=context.get("namespace"),
    )
    return loadable(config, where)


def loadable(config: KubeConfig, where: str) -> KubeConfig:
    """`config` once its certificate authority and client certificate have been loaded: a bad
    PEM file is a start-up error naming the kubeconfig, not a TLS failure at the first call."""
    try:
        config.ssl_context()
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(
            f"{where}: its certificate authority or client certificate and key cannot be "
            f"loaded ({exc})"
        ) from None
    return config


def _section(entry: dict[str, Any], key: str) -> dict[str, Any]:
    value = entry.get(key)
    return value if isinstance(value, dict) else {}


def _named(config: dict[str, Any], section: str, name: Any, where: str) -> dict[str, Any]:
    entries = config.get(section)
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    raise ConfigError(f"{where}: no {section[:-1]} named {name!r} (current-context)")


def _existing(path: Path, key: str, where: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"{where}: {key} {str(path)!r} is not a readable file")
    return path


def _file_or_data(section: dict[str, Any], key: str, base: Path, where: str) -> str | None:
    """A path for `key`, or `key-data` written to a private temporary file (removed when
    the process exits)."""
    if section.get(key):
        return str(_existing(base / str(section[key]), key, where))
    data = section.get(f"{key}-data")
    if not data:
        return None
    try:
        decoded = base64.b64decode(str(data), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: {key}-data is not base64") from None
    fd, name = tempfile.mkstemp(prefix="signalgate-kube-", suffix=".pem")
    with os.fdopen(fd, "wb") as handle:
        handle.write(decoded)
    atexit.register(_remove, name)
    return name


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
