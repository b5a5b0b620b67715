"""Kubernaut's Gateway `config.yaml` read as signalgate settings (gateway/kubernaut_config.py).

The file is the chart's own rendering (tests/fixtures/kubernaut/gateway-config.yaml); the
settings come out of the same `load_settings` the Gateway's command line uses.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import certifi
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from signalgate.common.config import ConfigError, Resolved, load_settings, resolve_settings
from signalgate.gateway.kubernaut_config import is_kubernaut_layout, read_kubernaut_layout
from signalgate.gateway.settings import GatewaySettings

REPO = Path(__file__).resolve().parents[3]
KUBERNAUT_CONFIG = REPO / "tests" / "fixtures" / "kubernaut" / "gateway-config.yaml"


def resolve(path: Path, **environ: str) -> Resolved[GatewaySettings]:
    return resolve_settings(
        GatewaySettings, path, environ=environ, translator=read_kubernaut_layout
    )


def load(path: Path, **environ: str) -> GatewaySettings:
    return resolve(path, **environ).settings


def written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_the_charts_file_becomes_the_gateway_it_describes() -> None:
    resolved = resolve(KUBERNAUT_CONFIG, POD_NAMESPACE="kubernaut-system")
    settings = resolved.settings
    server = settings.server
    assert (server.listen, server.ops_listen, server.metrics_listen) == (
        ":8080",
        ":8081",
        ":9090",
    )
    assert server.max_concurrent_requests == 100
    assert server.header_read_timeout == server.body_read_timeout == 30.0
    assert server.processing_timeout == 15.0  # k8sRequestTimeout: the deadline that ends in 504
    assert server.cors_allowed_origins == ["https://no-browser-clients.invalid"]
    assert settings.logging.level == "info"
    delivery = settings.datastorage
    assert delivery.url == "https://data-storage-service.kubernaut-system.svc.cluster.local:8080"
    assert (delivery.timeout, delivery.buffer_size, delivery.batch_size) == (10.0, 10_000, 100)
    assert delivery.flush_interval == 1.0
    assert delivery.token_file == Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    # Kubernetes mode, as Kubernaut's Gateway always is
    assert settings.store_dsn == "kubernetes://" == settings.kubernetes.config
    assert settings.auth.mode == "kubernetes"
    assert settings.scope_source == "cluster"
    assert settings.controller_namespace == "kubernaut-system"
    (note,) = resolved.notes
    assert "is in Kubernaut's Gateway layout" in note
    assert "processing.retry.*" in note and "server.writeTimeout" in note
    assert "not known" not in note


def test_the_pod_namespace_and_kubeconfig_are_where_controller_runtime_finds_them(
    tmp_path: Path,
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    settings = load(
        KUBERNAUT_CONFIG,
        POD_NAMESPACE="remediation",
        KUBECONFIG=f"{kubeconfig}:{tmp_path / 'second'}",
    )
    assert settings.controller_namespace == "remediation"
    assert settings.store_dsn == f"kubernetes://{kubeconfig}" == settings.kubernetes.config


def test_the_environment_still_overrides_the_translated_file(tmp_path: Path) -> None:
    settings = load(
        KUBERNAUT_CONFIG,
        SIGNALGATE_STORE__DSN="sqlite:///tmp/rr.db",
        SIGNALGATE_AUTH__MODE="static",
        SIGNALGATE_SERVER__LISTEN="127.0.0.1:18080",
    )
    assert settings.store_dsn == "sqlite:///tmp/rr.db"
    assert settings.auth.mode == "static"
    assert settings.server.listen == "127.0.0.1:18080"


def test_no_limit_is_the_largest_bound(tmp_path: Path) -> None:
    path = written(tmp_path, "server:\n  listenAddr: ':8080'\n  maxConcurrentRequests: 0\n")
    assert load(path).server.max_concurrent_requests == 100_000


def test_a_zero_timeout_is_no_limit_in_kubernaut_and_keeps_signalgates_bound(
    tmp_path: Path,
) -> None:
    """Go reads a zero `readTimeout` (and a client's zero timeout) as no limit; translated as
    zero, signalgate refused the file (exit 2), where Kubernaut's Gateway starts."""
    path = written(
        tmp_path,
        "server:\n  listenAddr: ':8080'\n  readTimeout: 0s\n  k8sRequestTimeout: 0\n"
        "datastorage:\n  url: http://ds:8080\n  timeout: 0s\n",
    )
    resolved = resolve(path)
    settings = resolved.settings
    defaults = GatewaySettings()
    assert settings.server.body_read_timeout == defaults.server.body_read_timeout
    assert settings.server.processing_timeout == defaults.server.processing_timeout
    assert settings.datastorage.timeout == defaults.datastorage.timeout
    (note,) = resolved.notes
    assert note.endswith(
        "0 (no limit, in Kubernaut) not taken, signalgate's bound kept: server.readTimeout, "
        "server.k8sRequestTimeout, datastorage.timeout"
    )


def test_an_origin_list_the_chart_renders_empty_is_no_origin(tmp_path: Path) -> None:
    """`gateway.config.cors.allowedOrigins: []` renders `allowedOrigins:` with nothing under
    it, which YAML reads as null: exit 2 and a crash loop (an outside check)."""
    path = written(tmp_path, "server:\n  listenAddr: ':8080'\ncors:\n  allowedOrigins:\n")
    assert load(path).server.cors_allowed_origins == []


def test_a_bad_value_names_signalgates_key_and_kubernauts(tmp_path: Path) -> None:
    path = written(tmp_path, "server:\n  listenAddr: ':8080'\n  readTimeout: soon\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == (
        f"config key 'server.bodyReadTimeout' (from config file '{path}', Kubernaut's "
        "server.readTimeout): 'soon' is not a duration (e.g. 250ms, 1s, 5m, 1h)"
    )


def test_layouts_are_not_mixed_and_fleets_are_refused(tmp_path: Path) -> None:
    mixed = written(tmp_path, "server:\n  listenAddr: ':8080'\nstore:\n  dsn: sqlite:///x.db\n")
    with pytest.raises(ConfigError, match="also has signalgate's 'store'"):
        load(mixed)
    fleet = written(tmp_path, "fleet:\n  enabled: true\n  backend: acm\n")
    with pytest.raises(ConfigError, match=r"^config key 'fleet\.enabled'"):
        load(fleet)
    assert load(written(tmp_path, "fleet:\n  enabled: false\n")).auth.mode == "kubernetes"


@pytest.mark.parametrize(
    "section",
    sorted(
        set(GatewaySettings.model_json_schema(by_alias=True)["properties"])
        - {"server", "datastorage", "logging"}
    ),
)
def test_every_section_only_signalgate_has_is_refused_in_kubernauts_layout(
    tmp_path: Path, section: str
) -> None:
    """Each top-level setting of the model, not a list kept beside it: a new section left
    out of one was read in Kubernaut's layout as an unknown key, warned about and ignored."""
    mixed = written(tmp_path, f"server:\n  listenAddr: ':8080'\n{section}: {{}}\n")
    with pytest.raises(ConfigError, match=f"also has signalgate's '{section}'"):
        load(mixed)


def test_keys_neither_knows_are_named_and_ignored(tmp_path: Path) -> None:
    path = written(tmp_path, "server:\n  listenAddr: ':8080'\n  shinyNewKnob: 3\nplugins: {a: 1}\n")
    resolved = resolve(path)
    assert resolved.settings.server.listen == ":8080"
    (note,) = resolved.notes
    assert note.endswith("not known, ignored: server.shinyNewKnob, plugins.a")


def test_tls_is_on_only_when_the_certificate_and_key_are_there(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    text = f"server:\n  listenAddr: ':8080'\n  tls:\n    certDir: {certs}\n"
    path = written(tmp_path, text)
    assert load(path).server.tls_cert_file is None  # no files: plain HTTP, as Kubernaut
    (certs / "tls.crt").write_text("cert")
    (certs / "tls.key").write_text("key")
    settings = load(path)
    assert settings.server.tls_cert_file == certs / "tls.crt"
    assert settings.server.tls_key_file == certs / "tls.key"


def test_datastorages_ca_is_the_charts_tls_ca_file_when_it_is_there(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    https = load(KUBERNAUT_CONFIG, TLS_CA_FILE=str(ca))
    assert https.datastorage.ca_file is None  # the chart sets the variable; no file, no CA
    ca.write_bytes(Path(certifi.where()).read_bytes())  # a real PEM bundle: it is loaded
    assert load(KUBERNAUT_CONFIG, TLS_CA_FILE=str(ca)).datastorage.ca_file == ca
    plain = written(tmp_path, "datastorage:\n  url: http://ds:8080\n  buffer: {batchSize: 50}\n")
    assert load(plain, TLS_CA_FILE=str(ca)).datastorage.ca_file is None


@pytest.mark.parametrize(
    "path",
    [
        REPO / "deploy" / "kubernaut" / "config" / "gateway.yaml",
        *sorted((REPO / "deploy" / "kubernetes" / "config").glob("gateway*.yaml")),
    ],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_signalgates_own_files_are_read_as_they_are(path: Path) -> None:
    assert not is_kubernaut_layout(yaml.safe_load(path.read_text()))
    assert load(path) == load_settings(GatewaySettings, path, environ={})


def test_values_are_read_as_kubernaut_reads_them(tmp_path: Path) -> None:
    """Go's durations (`1m30s`) and zap's level names (`warn`), which signalgate's own
    parsers do not take."""
    path = written(
        tmp_path,
        "server:\n  listenAddr: ':8080'\n  readTimeout: 1m30s\n  k8sRequestTimeout: 1h0m0.5s\n"
        "datastorage:\n  url: http://ds:8080\n  timeout: 2.5s\n"
        "  buffer: {flushInterval: 500ms}\nlogging:\n  level: warn\n",
    )
    settings = load(path)
    assert settings.server.header_read_timeout == settings.server.body_read_timeout == 90.0
    assert settings.server.processing_timeout == 3600.5
    assert (settings.datastorage.timeout, settings.datastorage.flush_interval) == (2.5, 0.5)
    assert settings.logging.level == "warning"
    fatal = written(tmp_path, "server:\n  listenAddr: ':8080'\nlogging:\n  level: FATAL\n")
    assert load(fatal).logging.level == "error"


# Kubernaut's keys and a few others, at their places and out of them, with values of any
# YAML type: whatever the file holds, the result is settings or one ConfigError line.
_KEYS = st.sampled_from(
    [
        "server",
        "listenAddr",
        "healthAddr",
        "metricsAddr",
        "readTimeout",
        "k8sRequestTimeout",
        "maxConcurrentRequests",
        "tls",
        "certDir",
        "caFile",
        "datastorage",
        "url",
        "buffer",
        "batchSize",
        "flushInterval",
        "cors",
        "allowedOrigins",
        "processing",
        "fleet",
        "enabled",
        "logging",
        "level",
        "store",
        "telemetry",
        "x",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from([":8080", "1m30s", "30s", "warn", "0", "https://ds:8080", "127.0.0.1:1"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(document=st.dictionaries(_KEYS, _VALUES, max_size=5))
def test_any_file_in_kubernauts_layout_gives_settings_or_one_error_line(
    document: dict[str, object],
) -> None:
    document.setdefault("processing", {})  # always Kubernaut's layout
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.yaml"
        path.write_text(yaml.safe_dump(document))
        try:
            settings_ = load_settings(
                GatewaySettings, path, environ={}, translator=read_kubernaut_layout
            )
        except ConfigError as exc:
            assert "\n" not in str(exc)
        else:
            assert settings_.auth.mode == "kubernetes"
