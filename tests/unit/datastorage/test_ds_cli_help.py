"""`signalgate-datastorage <command> --help` lists the flags that command uses."""

from __future__ import annotations

import pytest

from signalgate.datastorage.cli import _parser, main

ONE_SHOT = [
    "migrate",
    "maintain",
    "replay-dlq",
    "dead-letters",
    "requeue-dead",
    "verify-all",
    "verify-chain",
]


def help_of(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ONE_SHOT)
def test_a_command_that_listens_on_nothing_does_not_offer_listeners(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one-shot commands listed --listen and --ops-listen, which they never open."""
    text = help_of(command, capsys)
    assert "--listen" not in text and "--ops-listen" not in text
    assert "--config" in text and "--data-dir" in text
    # still taken, so a job that reuses serve's arguments keeps starting
    id_argument = ["some-id"] if command == "verify-chain" else []
    args = _parser().parse_args([command, "--listen", "127.0.0.1:1", *id_argument])
    assert args.listen == "127.0.0.1:1"


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_serve_and_check_config_offer_the_listeners(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_of(command, capsys)
    assert "--listen" in text and "--ops-listen" in text
