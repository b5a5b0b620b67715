"""Settings both services must refuse at start (exit 2, one line naming the key), and
`check-config` with them: what a user who follows the docs literally can write by mistake."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from e2ecov.recipes import free_port
from signalgate.common.config import ConfigError

SERVICES = ("signalgate.gateway.cli", "signalgate.datastorage.cli")


def run(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """The command's outcome; one that has not ended within `timeout` (a `serve` that was
    not refused) is killed and fails the test."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE_")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("module", SERVICES)
def test_a_key_given_twice_in_the_file_is_refused_naming_it_and_both_lines(
    module: str, tmp_path: Path
) -> None:
    config = tmp_path / "dup.yaml"
    config.write_text(
        "server:\n"
        "  listen: 127.0.0.1:21100\n"
        "logging:\n"
        "  level: info\n"
        "server:\n"
        "  opsListen: 127.0.0.1:21101\n"
    )
    done = run(module, "check-config", str(config))
    assert done.returncode == 2, done.stdout
    assert done.stderr.strip().splitlines() == [
        f"error: config key 'server' (config file '{config}'): given twice, on line 1 and "
        "line 5; keep one (YAML would silently drop the first)"
    ]
    config.write_text("logging:\n  level: info\n  format: json\n  level: debug\n")
    nested = run(module, "check-config", str(config))
    assert nested.returncode == 2, nested.stdout
    assert "config key 'logging.level'" in nested.stderr and "line 2 and line 4" in nested.stderr


@pytest.mark.parametrize(
    ("module", "env", "keys"),
    [
        (
            "signalgate.gateway.cli",
            {
                "SIGNALGATE_SERVER__LISTEN": "127.0.0.1:{p}",
                "SIGNALGATE_SERVER__OPSLISTEN": "127.0.0.1:{p}",
            },
            ("server.listen", "server.opsListen"),
        ),
        (
            "signalgate.gateway.cli",
            {
                "SIGNALGATE_SERVER__LISTEN": "127.0.0.1:0",
                "SIGNALGATE_SERVER__OPSLISTEN": "127.0.0.1:{p}",
                "SIGNALGATE_SERVER__METRICSLISTEN": "127.0.0.1:{p}",
            },
            ("server.opsListen", "server.metricsListen"),
        ),
        (
            "signalgate.gateway.cli",
            {
                "SIGNALGATE_SERVER__LISTEN": "0.0.0.0:{p}",
                "SIGNALGATE_SERVER__OPSLISTEN": "127.0.0.1:{p}",
            },
            ("server.listen", "server.opsListen"),
        ),
        (
            "signalgate.datastorage.cli",
            {
                "SIGNALGATE_SERVER__LISTEN": "127.0.0.1:{p}",
                "SIGNALGATE_SERVER__OPSLISTEN": "127.0.0.1:{p}",
            },
            ("server.listen", "server.opsListen"),
        ),
        (  # one address by two names: compared as text, it passed, then exit 3
            "signalgate.gateway.cli",
            {
                "SIGNALGATE_SERVER__LISTEN": "localhost:{p}",
                "SIGNALGATE_SERVER__OPSLISTEN": "127.0.0.1:{p}",
            },
            ("server.listen", "server.opsListen"),
        ),
    ],
)
def test_one_address_for_two_of_a_services_listeners_is_refused_at_start(
    module: str, env: dict[str, str], keys: tuple[str, str], tmp_path: Path
) -> None:
    """It logged "serving", then exited 3 with a raw errno line naming no setting."""
    port = str(free_port())
    settings = {name: value.replace("{p}", port) for name, value in env.items()}
    done = run(module, "serve", env={**settings, "SIGNALGATE_DATADIR": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert (
        errors[0].startswith(f"error: config keys '{keys[0]}' (") and f"'{keys[1]}' (" in errors[0]
    )
    assert f"both listen on port {port}" in errors[0]
    assert "serving" not in done.stderr


def test_one_port_on_ipv4_any_and_ipv6_loopback_is_not_refused(tmp_path: Path) -> None:
    """`0.0.0.0:P` and `[::1]:P` do not clash on Linux (IPv4's any address is not IPv6's
    loopback); read as text, they were refused as one address."""
    from signalgate.common.listeners import check_distinct_listeners

    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6 loopback to test with")
    port = free_port()
    check_distinct_listeners(f"0.0.0.0:{port}", f"[::1]:{port}")
    with pytest.raises(ConfigError, match="both listen on port"):
        check_distinct_listeners(f"[::]:{port}", f"0.0.0.0:{port}")  # IPv6's any holds IPv4's


@pytest.mark.parametrize("module", SERVICES)
def test_a_tokens_file_holding_no_token_stops_start_up(module: str, tmp_path: Path) -> None:
    """It started silently and answered every request 401 (a reload refuses such a file)."""
    tokens = tmp_path / "tokens"
    tokens.write_text("# tokens go here\n")
    done = run(
        module,
        "serve",
        env={
            "SIGNALGATE_AUTH__TOKENSFILE": str(tokens),
            "SIGNALGATE_DATADIR": str(tmp_path / "data"),
            "SIGNALGATE_SERVER__LISTEN": "127.0.0.1:0",
            "SIGNALGATE_SERVER__OPSLISTEN": "127.0.0.1:0",
        },
    )
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: config key 'auth.tokensFile': '{tokens}' holds no token")
    ), done.stderr


@pytest.mark.parametrize("module", SERVICES)
def test_check_config_refuses_what_serve_refuses_without_a_network(
    module: str, tmp_path: Path
) -> None:
    """`check-config` ("validate settings") passed these, and `serve` exited 2 on each."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    data = str(tmp_path / "data")
    cases = [
        ({"SIGNALGATE_SERVER__TLSCERTFILE": str(tmp_path / "x.crt")}, "server.tlsKeyFile"),
        ({"SIGNALGATE_AUTH__TOKENSFILE": str(tmp_path / "nope.tokens")}, "auth.tokensFile"),
        # a directory is named as it was given: here, its variable
        ({"SIGNALGATE_DATADIR": str(a_file / "x")}, "SIGNALGATE_DATADIR"),
    ]
    for env, key in cases:
        settings = {"SIGNALGATE_DATADIR": data, **env}
        checked = run(module, "check-config", env=settings)
        assert checked.returncode == 2, (key, checked.stderr)
        (line,) = checked.stderr.strip().splitlines()
        named = f"environment variable {key}" if key.isupper() else f"config key '{key}'"
        assert line.startswith(f"error: {named}"), line
        served = run(
            module,
            "serve",
            env={
                **settings,
                "SIGNALGATE_SERVER__LISTEN": "127.0.0.1:0",
                "SIGNALGATE_SERVER__OPSLISTEN": "127.0.0.1:0",
            },
        )
        assert served.returncode == 2 and served.stderr.strip().splitlines()[-1] == line
    assert not (tmp_path / "data").exists()  # check-config made nothing


@pytest.mark.parametrize(
    ("module", "variable", "key"),
    [
        (
            "signalgate.gateway.cli",
            "SIGNALGATE_SERVER__PROCESSINGTIMEOUT",
            "server.processingTimeout",
        ),
        ("signalgate.gateway.cli", "SIGNALGATE_FRESHNESS__TOLERANCE", "freshness.tolerance"),
        ("signalgate.gateway.cli", "SIGNALGATE_DATASTORAGE__TIMEOUT", "datastorage.timeout"),
        (
            "signalgate.gateway.cli",
            "SIGNALGATE_DATASTORAGE__FLUSHINTERVAL",
            "datastorage.flushInterval",
        ),
        (
            "signalgate.gateway.cli",
            "SIGNALGATE_DATASTORAGE__BACKOFFINITIAL",
            "datastorage.backoffInitial",
        ),
        ("signalgate.gateway.cli", "SIGNALGATE_DATASTORAGE__BACKOFFMAX", "datastorage.backoffMax"),
        ("signalgate.datastorage.cli", "SIGNALGATE_STORE__TIMEOUT", "store.timeout"),
        ("signalgate.datastorage.cli", "SIGNALGATE_DLQ__POLLINTERVAL", "dlq.pollInterval"),
    ],
)
def test_a_zero_duration_that_cannot_work_is_refused_naming_the_key(
    module: str, variable: str, key: str, tmp_path: Path
) -> None:
    """`processingTimeout: 0s` answered every signal 504, `tolerance: 0s` every Event 400."""
    done = run(module, "check-config", env={variable: "0s", "SIGNALGATE_DATADIR": str(tmp_path)})
    assert done.returncode == 2, done.stdout
    assert done.stderr.strip().splitlines() == [
        f"error: config key '{key}' (from environment variable {variable}): '0s' must be "
        "greater than 0"
    ]


def test_a_kubeconfig_in_store_dsn_alone_names_kubernetes_config_as_in_cluster(
    tmp_path: Path,
) -> None:
    """store.dsn took the kubeconfig; kubernetes.config (scope, auth) stayed in-cluster, and
    the error said only "in-cluster config failed … give a kubeconfig instead"."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "current-context: a\n"
        "contexts: [{name: a, context: {cluster: c, user: u}}]\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    done = run(
        "signalgate.gateway.cli",
        "serve",
        env={
            "SIGNALGATE_STORE__DSN": f"kubernetes://{kubeconfig}",
            "SIGNALGATE_DATADIR": str(tmp_path / "data"),
            "SIGNALGATE_SERVER__LISTEN": "127.0.0.1:0",
            "SIGNALGATE_SERVER__OPSLISTEN": "127.0.0.1:0",
            "KUBERNETES_SERVICE_HOST": "",
        },
    )
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(
        "error: config key 'kubernetes.config': kubernetes:// is the in-cluster Kubernetes config"
    ), line
    assert "set kubernetes.config to kubernetes:///path/to/kubeconfig" in line
    assert "store.dsn's kubeconfig is not used for it" in line


@pytest.mark.parametrize("module", SERVICES)
def test_the_bare_command_serves(module: str, tmp_path: Path) -> None:
    """`serve` is the default command: with no arguments at all too (it said "the following
    arguments are required: command"). A bad setting shows it got as far as serving."""
    done = run(
        module, env={"SIGNALGATE_SERVER__LISTEN": "8080", "SIGNALGATE_DATADIR": str(tmp_path)}
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: config key 'server.listen' (from environment variable "
        "SIGNALGATE_SERVER__LISTEN): '8080' is not host:port (e.g. 127.0.0.1:8080)"
    ]


@pytest.mark.parametrize("module", SERVICES)
def test_a_postgresql_store_that_refuses_says_which_setting_to_check(
    module: str, tmp_path: Path, postgres_dsn: str
) -> None:
    """A wrong DSN at start (here a database that does not exist) stops both services with
    one line that names `store.dsn` as the user gave it and what to check, not only the
    driver's complaint."""
    dsn = postgres_dsn.rsplit("/", 1)[0] + "/no_such_database"
    ports = {
        "SIGNALGATE_SERVER__LISTEN": f"127.0.0.1:{free_port()}",
        "SIGNALGATE_SERVER__OPSLISTEN": f"127.0.0.1:{free_port()}",
    }
    done = run(
        module, "serve", "--data-dir", str(tmp_path), env={"SIGNALGATE_STORE__DSN": dsn, **ports}
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), done.stderr
    assert '"no_such_database" does not exist' in last, last
    assert "check environment variable SIGNALGATE_STORE__DSN" in last, last
    assert "user, password and database" in last, last
