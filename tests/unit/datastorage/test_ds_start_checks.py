"""DataStorage's start-up checks: the directories it will write (and only those), and the
connection URLs it is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from signalgate.common.config import ConfigError
from signalgate.datastorage.service import check_directories
from signalgate.datastorage.settings import DataStorageSettings, load


def settings(**values: object) -> DataStorageSettings:
    return DataStorageSettings.model_validate(values)


@pytest.fixture
def unwritable(tmp_path: Path) -> Path:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # nothing can be made under a file, even by root
    return blocker / "data"


def test_the_embedded_defaults_need_the_data_directory(unwritable: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        check_directories(settings(dataDir=unwritable))
    message = str(caught.value)
    assert message.startswith(f"config key 'dataDir': '{unwritable}'")
    assert "SQLite audit store, the dead-letter queue file, the generated tokens" in message


def test_postgresql_redis_and_service_account_tokens_need_no_disk(unwritable: Path) -> None:
    check_directories(
        settings(
            dataDir=unwritable,
            store={"dsn": "postgresql://ds@db/audit"},
            dlq={"redisUrl": "redis://redis:6379/0"},
            auth={"mode": "kubernetes"},
        )
    )
    assert not unwritable.parent.is_dir()


def test_an_explicit_queue_file_is_checked_where_it_is(tmp_path: Path, unwritable: Path) -> None:
    check_directories(
        settings(
            dataDir=unwritable,
            store={"dsn": "postgresql://ds@db/audit"},
            dlq={"path": str(tmp_path / "q" / "dlq.jsonl")},
            auth={"mode": "kubernetes"},
        )
    )
    assert (tmp_path / "q").is_dir()
    with pytest.raises(ConfigError, match=r"^config key 'dlq\.path'"):
        check_directories(
            settings(
                store={"dsn": "postgresql://ds@db/audit"},
                dlq={"path": str(unwritable / "dlq.jsonl")},
                auth={"mode": "kubernetes"},
            )
        )


def test_connection_urls_are_checked_when_loaded_and_never_show_a_password() -> None:
    with pytest.raises(ConfigError) as caught:
        load(None, {"SIGNALGATE_DLQ__REDISURL": "redis://:s3cret@[redis:6379/0"})
    message = str(caught.value)
    assert message.startswith("config key 'dlq.redisUrl'") and "s3cret" not in message
    assert "is not a valid URL (Invalid IPv6 URL" in message
    with pytest.raises(ConfigError, match=r"^config key 'store\.dsn'.*Port out of range"):
        load(None, {"SIGNALGATE_STORE__DSN": "postgresql://ds@db:70000/audit"})
    assert load(None, {"SIGNALGATE_DLQ__REDISURL": "unix:///run/redis.sock"}).dlq.redis_url
