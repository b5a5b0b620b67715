"""The relay's DataStorage token: read from its file, kept between batches, read again after
a 401 (a rotated service-account token applies without a restart)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from signalgate.audit.settings import AuditSettings, DeliverySettings
from signalgate.audit.sink import JournalAuditSink


class TokenCheckingDataStorage:
    def __init__(self, accepted: str) -> None:
        self.accepted = accepted
        self.stored: list[str] = []
        self.refused = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {self.accepted}":
            self.refused += 1
            return httpx.Response(401, json={"title": "Unauthorized"})
        if request.url.path.endswith("/capabilities"):
            return httpx.Response(200, json={"eventTypes": []})
        assert request.headers["content-type"] == "application/json"
        self.stored.extend(e["event_id"] for e in json.loads(request.content))
        return httpx.Response(201, json={})


def event() -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "gateway.signal.received",
        "event_timestamp": datetime.now(UTC).isoformat(),
        "correlation_id": "rr-1",
    }


async def until(condition: Callable[[], bool]) -> None:
    """Wait up to 3 s for `condition` (the relay retries within hundredths of a second)."""
    for _ in range(300):
        if condition():
            return
        await asyncio.sleep(0.01)


def quick_sink(
    tmp_path: Path, token_file: Path, fake: TokenCheckingDataStorage
) -> JournalAuditSink:
    """A sink delivering to `fake` at once, retrying within hundredths of a second."""
    delivery = DeliverySettings(
        url="http://ds.test",
        token_file=token_file,
        flush_interval=0.01,
        backoff_initial=0.01,
        backoff_max=0.02,
        stop_flush_timeout=1.0,
    )
    return JournalAuditSink(
        delivery,
        AuditSettings(),
        tmp_path / "journal",
        CollectorRegistry(),
        extension_types=frozenset(),
        transport=httpx.MockTransport(fake),
    )


async def test_a_rotated_token_is_read_again_after_a_401(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old-token\n")
    fake = TokenCheckingDataStorage(accepted="new-token")
    sink = quick_sink(tmp_path, token_file, fake)
    await sink.start()
    try:
        first = event()
        sink.emit(first)
        await sink.commit()
        await until(lambda: bool(fake.refused))
        assert fake.refused and not fake.stored
        token_file.write_text("new-token\n")  # the kubelet rotates the projected token
        await until(lambda: bool(fake.stored))
        assert fake.stored == [first["event_id"]]
    finally:
        await sink.stop()


def test_a_token_file_a_header_cannot_carry_is_never_sent(tmp_path: Path) -> None:
    """A second line would end the Authorization header and start another; bytes that are not
    text would fail the client on every batch. Such a file sends nothing and is named."""
    from signalgate.audit.relay import TokenUnavailable, _read_token

    token_file = tmp_path / "token"
    token_file.write_text("eyJhbGciOi.J9-_x~+/==!#$\n")  # a JWT's characters, punctuation
    assert _read_token(token_file) == "eyJhbGciOi.J9-_x~+/==!#$"
    for content in (
        b"good\nX-Injected: 1\n",
        b"with space",
        b"\xff\xfe",
        b"tab\there",
        "é".encode(),
    ):
        token_file.write_bytes(content)
        with pytest.raises(TokenUnavailable, match=r"^datastorage\.tokenFile '"):
            _read_token(token_file)


@pytest.mark.parametrize("content", [None, "", "\n"], ids=["missing", "empty", "newline only"])
async def test_a_missing_or_empty_token_file_is_named_and_nothing_is_sent(
    tmp_path: Path, content: str | None
) -> None:
    """It was sent as `Bearer `, which the HTTP client refuses: /readyz showed
    "LocalProtocolError: Illegal header value", naming neither the setting nor the file. The
    file is read again at each retry: a token written later is delivered with."""
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    fake = TokenCheckingDataStorage(accepted="the-token")
    sink = quick_sink(tmp_path, token_file, fake)
    await sink.start()
    try:
        why_at_start = sink.status()["last_error"]  # named before any event is delivered
        first = event()
        sink.emit(first)
        await sink.commit()
        for _ in range(300):
            if sink.status()["last_error"]:
                break
            await asyncio.sleep(0.01)
        why = "cannot be read (No such file or directory)" if content is None else "is empty"
        assert sink.status()["last_error"].startswith(f"datastorage.tokenFile '{token_file}' {why}")
        assert why_at_start == sink.status()["last_error"]
        assert fake.refused == 0 and not fake.stored  # nothing went out without a token
        token_file.write_text("the-token\n")
        await until(lambda: bool(fake.stored))
        assert fake.stored == [first["event_id"]]
    finally:
        await sink.stop()
