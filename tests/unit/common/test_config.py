"""Settings resolution: defaults < YAML < environment < flags, and one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from signalgate.common.config import (
    ConfigError,
    load_settings,
    parse_duration,
    parse_size,
    resolve_settings,
)
from signalgate.gateway.settings import SHORTHANDS, GatewaySettings


def load(
    env: dict[str, str] | None = None, path: Path | None = None, **overrides: object
) -> GatewaySettings:
    return load_settings(GatewaySettings, path, env or {}, SHORTHANDS, overrides)


def refused(tmp_path: Path, text: str) -> tuple[Path, str]:
    """A config file of `text`, and the refusal `load` raises for it."""
    config = tmp_path / "g.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(path=config)
    return config, str(caught.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("1s", 1.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("15", 15.0),
        (2, 2.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"), [("100MiB", 100 * 1024**2), ("1KB", 1000), ("512", 512), (7, 7)]
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["5x", "-1s", "", True, "1.5.2s"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_layers_override_in_order(tmp_path: Path) -> None:
    config = tmp_path / "g.yaml"
    config.write_text(
        "server:\n  listen: 127.0.0.1:1111\n  opsListen: 127.0.0.1:2222\n"
        "freshness:\n  tolerance: 10m\n"
    )
    settings = load(
        {"signalgate_server__LISTEN": "127.0.0.1:3333", "LOG_LEVEL": "DEBUG"},
        config,
        **{"server.opsListen": "127.0.0.1:4444"},
    )
    assert settings.server.listen == "127.0.0.1:3333"
    assert settings.server.ops_listen == "127.0.0.1:4444"
    assert settings.freshness.tolerance == 600.0
    assert settings.logging.level == "debug"


def test_lists_from_env_as_json_or_commas() -> None:
    assert load(
        {"SIGNALGATE_SCOPE__MANAGEDNAMESPACES": '["a", "b-*"]'}
    ).scope.managed_namespaces == [
        "a",
        "b-*",
    ]
    assert load(
        {"SIGNALGATE_SCOPE__UNMANAGEDNAMESPACES": "kube-*, test"}
    ).scope.unmanaged_namespaces == [
        "kube-*",
        "test",
    ]


def test_data_storage_url_shorthand_and_top_level_key() -> None:
    settings = load({"DATA_STORAGE_URL": "http://ds:8090", "SIGNALGATE_DATADIR": "/srv/sg"})
    assert settings.datastorage.url == "http://ds:8090"
    assert settings.store_dsn == "sqlite:////srv/sg/gateway.db"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"SIGNALGATE_SERVER__MAXCONCURRENTREQUESTS": "0"},
            "config key 'server.maxConcurrentRequests'",
        ),
        ({"SIGNALGATE_AUTH__MODE": "ldap"}, "'ldap' must be 'static', 'none' or 'kubernetes'"),
        ({"SIGNALGATE_FRESHNESS__TOLERANCE": "soon"}, "is not a duration"),
        ({"SIGNALGATE_DATASTORAGE__SPOOLMAXBYTES": "lots"}, "is not a size"),
        (
            {"SIGNALGATE_STORE__DSN": "mysql://x"},
            "must start with sqlite:///, postgresql:// or kubernetes://",
        ),
    ],
)
def test_errors_name_key_value_and_source(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(env)
    text = str(error.value)
    assert message in text
    assert "environment variable SIGNALGATE_" in text
    assert "\n" not in text


def test_an_out_of_range_duration_is_quoted_as_written(tmp_path: Path) -> None:
    """`processingTimeout: 0s` was reported as `0.0 must be greater than 0`: the value the
    duration parser made, not the one in the file."""
    config = tmp_path / "g.yaml"
    config.write_text("server:\n  processingTimeout: 0s\n")
    with pytest.raises(ConfigError) as error:
        load(path=config)
    assert str(error.value) == (
        f"config key 'server.processingTimeout' (from {config}): '0s' must be greater than 0"
    )
    with pytest.raises(ConfigError, match=r"\(from environment variable .*\): '0ms' must be"):
        load({"SIGNALGATE_SERVER__PROCESSINGTIMEOUT": "0ms"})
    with pytest.raises(ConfigError, match=r"\(from command line\): '0m' must be"):
        load_settings(GatewaySettings, None, {}, SHORTHANDS, {"server.processingTimeout": "0m"})


def test_unknown_yaml_key_and_bad_yaml(tmp_path: Path) -> None:
    config = tmp_path / "g.yaml"
    config.write_text("sever:\n  listen: x\n")
    with pytest.raises(ConfigError, match=r"'sever' \(from .*g\.yaml\): unknown setting"):
        load(path=config)
    config.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(path=config)
    with pytest.raises(ConfigError, match="cannot be read"):
        load(path=tmp_path / "missing.yaml")


def test_a_missing_config_file_says_where_it_looked_and_that_none_is_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        load(path=Path("gateway.yaml"))
    assert str(refused.value) == (
        "config file 'gateway.yaml': cannot be read (No such file or directory; looked for "
        f"'{tmp_path / 'gateway.yaml'}'): give a file that exists, or none to run on the "
        "defaults"
    )


def test_a_yaml_syntax_error_names_the_line_in_the_files_words(tmp_path: Path) -> None:
    """The parser's text was flattened onto one line: '<unicode string>' for the file, its
    source lines and caret pointers joined by runs of spaces."""
    config, refusal = refused(tmp_path, "server:\n  listen: 127.0.0.1:1\n  opsListen: [bad\n")
    assert refusal == (
        f"config file '{config}': not valid YAML at line 4, column 1: expected ',' or ']', "
        "but got '<stream end>' (while parsing a flow sequence from line 3, column 14)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "kinds:\n  extra: [BuildConfig]\n",
            "config key 'kinds.extra.0': 'BuildConfig' must be a mapping with the keys kind, "
            "apiVersion, namespaced, singular",
        ),
        ("server: 5\n", "5 must be a mapping with the keys listen, opsListen, metricsListen,"),
        (
            "controllerNamespace: Bad_NS\n",
            "'Bad_NS' is not a namespace name (lowercase letters, digits and '-',",
        ),
        (
            "kinds:\n  extra: [{kind: 9x, apiVersion: v1}]\n",
            "config key 'kinds.extra.0.kind': '9x' is not a kind (a letter, then letters or",
        ),
    ],
)
def test_errors_say_what_is_expected_in_the_docs_terms(
    tmp_path: Path, text: str, message: str
) -> None:
    """Not pydantic's "a valid dictionary or instance of ExtraKind", nor a raw regex."""
    config = tmp_path / "g.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as error:
        load(path=config)
    assert message in str(error.value)
    assert "instance of" not in str(error.value) and "pattern" not in str(error.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("auth.tokensFile", "tokens\x00.txt"),
        ("datastorage.url", "http://ds:8090/\nX-Injected: 1"),
        ("store.dsn", "sqlite:///var/\x07gateway.db"),
        ("scope.managedNamespaces", ["prod", "\x00"]),
    ],
)
def test_control_characters_are_refused_naming_the_key(key: str, value: object) -> None:
    """A NUL in a path or a newline in a URL would fail later, far from its cause, in
    whichever library met it first (a traceback, not a line)."""
    with pytest.raises(ConfigError) as caught:
        load_settings(GatewaySettings, None, {}, SHORTHANDS, {key: value})
    assert str(caught.value).startswith(f"config key '{key}' (from command line): ")
    assert "must not contain control characters" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://ds:8090", "is not a http:// or https:// URL with a host"),
        ("data-storage-service:8090", "is not a http:// or https:// URL with a host"),
        ("http://", "is not a http:// or https:// URL with a host"),
        ("http://[::1:8090", "is not a valid URL (Invalid IPv6 URL"),
        ("http://ds:80900", "is not a valid URL (Port out of range"),
    ],
)
def test_the_datastorage_url_must_be_one_a_client_can_connect_to(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("config key 'datastorage.url'")) as caught:
        load({"SIGNALGATE_DATASTORAGE__URL": url})
    assert problem in str(caught.value)
    assert load({"SIGNALGATE_DATASTORAGE__URL": "https://ds.example:8443/"}).datastorage.url


def test_a_bad_postgresql_dsn_is_refused_without_showing_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        load({"SIGNALGATE_STORE__DSN": "postgresql://gw:s3cret@db:99999/signalgate"})
    message = str(caught.value)
    assert "s3cret" not in message
    assert "'postgresql://gw:***@db:99999/signalgate' is not a valid URL (Port out of range" in (
        message
    )
    # a Unix-socket DSN has no host in its authority, and is fine
    socket_dsn = "postgresql:///signalgate?host=/run/postgresql"
    assert load({"SIGNALGATE_STORE__DSN": socket_dsn}).store_dsn == socket_dsn


def test_a_config_file_that_is_not_text_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_bytes(b"server:\n  listen: \xff\xfe\n")
    with pytest.raises(ConfigError) as caught:
        load(path=path)
    assert str(caught.value) == f"config file '{path}': not UTF-8 text"


def test_an_environment_variable_naming_no_setting_is_a_warning() -> None:
    """A misspelt variable was ignored without a word (the same typo in YAML is exit 2); the
    prefix is shared by both services, so it is a warning, not a refusal."""
    env = {"SIGNALGATE_SERVER__LISTN": "127.0.0.1:1", "SIGNALGATE_LOGGING__LEVEL": "warning"}
    resolved = resolve_settings(GatewaySettings, None, env, SHORTHANDS)
    assert resolved.settings.server.listen == "127.0.0.1:8080"
    assert resolved.notes == (
        "environment variable SIGNALGATE_SERVER__LISTN names no setting of this service and is "
        "ignored (a typo? a setting of the other signalgate service is ignored here too)",
    )


def test_an_empty_environment_value_unsets_an_optional_setting() -> None:
    """`SIGNALGATE_AUTH__TOKENSFILE=` (a manifest's way to say none) was read as the path
    `.`, and start-up said the directory could not be read as a tokens file."""
    settings = load(env={"SIGNALGATE_AUTH__TOKENSFILE": "", "SIGNALGATE_DATASTORAGE__URL": ""})
    assert settings.auth.tokens_file is None
    assert settings.datastorage.url is None
    # a required setting is not made optional by it
    with pytest.raises(ConfigError, match=r"server\.listen"):
        load(env={"SIGNALGATE_SERVER__LISTEN": ""})


def test_a_file_of_nested_aliases_is_checked_once_per_node(tmp_path: Path) -> None:
    """The repeated-key check walked an alias anew each time it was named: nested aliases
    (a "billion laughs" file) doubled its time with each level (23 levels: 14 s)."""
    import yaml

    from signalgate.common.config import _refuse_repeated_keys

    lines = ["a0: &a0 [x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 40)]
    text = "\n".join(lines) + "\n"

    class Counted(set[int]):
        looks = 0

        def add(self, node: int) -> None:
            Counted.looks += 1
            super().add(node)

    _refuse_repeated_keys(yaml.compose(text, Loader=yaml.SafeLoader), tmp_path, "", Counted())
    assert Counted.looks < 200  # the file's nodes, once each (2**40 walked anew)


def test_a_list_written_as_one_string_in_the_file_says_how_to_write_it(tmp_path: Path) -> None:
    """`unmanagedNamespaces: kube-system,monitoring` in a file (the form environment
    variables take, and the one the defaults are shown in) was refused as "must be a valid
    list", which does not say what a valid one looks like."""
    config, refusal = refused(tmp_path, "scope:\n  unmanagedNamespaces: kube-system,monitoring\n")
    assert refusal == (
        f"config key 'scope.unmanagedNamespaces' (from {config}): 'kube-system,monitoring' "
        "must be a YAML list, e.g. [kube-system, monitoring] (a comma-separated string is "
        "read as a list only from an environment variable)"
    )


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("server:\n  opslisten: x\n", "server.opslisten", "did you mean 'opsListen'?"),
        ("sever:\n  listen: x\n", "sever", "did you mean 'server'?"),
        ("server:\n  zzzz: 1\n", "server.zzzz", "(see the configuration reference in README)"),
    ],
)
def test_an_unknown_key_suggests_the_setting_it_is_close_to(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    """Keys in a file are camelCase and exact (environment variables are case-insensitive):
    `opslisten` was refused with no hint of the `opsListen` it meant, nor of the file."""
    config = tmp_path / "g.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(path=config)
    separator = "; " if expected.startswith("did") else " "
    assert str(caught.value) == (
        f"config key '{key}' (from {config}): unknown setting{separator}{expected}"
    )
