"""Static token auth: hashed tokens, scopes, line-numbered errors, first-start admin token."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from signalgate.common.auth import StaticTokenAuth, ensure_admin_token, hash_token
from signalgate.common.config import ConfigError
from signalgate.common.problems import Problem

SCOPES = ("signals:write", "remediations:read")


def tokens_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokens"
    path.write_text(text)
    return path


def test_known_token_gets_its_scopes_and_only_those(tmp_path: Path) -> None:
    auth = StaticTokenAuth.from_file(
        tokens_file(tmp_path, f"# comment\n\n{hash_token('s3cret')} signals:write  # sender\n"),
        SCOPES,
    )
    principal = auth.authenticate("Bearer s3cret")
    principal.require("signals:write")
    with pytest.raises(Problem) as denied:
        principal.require("remediations:read")
    assert denied.value.status == 403


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer wrong", "Bearers s3cret"]
)
def test_missing_malformed_or_unknown_is_401(tmp_path: Path, header: str | None) -> None:
    auth = StaticTokenAuth.from_file(
        tokens_file(tmp_path, f"{hash_token('s3cret')} signals:write\n")
    )
    with pytest.raises(Problem) as error:
        auth.authenticate(header)
    assert error.value.status == 401


@pytest.mark.parametrize(
    ("header", "says"),
    [
        (None, "send 'Authorization: Bearer <token>'"),
        ("Basic abc", "send 'Authorization: Bearer <token>'"),
        ("Bearer wrong", "auth.tokensFile"),
        ("Bearer wrong", "admin.token"),
    ],
)
def test_a_401_says_what_to_send(tmp_path: Path, header: str | None, says: str) -> None:
    """A newcomer's first mistakes (no header, the token without `Bearer`, the wrong token)
    are answered with what to do: the header's form, and where tokens come from."""
    auth = StaticTokenAuth.from_file(
        tokens_file(tmp_path, f"{hash_token('s3cret')} signals:write\n")
    )
    with pytest.raises(Problem) as error:
        auth.authenticate(header)
    assert says in error.value.detail


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_scheme_is_named_in_any_case(tmp_path: Path, scheme: str) -> None:
    """RFC 9110 makes the scheme's name case-insensitive: a client sending `bearer` (an
    outside check found it refused) is let in."""
    auth = StaticTokenAuth.from_file(
        tokens_file(tmp_path, f"{hash_token('s3cret')} signals:write\n")
    )
    assert auth.authenticate(f"{scheme} s3cret").name == "token@line1"


def test_bad_lines_are_reported_with_their_number(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 2"):
        StaticTokenAuth.from_file(
            tokens_file(tmp_path, f"{hash_token('a')} signals:write\nnonsense\n"), SCOPES
        )
    with pytest.raises(ConfigError, match="line 1: unknown scope 'admin'"):
        StaticTokenAuth.from_file(tokens_file(tmp_path, f"{hash_token('a')} admin\n"), SCOPES)


def test_admin_token_made_once_with_private_mode(tmp_path: Path) -> None:
    tokens, token_path = ensure_admin_token(tmp_path / "data", SCOPES)
    assert token_path is not None and token_path.stat().st_mode & 0o777 == 0o600
    token = token_path.read_text().strip()
    assert token not in tokens.read_text()
    auth = StaticTokenAuth.from_file(tokens, SCOPES)
    auth.authenticate(f"Bearer {token}").require("remediations:read")
    again, second = ensure_admin_token(tmp_path / "data", SCOPES)
    assert again == tokens and second is None


async def test_the_tokens_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    """A token is added or revoked by editing the file (or a Secret update), no restart."""
    path = tokens_file(tmp_path, f"{hash_token('old')} signals:write\n")
    auth = StaticTokenAuth.from_file(path, SCOPES)
    assert (await auth.authorize("Bearer old", "signals:write")).name == "token@line1"
    path.write_text(f"# rotated\n{hash_token('new')} signals:write\n")
    auth.check_soon()  # what a SIGHUP does; otherwise within a second
    assert (await auth.authorize("Bearer new", "signals:write")).name == "token@line2"
    with pytest.raises(Problem) as revoked:
        await auth.authorize("Bearer old", "signals:write")
    assert revoked.value.status == 401


async def test_a_tokens_file_that_no_longer_reads_keeps_the_tokens_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tokens_file(tmp_path, f"{hash_token('kept')} signals:write\n")
    auth = StaticTokenAuth.from_file(path, SCOPES)
    path.write_text(f"{hash_token('other')} signals:writ\n")  # a typo: unknown scope
    auth.check_soon()
    assert (await auth.authorize("Bearer kept", "signals:write")).name == "token@line1"
    [logged] = [r for r in caplog.records if r.getMessage().startswith("tokens file not")]
    assert "line 1: unknown scope 'signals:writ'" in getattr(logged, "error", "")
    path.unlink()  # a file gone (a Secret being replaced) is not "no tokens"
    auth.check_soon()
    assert (await auth.authorize("Bearer kept", "signals:write")).name == "token@line1"


async def test_the_file_is_looked_at_no_more_than_once_a_second(tmp_path: Path) -> None:
    path = tokens_file(tmp_path, f"{hash_token('old')} signals:write\n")
    auth = StaticTokenAuth.from_file(path, SCOPES)
    path.write_text(f"{hash_token('new')} signals:write\n")
    with pytest.raises(Problem):  # not yet: the last look was under a second ago
        await auth.authorize("Bearer new", "signals:write")


async def test_a_change_is_taken_once_it_holds_for_a_look_and_an_empty_file_never(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An editor or `cat >` truncates the file before writing it: the empty file was read
    in between and refused every token until the next look (an outside check)."""
    import signalgate.common.auth as auth_module

    monkeypatch.setattr(auth_module, "RELOAD_CHECK", 0.0)  # every request looks
    path = tokens_file(tmp_path, f"{hash_token('old')} signals:write\n")
    auth = StaticTokenAuth.from_file(path, SCOPES)
    path.write_text("")  # mid-write
    for _ in range(3):
        assert (await auth.authorize("Bearer old", "signals:write")).name == "token@line1"
    path.write_text(f"{hash_token('old')} signals:write\n{hash_token('new')} signals:write\n")
    with pytest.raises(Problem):  # first look at the change: it may still be being written
        await auth.authorize("Bearer new", "signals:write")
    assert (await auth.authorize("Bearer new", "signals:write")).name == "token@line2"
    path.write_text("# every line removed\n")
    auth.check_soon()  # not even at the operator's word: no token at all locks everyone out
    assert (await auth.authorize("Bearer old", "signals:write")).name == "token@line1"


async def test_a_keeper_cancelled_as_a_sighup_wakes_it_stops(tmp_path: Path) -> None:
    """A SIGHUP during a stop woke the tokens keeper in the loop turn it was cancelled:
    `asyncio.wait_for` on 3.11 then returns the wake-up and drops the cancellation, so the
    keeper looked on for ever and the stopped Gateway hung in asyncio's final cancel (a
    test sending SIGHUP every 2 ms through a stop: 3 hangs in 4 on a busy machine)."""
    auth = StaticTokenAuth.from_file(tokens_file(tmp_path, f"{hash_token('s3cret')} a\n"), ("a",))
    for turns in range(4):  # the wake-up a few loop turns before the cancellation, or with it
        keeper = asyncio.create_task(auth.keep())
        await asyncio.sleep(0.01)  # waiting for a wake-up
        auth.check_soon()
        for _ in range(turns):
            await asyncio.sleep(0)
        keeper.cancel()
        done, _ = await asyncio.wait({keeper}, timeout=3)
        assert keeper in done, f"still looking after its cancellation ({turns} turns)"
        assert keeper.cancelled()
