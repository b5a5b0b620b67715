"""Hostile and broken kubeconfig files: each is one error line naming the file and what is
wrong in it, at start-up (never a traceback, never a TLS failure at the first API call)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from signalgate.common.config import ConfigError
from signalgate.kube.config import config_from_dsn


def kubeconfig(cluster: Mapping[str, object], user: Mapping[str, object]) -> str:
    return yaml.safe_dump(
        {
            "current-context": "a",
            "contexts": [{"name": "a", "context": {"cluster": "c", "user": "u"}}],
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": user}],
        }
    )


SERVER = {"server": "https://127.0.0.1:6443"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[1, 2]", "not a kubeconfig"),
        ("clusters: [\udcff]", "not UTF-8 text"),
        ("current-context: a\ncontexts: x\nclusters: 5\nusers: null\n", "no context named 'a'"),
        (kubeconfig({"server": 12}, {"token": "t"}), "server '12' is not a https:// or http://"),
        (kubeconfig({"server": "https://[::1"}, {"token": "t"}), "Invalid IPv6 URL"),
        (
            kubeconfig({**SERVER, "certificate-authority-data": "!!no"}, {"token": "t"}),
            "certificate-authority-data is not base64",
        ),
        (
            kubeconfig({**SERVER, "certificate-authority": "/nonexistent/ca.crt"}, {"token": "t"}),
            "certificate-authority '/nonexistent/ca.crt' is not a readable file",
        ),
        (kubeconfig(SERVER, {"tokenFile": "/nonexistent/token"}), "tokenFile '/nonexistent"),
        (
            kubeconfig(
                SERVER, {"client-certificate-data": "aGVsbG8=", "client-key-data": "aGVsbG8="}
            ),
            "client certificate and key cannot be loaded",
        ),
        (
            kubeconfig(SERVER, {"exec": {"command": "aws"}}),
            "authenticates through a plugin",
        ),
    ],
)
def test_a_broken_kubeconfig_is_one_line_naming_it(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ConfigError) as caught:
        config_from_dsn(f"kubernetes://{path}")
    message = str(caught.value)
    assert message.startswith(f"kubeconfig '{path}': ") and "\n" not in message
    assert problem in message


def test_a_token_kubeconfig_loads(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    token_file = tmp_path / "token"
    token_file.write_text("abc")
    path.write_text(
        kubeconfig({**SERVER, "insecure-skip-tls-verify": True}, {"tokenFile": "token"})
    )
    config = config_from_dsn(f"kubernetes://{path}")
    assert config.server == "https://127.0.0.1:6443"
    assert config.token_file == token_file and config.insecure
