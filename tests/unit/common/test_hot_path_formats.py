"""The hot path's hand-rolled formats equal the standard library's (common/ids.py,
remediation/model.py's format_time)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta, timezone

from signalgate.common.ids import new_uuid
from signalgate.remediation.model import format_time, parse_time


def test_new_uuid_is_the_version_4_uuid_of_the_same_random_bits() -> None:
    for _ in range(2000):
        state = random.getstate()
        made = new_uuid()
        random.setstate(state)
        expected = uuid.UUID(int=random.getrandbits(128), version=4)
        assert made == str(expected)
        parsed = uuid.UUID(made)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_format_time_is_utc_with_microseconds_and_z_for_every_offset() -> None:
    moment = datetime(2026, 11, 30, 15, 4, 5, 6, tzinfo=UTC)
    assert format_time(moment) == "2026-11-30T15:04:05.000006Z"
    plus_two = moment.astimezone(timezone(timedelta(hours=2)))
    assert format_time(plus_two) == "2026-11-30T15:04:05.000006Z"
    assert format_time(moment.replace(microsecond=0)) == "2026-11-30T15:04:05.000000Z"
    assert parse_time(format_time(moment)) == moment
