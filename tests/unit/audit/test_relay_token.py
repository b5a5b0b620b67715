"""The relay's DataStorage token: read from its file, kept between batches, read again after
a 401 (a rotated service-account token applies without a restart)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
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


async def test_a_rotated_token_is_read_again_after_a_401(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old-token\n")
    fake = TokenCheckingDataStorage(accepted="new-token")
    delivery = DeliverySettings(
        url="http://ds.test",
        token_file=token_file,
        flush_interval=0.01,
        backoff_initial=0.01,
        backoff_max=0.02,
        stop_flush_timeout=1.0,
    )
    sink = JournalAuditSink(
        delivery,
        AuditSettings(),
        tmp_path / "journal",
        CollectorRegistry(),
        extension_types=frozenset(),
        transport=httpx.MockTransport(fake),
    )
    await sink.start()
    try:
        first = event()
        sink.emit(first)
        await sink.commit()
        for _ in range(300):
            if fake.refused:
                break
            await asyncio.sleep(0.01)
        assert fake.refused and not fake.stored
        token_file.write_text("new-token\n")  # the kubelet rotates the projected token
        for _ in range(300):
            if fake.stored:
                break
            await asyncio.sleep(0.01)
        assert fake.stored == [first["event_id"]]
    finally:
        await sink.stop()


def test_a_token_file_a_header_cannot_carry_is_never_sent(tmp_path: Path, caplog: object) -> None:
    """A second line would end the Authorization header and start another; bytes that are not
    text would fail the client on every batch. Such a file is logged and sends no token."""
    from signalgate.audit.relay import _read_token

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
        assert _read_token(token_file) == "", content
