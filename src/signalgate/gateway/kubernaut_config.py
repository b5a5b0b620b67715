"""Kubernaut's own Gateway configuration file, read as signalgate settings.

Kubernaut's Helm chart renders the Gateway's `config.yaml` in Kubernaut's layout
(`server.listenAddr`, `datastorage.buffer.batchSize`, `processing.*`, …) and starts the
container with `--config=/etc/gateway/config.yaml`. So that swapping the image is enough,
the Gateway recognises that layout and translates it, key by key, into its own settings;
everything after that (the environment's `SIGNALGATE_…` overrides, validation, the error
lines) is the same as for a signalgate file.

What the translation decides, in one place (docs/kubernetes.md has the table):

- each Kubernaut key signalgate has a meaning for becomes that setting (`readTimeout` bounds
  both the request head and the body, as Go's `ReadTimeout` does; `k8sRequestTimeout`, the
  deadline of a request's work that ends in 504, is `server.processingTimeout`), its value
  read as Kubernaut reads it (Go durations such as `1m30s`, zap's level `warn`);
- TLS is Kubernaut's conditional TLS: HTTPS when `tls.crt` and `tls.key` are in the
  certificate directory, plain HTTP otherwise;
- the file implies Kubernetes mode, as Kubernaut's Gateway has no other: RRs are custom
  resources in the pod's namespace (`POD_NAMESPACE`), callers present ServiceAccount tokens,
  scope comes from the cluster, DataStorage gets the pod's own token. The API server is
  found as controller-runtime finds it: `KUBECONFIG` when set, else the pod's ServiceAccount;
- Kubernaut keys whose behaviour signalgate has fixed or does not have (`writeTimeout`,
  `processing.retry`, `middleware.trustedProxyCIDRs`, `telemetry`, …) are accepted and named
  in one start-up warning, as are keys neither knows (Kubernaut's own loader ignores unknown
  keys too, so a newer chart still starts); `fleet.enabled: true` (multi-cluster) is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from signalgate.common.config import ConfigError, TranslatedFile
from signalgate.gateway.settings import GatewaySettings
from signalgate.kube.config import SERVICE_ACCOUNT_DIR

# Top-level sections only Kubernaut's layout has, and server and datastorage keys only it
# has: any of them marks a file as Kubernaut's.
KUBERNAUT_SECTIONS = frozenset({"middleware", "processing", "telemetry", "cors", "fleet"})
KUBERNAUT_SERVER_KEYS = frozenset(
    {
        "listenAddr",
        "healthAddr",
        "metricsAddr",
        "readTimeout",
        "writeTimeout",
        "idleTimeout",
        "k8sRequestTimeout",
        "tls",
    }
)
KUBERNAUT_DATASTORAGE_KEYS = frozenset({"buffer", "healthUrl"})
# Top-level sections both layouts have (Kubernaut's keys in them are translated) ...
SHARED_SECTIONS = frozenset({"server", "datastorage", "logging"})
# ... and every other top-level setting, only signalgate's layout has: a file with both is
# refused. Read from the settings model, so a section added there is refused here too (a
# list kept by hand here would read it as an unknown key, warned about and ignored).
SIGNALGATE_SECTIONS = (
    frozenset(field.alias or name for name, field in GatewaySettings.model_fields.items())
    - SHARED_SECTIONS
)

# Where Kubernaut's chart mounts a service's own certificate and key (`tls.crt`, `tls.key`).
KUBERNAUT_CERT_DIR = Path("/etc/tls")

# Kubernaut's `maxConcurrentRequests: 0` means no limit; signalgate's largest bound stands
# in for it.
UNLIMITED_REQUESTS = 100_000


def _same(value: Any) -> Any:
    return value


def _list(value: Any) -> Any:
    """A list key the chart renders with nothing under it (`allowedOrigins:` then an empty
    `range`), which YAML reads as null: an empty list, as Kubernaut's loader takes it (it
    was exit 2, a crash loop, for an operator who emptied the list)."""
    return [] if value is None else value


def _request_limit(value: Any) -> Any:
    return UNLIMITED_REQUESTS if value == 0 else value


_GO_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$", re.ASCII)
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", re.ASCII)
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _go_duration(value: Any) -> Any:
    """Go's duration syntax (`1m30s`, `1h0m0s`, `500us`) as seconds; anything else as it is,
    for signalgate's own parser to accept (`30s`) or refuse with its message."""
    text = str(value).strip()
    if not _GO_DURATION.match(text):
        return value
    return sum(float(n) * _GO_UNITS[unit] for n, unit in _GO_DURATION_PART.findall(text))


def _log_level(value: Any) -> Any:
    """Kubernaut's (zap's) level names: `warn` is signalgate's `warning`, and the levels past
    `error` log at `error`."""
    level = str(value).lower()
    if level == "warn":
        return "warning"
    return "error" if level in ("dpanic", "panic", "fatal") else value


# Kubernaut's durations for which Go reads 0 as "no limit" (`http.Server.ReadTimeout`, a
# client's `Timeout`): signalgate keeps its own bound there (it refuses a zero, which would
# fail every request), and says so
NO_LIMIT_WHEN_ZERO = frozenset(
    {"server.readTimeout", "server.k8sRequestTimeout", "datastorage.timeout"}
)

# Kubernaut key → the signalgate keys it sets, and how its value becomes theirs.
TRANSLATED: dict[str, tuple[tuple[str, ...], Callable[[Any], Any]]] = {
    "server.listenAddr": (("server.listen",), _same),
    "server.healthAddr": (("server.opsListen",), _same),
    "server.metricsAddr": (("server.metricsListen",), _same),
    "server.maxConcurrentRequests": (("server.maxConcurrentRequests",), _request_limit),
    "server.readTimeout": (
        ("server.headerReadTimeout", "server.bodyReadTimeout"),
        _go_duration,
    ),
    "server.k8sRequestTimeout": (("server.processingTimeout",), _go_duration),
    "cors.allowedOrigins": (("server.corsAllowedOrigins",), _list),
    "datastorage.url": (("datastorage.url",), _same),
    "datastorage.timeout": (("datastorage.timeout",), _go_duration),
    "datastorage.buffer.bufferSize": (("datastorage.bufferSize",), _same),
    "datastorage.buffer.batchSize": (("datastorage.batchSize",), _same),
    "datastorage.buffer.flushInterval": (("datastorage.flushInterval",), _go_duration),
    "logging.level": (("logging.level",), _log_level),
}

# Kubernaut keys whose effect depends on whether the files they name exist
READ_WITH_THEIR_FILES = frozenset({"server.tls.certDir", "server.tls.caFile"})

# Kubernaut keys accepted without effect, each for a reason docs/kubernetes.md gives. A
# trailing dot covers a whole section.
NOT_APPLIED = (
    "server.writeTimeout",  # a fixed bound: an answer not read for 30 s is dropped
    "server.idleTimeout",  # a fixed bound: 5 s between requests on a kept-alive connection
    "cors.allowedMethods",  # fixed: GET, POST, PATCH, OPTIONS
    "cors.allowCredentials",  # never: bearer tokens are sent explicitly
    "cors.maxAge",  # fixed: 600 s
    "middleware.trustedProxyCIDRs",  # no client address is read, so no proxy is trusted
    "datastorage.healthUrl",  # DataStorage's reachability is seen from the deliveries
    "datastorage.buffer.maxRetries",  # the journal retries until DataStorage has the events
    "processing.deduplication.cooldownPeriod",  # the RR's nextAllowedExecution decides
    "processing.retry.",  # conflicts retried in process; an API server away → 503 + Retry-After
    "telemetry.",  # no tracing
    "fleet.",  # one cluster (fleet.enabled: true is refused)
)


def is_kubernaut_layout(data: Mapping[str, Any]) -> bool:
    """True for a file in Kubernaut's Gateway layout: a section, or a server or datastorage
    key, that only Kubernaut's has."""
    server, delivery = data.get("server"), data.get("datastorage")
    return (
        bool(KUBERNAUT_SECTIONS & data.keys())
        or (isinstance(server, Mapping) and bool(KUBERNAUT_SERVER_KEYS & server.keys()))
        or (isinstance(delivery, Mapping) and bool(KUBERNAUT_DATASTORAGE_KEYS & delivery.keys()))
    )


def read_kubernaut_layout(
    data: dict[str, Any], path: Path, environ: Mapping[str, str]
) -> TranslatedFile | None:
    """The file at `path` as signalgate settings when it is in Kubernaut's Gateway layout;
    None when it is signalgate's own (a `FileTranslator`, see `common/config.py`)."""
    return translate(data, path, environ) if is_kubernaut_layout(data) else None


def translate(data: Mapping[str, Any], path: Path, environ: Mapping[str, str]) -> TranslatedFile:
    """Kubernaut's Gateway file at `path` as signalgate settings (see the module's doc)."""
    where = f"config file '{path}'"
    mixed = sorted(SIGNALGATE_SECTIONS & data.keys())
    if mixed:
        raise ConfigError(
            f"{where}: is in Kubernaut's Gateway layout but also has signalgate's "
            f"{', '.join(repr(key) for key in mixed)}; use one layout (signalgate settings "
            "can be added to Kubernaut's file as SIGNALGATE_… environment variables)"
        )
    fleet = data.get("fleet")
    if isinstance(fleet, Mapping) and fleet.get("enabled") is True:
        raise ConfigError(
            f"config key 'fleet.enabled' (from {where}, Kubernaut's layout): true is not "
            "supported: the Gateway serves the cluster it runs in"
        )
    result = TranslatedFile()
    ignored: list[str] = []
    unknown: list[str] = []
    unbounded: list[str] = []
    for key, value in _leaves(data):
        if key in NO_LIMIT_WHEN_ZERO and _go_duration(value) == 0:
            unbounded.append(key)
        elif key in TRANSLATED:
            targets, convert = TRANSLATED[key]
            for target in targets:
                result.set(target, convert(value), f"{where}, Kubernaut's {key}")
        elif key in READ_WITH_THEIR_FILES:
            pass  # `_conditional_tls` reads them, with the files they name
        elif (item := _not_applied(key)) is not None:
            if item not in ignored:
                ignored.append(item)
        else:
            unknown.append(key)
    _imply_kubernetes_mode(result, environ)
    _conditional_tls(result, data, where, environ)
    message = f"{where} is in Kubernaut's Gateway layout: read as signalgate settings"
    if ignored:
        message += f"; accepted, without effect here: {', '.join(ignored)}"
    if unknown:
        message += f"; not known, ignored: {', '.join(unknown)}"
    if unbounded:
        message += (
            f"; 0 (no limit, in Kubernaut) not taken, signalgate's bound kept: "
            f"{', '.join(unbounded)}"
        )
    result.notes.append(message)
    return result


def _imply_kubernetes_mode(result: TranslatedFile, environ: Mapping[str, str]) -> None:
    """What Kubernaut's Gateway always is: RRs in the cluster, ServiceAccount tokens."""
    origin = "Kubernaut's layout (Kubernetes mode)"
    kubeconfig = environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    cluster = f"kubernetes://{Path(kubeconfig).absolute()}" if kubeconfig else "kubernetes://"
    result.set("store.dsn", cluster, origin)
    result.set("kubernetes.config", cluster, origin)
    result.set("auth.mode", "kubernetes", origin)
    namespace = environ.get("POD_NAMESPACE")
    if namespace:
        result.set("controllerNamespace", namespace, "environment variable POD_NAMESPACE")
    if "url" in result.data.get("datastorage", {}):
        result.set("datastorage.tokenFile", str(SERVICE_ACCOUNT_DIR / "token"), origin)


def _conditional_tls(
    result: TranslatedFile, data: Mapping[str, Any], where: str, environ: Mapping[str, str]
) -> None:
    """Kubernaut's TLS is conditional: HTTPS on the API listener when `tls.crt` and `tls.key`
    are in the certificate directory (`server.tls.certDir`, else /etc/tls, where its chart
    mounts them), plain HTTP otherwise; DataStorage's certificate is checked against
    `server.tls.caFile` or the `TLS_CA_FILE` its chart sets, when that file is there."""
    server = data.get("server")
    tls = server.get("tls") if isinstance(server, Mapping) else None
    tls = tls if isinstance(tls, Mapping) else {}
    if tls.get("certDir"):
        cert_dir, origin = Path(str(tls["certDir"])), f"{where}, Kubernaut's server.tls.certDir"
    else:
        cert_dir, origin = (
            KUBERNAUT_CERT_DIR,
            f"Kubernaut's certificate directory {KUBERNAUT_CERT_DIR}",
        )
    cert, key = cert_dir / "tls.crt", cert_dir / "tls.key"
    if cert.is_file() and key.is_file():
        result.set("server.tlsCertFile", str(cert), origin)
        result.set("server.tlsKeyFile", str(key), origin)
    if tls.get("caFile"):
        ca_file, ca_origin = str(tls["caFile"]), f"{where}, Kubernaut's server.tls.caFile"
    else:
        ca_file, ca_origin = environ.get("TLS_CA_FILE", ""), "environment variable TLS_CA_FILE"
    url = str(result.data.get("datastorage", {}).get("url") or "")
    if ca_file and url.startswith("https://") and Path(ca_file).is_file():
        result.set("datastorage.caFile", ca_file, ca_origin)


def _not_applied(key: str) -> str | None:
    """The `NOT_APPLIED` entry covering `key` (a section as `section.*`), or None."""
    for item in NOT_APPLIED:
        if key == item:
            return item
        if item.endswith(".") and key.startswith(item):
            return f"{item}*"
    return None


def _leaves(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every non-mapping value; lists are values."""
    found: list[tuple[str, Any]] = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found.extend(_leaves(value, dotted + "."))  # an empty section sets nothing
        else:
            found.append((dotted, value))
    return found
