"""Secrets in DSNs and URLs, in every form their clients take, are masked where shown."""

from __future__ import annotations

import pytest

from signalgate.common.secrets import hide_secrets, hide_secrets_in


@pytest.mark.parametrize(
    ("shown", "masked"),
    [
        ("postgresql://sg:S3cret@db:5432/sg", "postgresql://sg:***@db:5432/sg"),
        ("redis://:RedisPass@redis:6379/0", "redis://:***@redis:6379/0"),  # no user name
        ("postgresql://sg:abc/def+ghi@db/sg", "postgresql://sg:***@db/sg"),  # '/' in it
        ("amqp://u:p@ss@mq/", "amqp://u:***@mq/"),  # '@' in it
        ("postgresql://sg@db/sg?password=Q1&sslmode=require", "postgresql://sg@db/sg?password=***&sslmode=require"),
        ("postgresql://db/sg?sslmode=verify-full&sslpassword=K", "postgresql://db/sg?sslmode=verify-full&sslpassword=***"),
        ("host=db password=KW user=x", "host=db password=*** user=x"),  # libpq key=value
        ("host=db password = KW user=x", "host=db password = *** user=x"),
        ("postgresql://sg:pa ss@db/sg", "postgresql://sg:***@db/sg"),  # a space in it
        ("host=db password='a b\\' c' user=x", "host=db password=*** user=x"),
        ("reaching http://svc:UrlPass@ds:8090 failed", "reaching http://svc:***@ds:8090 failed"),
    ],
)  # fmt: skip
def test_each_form_of_a_password_is_masked(shown: str, masked: str) -> None:
    assert hide_secrets(shown) == masked


@pytest.mark.parametrize(
    "plain",
    [
        "http://ds:8090/api",
        "sqlite:///var/gateway.db",
        "postgresql:///signalgate?host=/run/postgresql",
        "postgresql://gateway@db/signalgate",
        "kubernetes://",
        "passwordless=yes",
    ],
)
def test_what_holds_no_secret_is_left_as_it_is(plain: str) -> None:
    assert hide_secrets(plain) == plain


def test_every_string_of_a_configuration_is_masked() -> None:
    resolved = {
        "store": {"dsn": "postgresql://sg:pw@db/sg", "poolSize": 6},
        "urls": ["redis://:pw@r/0", None],
    }
    assert hide_secrets_in(resolved) == {
        "store": {"dsn": "postgresql://sg:***@db/sg", "poolSize": 6},
        "urls": ["redis://:***@r/0", None],
    }
