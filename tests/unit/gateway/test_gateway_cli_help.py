"""`--help` of both services tells a newcomer what the commands do and where data goes."""

from __future__ import annotations

import pytest

from signalgate.datastorage.cli import main as datastorage
from signalgate.gateway.cli import main as gateway


def help_of(main: object, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main(argv)  # type: ignore[operator]
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_the_gateways_help_names_its_commands_defaults_and_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It was one line naming the two commands; a newcomer could not tell that `serve` is
    the default, where the data and the admin token go, or how settings are given."""
    text = help_of(gateway, ["--help"], capsys)
    for said in (
        "the default command",
        "127.0.0.1:8080",
        "SIGNALGATE_<SECTION>__<KEY>",
        "admin.token",
        "Exit codes",
    ):
        assert said in text, said


@pytest.mark.parametrize(
    ("main", "argv", "default"),
    [
        (gateway, ["serve", "--help"], "./var"),
        (gateway, ["check-config", "--help"], "./var"),
        (datastorage, ["serve", "--help"], "./data/datastorage"),
        (datastorage, ["verify-chain", "--help"], "./data/datastorage"),
        (datastorage, ["check-config", "--help"], "./data/datastorage"),
    ],
)
def test_data_dir_says_its_default(
    main: object, argv: list[str], default: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The two services' defaults differ (and neither is `make run`'s), which sent
    `verify-chain` to look in the wrong place."""
    assert f"(dataDir; default {default})" in help_of(main, argv, capsys)
