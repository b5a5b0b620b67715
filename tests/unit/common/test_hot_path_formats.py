"""The hot path's hand-rolled formats equal the standard library's (common/ids.py,
remediation/model.py's format_time)."""

from __future__ import annotations

import os
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from signalgate.common.ids import new_uuid, random_hex
from signalgate.remediation.model import format_time, parse_time


def test_new_uuid_is_the_version_4_uuid_of_the_same_random_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _ in range(2000):
        raw = os.urandom(16)
        monkeypatch.setattr("signalgate.common.ids.os.urandom", lambda n, raw=raw: raw[:n])
        made = new_uuid()
        assert made == str(uuid.UUID(bytes=raw, version=4))
        parsed = uuid.UUID(made)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_ids_do_not_follow_the_interpreters_random_state() -> None:
    """Ids come from the kernel: the `random` module's state (recoverable from ~600 of its
    outputs, e.g. the X-Request-ID of any answer) does not predict them."""
    made = []
    for _ in range(2):
        random.seed(1)
        made.append((new_uuid(), random_hex(8)))
    assert made[0][0] != made[1][0] and made[0][1] != made[1][1]
    assert all(len(random_hex(n)) == n for n in range(1, 20))


def test_format_time_is_utc_with_microseconds_and_z_for_every_offset() -> None:
    moment = datetime(2026, 11, 30, 15, 4, 5, 6, tzinfo=UTC)
    assert format_time(moment) == "2026-11-30T15:04:05.000006Z"
    plus_two = moment.astimezone(timezone(timedelta(hours=2)))
    assert format_time(plus_two) == "2026-11-30T15:04:05.000006Z"
    assert format_time(moment.replace(microsecond=0)) == "2026-11-30T15:04:05.000000Z"
    assert parse_time(format_time(moment)) == moment
