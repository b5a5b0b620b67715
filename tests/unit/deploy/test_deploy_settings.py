"""The settings the manifests give the services load with the services' own loaders, and the
ports, probes, paths and environment variable names agree with them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from signalgate.common.auth import StaticTokenAuth
from signalgate.common.config import load_settings, split_listen
from signalgate.datastorage import settings as datastorage_settings
from signalgate.datastorage.service import SCOPES as DATASTORAGE_SCOPES
from signalgate.datastorage.settings import DataStorageSettings
from signalgate.gateway.settings import SCOPES as GATEWAY_SCOPES
from signalgate.gateway.settings import SHORTHANDS, GatewaySettings
from tests.unit.deploy.deploy_objects import (
    BASE,
    Manifest,
    container,
    find,
    generated_config,
    pod_spec,
    port_number,
)


@dataclass(frozen=True)
class Service:
    name: str  # Deployment, Service and container name: signalgate-<name>, <name>
    config_map: str
    model: type[BaseModel]
    load: Callable[[Path | None, dict[str, str]], Any]


SERVICES = (
    Service(
        "gateway",
        "signalgate-gateway-config",
        GatewaySettings,
        lambda path, env: load_settings(GatewaySettings, path, env, SHORTHANDS),
    ),
    Service(
        "datastorage",
        "signalgate-datastorage-config",
        DataStorageSettings,
        lambda path, env: datastorage_settings.load(path, env),
    ),
)
# a value each environment variable could plausibly hold, by the setting it names
PLAUSIBLE = {
    "store.dsn": "postgresql://signalgate:secret@db.example:5432/signalgate",
    "dlq.redisUrl": "redis://:secret@redis.example:6379/0",
}


def config_path(service: Service, tmp_path: Path) -> Path:
    """The generated ConfigMap's file, written where the pod sees it, under tmp_path."""
    key, source = generated_config(BASE, service.config_map)
    target = tmp_path / key
    shutil.copyfile(source, target)
    return target


def deployment(base: list[Manifest], service: Service) -> Manifest:
    return find(base, "Deployment", f"signalgate-{service.name}")


def settings_of(base: list[Manifest], service: Service, tmp_path: Path) -> Any:
    return service.load(config_path(service, tmp_path), {})


def dotted_key(model: type[BaseModel], env_name: str) -> str:
    """`SIGNALGATE_STORE__DSN` → `store.dsn`, walking the model the way the contract says
    (case-insensitive, underscores within a key ignored); fails on a name matching nothing."""
    assert env_name.startswith("SIGNALGATE_"), env_name
    current: type[BaseModel] | None = model
    keys: list[str] = []
    for segment in env_name.removeprefix("SIGNALGATE_").split("__"):
        assert current is not None, f"{env_name}: {'.'.join(keys)} has no sub-keys"
        wanted = segment.lower().replace("_", "")
        fields = {
            (info.alias or n).lower(): (info.alias or n, info)
            for n, info in current.model_fields.items()
        }
        assert wanted in fields, f"{env_name}: no setting {segment!r} under {keys or 'top level'}"
        alias, info = fields[wanted]
        keys.append(alias)
        annotation = info.annotation
        current = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    return ".".join(keys)


def resolved(settings: Any, dotted: str) -> Any:
    value = settings
    for key in dotted.split("."):
        name = next(n for n, info in type(value).model_fields.items() if (info.alias or n) == key)
        value = getattr(value, name)
    return value


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_the_config_map_settings_load_with_the_service_loader(
    base: list[Manifest], service: Service, tmp_path: Path
) -> None:
    settings = settings_of(base, service, tmp_path)
    assert isinstance(settings, service.model)
    # the file the pod is told to read is the one the ConfigMap mounts
    c = container(deployment(base, service), service.name)
    config = PurePosixPath(c["command"][c["command"].index("--config") + 1])
    key, _ = generated_config(BASE, service.config_map)
    assert config.name == key
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(deployment(base, service))["volumes"]}
    mount = next(m for m in mounts.values() if PurePosixPath(m["mountPath"]) == config.parent)
    assert volumes[mount["name"]]["configMap"]["name"] == service.config_map
    assert c["command"][:2] == [f"signalgate-{service.name}", "serve"]


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_environment_variables_name_real_settings(
    base: list[Manifest], service: Service, tmp_path: Path
) -> None:
    c = container(deployment(base, service), service.name)
    names = [e["name"] for e in c["env"]]
    assert names, "the Deployment passes no settings through the environment"
    environ = {}
    expected = {}
    for name in names:
        key = dotted_key(service.model, name)
        environ[name] = expected[key] = PLAUSIBLE[key]
    settings = service.load(config_path(service, tmp_path), environ)
    for key, value in expected.items():
        assert resolved(settings, key) == value, key
    # without them, the secrets are not in the ConfigMap
    assert resolved(settings_of(base, service, tmp_path), "store.dsn") in (None, "")


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_ports_probes_and_services_match_the_listen_settings(
    base: list[Manifest], service: Service, tmp_path: Path
) -> None:
    settings = settings_of(base, service, tmp_path)
    api_host, api_port = split_listen(settings.server.listen)
    ops_host, ops_port = split_listen(settings.server.ops_listen)
    # loopback would be unreachable from the kubelet and from other pods
    assert api_host == ops_host == "0.0.0.0"
    c = container(deployment(base, service), service.name)
    assert port_number(c, "api") == api_port
    assert port_number(c, "ops") == ops_port
    assert port_number(c, c["livenessProbe"]["httpGet"]["port"]) == ops_port
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert port_number(c, c["readinessProbe"]["httpGet"]["port"]) == ops_port
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    if "startupProbe" in c:
        assert port_number(c, c["startupProbe"]["httpGet"]["port"]) == ops_port
    svc = find(base, "Service", f"signalgate-{service.name}")
    ports = {p["name"]: p for p in svc.obj["spec"]["ports"]}
    assert port_number(c, ports["api"]["targetPort"]) == api_port == ports["api"]["port"]
    assert port_number(c, ports["ops"]["targetPort"]) == ops_port == ports["ops"]["port"]


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_files_named_in_settings_are_mounted(
    base: list[Manifest], service: Service, tmp_path: Path
) -> None:
    settings = settings_of(base, service, tmp_path)
    manifest = deployment(base, service)
    c = container(manifest, service.name)
    volumes = {v["name"]: v for v in pod_spec(manifest)["volumes"]}
    mounts = {PurePosixPath(m["mountPath"]): volumes[m["name"]] for m in c["volumeMounts"]}

    def volume_holding(path: Path) -> tuple[dict[str, Any], PurePosixPath]:
        posix = PurePosixPath(path)
        for mount_path, volume in mounts.items():
            if posix.is_relative_to(mount_path):
                return volume, posix.relative_to(mount_path)
        raise AssertionError(f"{path} is on no mounted volume")

    data, _ = volume_holding(settings.data_dir)
    assert "emptyDir" in data  # writable under readOnlyRootFilesystem
    files = [settings.auth.tokens_file]
    if service.name == "gateway":
        files.append(settings.datastorage.token_file)
        assert settings.datastorage.url == "http://signalgate-datastorage.kubernaut-system.svc:8090"
        assert settings.store.pool_size >= 1
    else:
        assert settings.store.auto_migrate is False  # the init container's work
    for path in files:
        volume, inside = volume_holding(path)
        assert str(inside) in {item["path"] for item in volume["secret"]["items"]}, path


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_the_pod_is_given_time_to_drain(
    base: list[Manifest], service: Service, tmp_path: Path
) -> None:
    settings = settings_of(base, service, tmp_path)
    grace = pod_spec(deployment(base, service))["terminationGracePeriodSeconds"]
    # unready but serving, in-flight requests, then (the Gateway) up to 10 s of audit flush
    assert settings.server.shutdown_delay > 0  # the endpoints drop the pod before it closes
    assert grace >= settings.server.shutdown_delay + settings.server.shutdown_grace + 10


def test_the_kind_secrets_hold_settings_the_services_accept(up: ModuleType, tmp_path: Path) -> None:
    """What up.py writes loads into both services and their token files parse."""
    items = {
        item["metadata"]["name"]: item["stringData"]
        for item in up.development_secrets("admin-token", "audit-token", "pw")["items"]
    }
    gateway, datastorage = items["signalgate-gateway"], items["signalgate-datastorage"]
    gw = load_settings(
        GatewaySettings, None, {"SIGNALGATE_STORE__DSN": gateway["store-dsn"]}, SHORTHANDS
    )
    assert gw.store_dsn.startswith("postgresql://signalgate:pw@signalgate-postgres.")
    ds = datastorage_settings.load(
        None,
        {
            "SIGNALGATE_STORE__DSN": datastorage["store-dsn"],
            "SIGNALGATE_DLQ__REDIS_URL": datastorage["redis-url"],
        },
    )
    assert ds.dlq.redis_url.startswith("redis://signalgate-redis.")
    for name, text, scopes, token, scope in (
        ("gateway", gateway["tokens"], GATEWAY_SCOPES, "admin-token", "signals:write"),
        ("datastorage", datastorage["tokens"], DATASTORAGE_SCOPES, "admin-token", "audit:read"),
        (
            "datastorage",
            datastorage["tokens"],
            DATASTORAGE_SCOPES,
            "audit-token",
            "audit:write:gateway",
        ),
    ):
        path = tmp_path / f"{name}.tokens"
        path.write_text(text)
        principal = StaticTokenAuth.from_file(path, scopes).authenticate(f"Bearer {token}")
        assert scope in principal.scopes
    assert gateway["datastorage-token"] == "audit-token"
