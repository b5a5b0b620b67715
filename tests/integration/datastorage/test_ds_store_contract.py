"""One contract suite for every audit store backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import pytest

from signalgate.datastorage.chain import verify
from signalgate.datastorage.errors import Conflict, MissingParent
from signalgate.datastorage.events import AuditEvent, validate_event
from signalgate.datastorage.store import AuditQuery, AuditStore, ChainPage
from tests.support.event_bodies import event_body


def ev(correlation_id: str = "rr-1", **overrides: Any) -> AuditEvent:
    return validate_event(event_body(correlation_id, **overrides), datetime.now(UTC))


async def test_write_then_query_returns_the_event_with_chain_fields(store: AuditStore) -> None:
    event = ev("rr-a", severity="critical", namespace="prod")
    result = await store.write([event])
    assert (result.stored, result.existing) == (1, 0)
    page = await store.query(AuditQuery(correlation_id="rr-a"))
    assert page.total == 1
    row = page.data[0]
    assert row["event_id"] == event.event_id
    assert row["previous_event_hash"] == ""
    assert len(row["event_hash"]) == 64
    assert row["event_date"] == event.event_date.isoformat()
    # the stored text, as the query API embeds it (unparsed)
    assert row["event_data"] == event.event_data_json
    assert orjson.loads(row["event_data"]) == {
        "signal_name": "HighCPU",
        "namespace": "prod",
        "n": 1,
    }
    assert row["actor_id"] == "gateway-service"
    assert row["resource_id"] == "rr-a"


async def test_chain_links_events_per_correlation_id_in_write_order(store: AuditStore) -> None:
    batch = [ev("rr-x"), ev("rr-y"), ev("rr-x"), ev("rr-x")]
    await store.write(batch)
    await store.write([ev("rr-x")])
    rows = await store.chain("rr-x")
    assert len(rows) == 4
    assert rows[0]["previous_event_hash"] == ""
    for earlier, later in itertools.pairwise(rows):
        assert later["previous_event_hash"] == earlier["event_hash"]
    assert verify("rr-x", rows).valid
    assert verify("rr-y", await store.chain("rr-y")).valid
    assert (await store.chain("nobody")) == []


async def test_same_id_same_content_is_a_no_op(store: AuditStore) -> None:
    event = ev("rr-i")
    await store.write([event])
    again = await store.write([event, ev("rr-i")])
    assert (again.stored, again.existing) == (1, 1)
    assert (await store.query(AuditQuery(correlation_id="rr-i"))).total == 2


async def test_same_id_other_content_conflicts_and_writes_nothing(store: AuditStore) -> None:
    event = ev("rr-c")
    await store.write([event])
    changed = ev("rr-c", event_id=event.event_id, event_action="changed")
    with pytest.raises(Conflict) as caught:
        await store.write([ev("rr-c"), changed])
    assert caught.value.indexes == {1: event.event_id}
    assert (await store.query(AuditQuery(correlation_id="rr-c"))).total == 1


async def test_parent_must_exist_stored_or_earlier_in_batch(store: AuditStore) -> None:
    parent = ev("rr-p")
    await store.write([parent])
    child = ev("rr-p", parent_event_id=parent.event_id)
    first = ev("rr-p")
    second = ev("rr-p", parent_event_id=first.event_id)
    assert (await store.write([child, first, second])).stored == 3
    orphan = ev("rr-p", parent_event_id=str(uuid.uuid4()))
    with pytest.raises(MissingParent) as caught:
        await store.write([ev("rr-p"), orphan])
    assert list(caught.value.indexes) == [1]
    assert (await store.query(AuditQuery(correlation_id="rr-p"))).total == 4


async def test_every_filter_and_pagination_newest_first(store: AuditStore) -> None:
    now = datetime.now(UTC)
    events = [
        ev("q-1", when=now - timedelta(hours=3), severity="critical", namespace="a"),
        ev("q-1", when=now - timedelta(hours=2), event_outcome="failure", namespace="b"),
        ev(
            "q-2",
            when=now - timedelta(hours=1),
            event_type="gateway.crd.created",
            event_category="gateway",
            event_data={"signal_name": "DiskFull", "n": 2},
        ),
        ev(
            "q-3",
            when=now - timedelta(days=2),
            event_category="security",
            event_type="security.access.denied",
        ),
    ]
    await store.write(events)
    ids = [e.event_id for e in events]

    async def found(**filters: object) -> list[str]:
        page = await store.query(AuditQuery(**filters))  # type: ignore[arg-type]
        return [row["event_id"] for row in page.data]

    assert await found() == [ids[2], ids[1], ids[0], ids[3]]
    assert await found(correlation_id="q-1") == [ids[1], ids[0]]
    assert await found(event_type="gateway.crd.created") == [ids[2]]
    assert await found(event_category="security") == [ids[3]]
    assert await found(event_outcome="failure") == [ids[1]]
    assert await found(severity="critical") == [ids[0]]
    assert await found(namespace="b") == [ids[1]]
    assert await found(since=now - timedelta(hours=2, minutes=30)) == [ids[2], ids[1]]
    assert await found(until=now - timedelta(hours=2, minutes=30)) == [ids[0], ids[3]]
    assert await found(detail_key="signal_name", detail_value="DiskFull") == [ids[2]]
    assert await found(detail_key="n", detail_value="1") == []  # numbers are not strings
    page = await store.query(AuditQuery(limit=2, offset=1))
    assert [row["event_id"] for row in page.data] == [ids[1], ids[0]]
    assert page.total == 4


async def test_unicode_and_nested_data_round_trip_and_verify(store: AuditStore) -> None:
    data = {"z": [1, 2.5, {"ü": "snow ☃"}], "a": {"b": None, "c": True}, "big": 10**15}
    event = ev("rr-u", event_data=data, duration_ms=12, is_sensitive=False, actor_ip="::1")
    await store.write([event])
    rows = await store.chain("rr-u")
    assert rows[0]["event_data"] == data
    assert rows[0]["is_sensitive"] is False
    assert verify("rr-u", rows).valid


async def test_concurrent_writers_never_fork_a_chain(store: AuditStore) -> None:
    import asyncio

    ids = ["rr-c1", "rr-c2", "rr-c3"]
    batches = [[ev(ids[(b + i) % 3]) for i in range(30)] for b in range(8)]
    await asyncio.gather(*(store.write(batch) for batch in batches))
    for correlation_id in ids:
        rows = await store.chain(correlation_id)
        assert len(rows) == 80
        assert verify(correlation_id, rows).valid


async def test_control_characters_are_stored_as_written_and_the_chain_holds(
    store: AuditStore,
) -> None:
    """An error message with a terminal's colour codes, a model's output with a C1 character:
    stored and read back as written, and hashed the same by the write and the check."""
    text = "\x1b[31mfailed\x1b[0m\x07 \x85 tab\tline\n"
    event = ev("rr-ctl", error_message=text, event_data={"output": text, "k\x1b": 1})
    await store.write([event, ev("rr-ctl")])
    rows = (await store.query(AuditQuery(correlation_id="rr-ctl"))).data
    [row] = [r for r in rows if r["event_id"] == event.event_id]
    assert row["error_message"] == text
    assert orjson.loads(row["event_data"]) == {"output": text, "k\x1b": 1}
    assert verify("rr-ctl", await store.chain("rr-ctl")).valid


async def test_many_chains_verify_as_each_does_alone(store: AuditStore) -> None:
    """`verify_many` (verify-all) reads chains in batches; its reports are `verify_stored`'s."""
    from signalgate.datastorage.store import VERIFY_BATCH, verify_many, verify_stored

    names = [f"rr-many-{i:04d}" for i in range(VERIFY_BATCH + 7)]  # two batches
    await store.write([ev(name) for name in names for _ in range(2)])
    await store.write([ev(names[3])])  # a chain written in two writes
    reports = [r async for r in verify_many(store, [*names, "rr-none"])]
    assert [r.correlation_id for r in reports] == [*names, "rr-none"]
    assert all(r.valid for r in reports[:-1])
    assert reports[3].events == 3 and reports[0].events == 2
    alone, _ = await verify_stored(store, "rr-none")
    assert reports[-1] == alone


async def _paged(store: AuditStore, correlation_id: str, size: int) -> list[ChainPage]:
    """Every page of a chain, up to and with the first empty one."""
    return await _paged_from(store, correlation_id, 0, size)


async def test_chain_pages_follow_the_write_order_across_page_boundaries(
    store: AuditStore,
) -> None:
    await store.write([ev("rr-p"), ev("rr-other"), ev("rr-p"), ev("rr-p"), ev("rr-p")])
    await store.write([ev("rr-other"), ev("rr-p"), ev("rr-p"), ev("rr-p")])
    whole = await store.chain("rr-p")
    pages = await _paged(store, "rr-p", 3)
    assert [len(page.rows) for page in pages] == [3, 3, 1, 0]
    assert [row["event_hash"] for page in pages for row in page.rows] == _hashes(whole)
    assert pages[-1].last_seq == pages[-2].last_seq  # an empty page stays where it was asked
    assert [len(page.rows) for page in await _paged(store, "rr-p", 7)] == [7, 0]


async def test_the_page_of_an_empty_chain_is_empty(store: AuditStore) -> None:
    assert await store.chain_page("nobody", 0, 10) == ChainPage([], 0)
    await store.write([ev("rr-e")])
    last = (await store.chain_page("rr-e", 0, 10)).last_seq
    assert await store.chain_page("rr-e", last, 10) == ChainPage([], last)


async def test_rows_appended_while_a_chain_is_paged_come_after_the_rows_read(
    store: AuditStore,
) -> None:
    await store.write([ev("rr-w") for _ in range(5)])
    first = await store.chain_page("rr-w", 0, 3)
    await store.write([ev("rr-w"), ev("rr-w")])
    rest = await _paged_from(store, "rr-w", first.last_seq, 3)
    paged = [row["event_hash"] for page in (first, *rest) for row in page.rows]
    assert paged == _hashes(await store.chain("rr-w"))
    assert sum(len(page.rows) for page in rest) == 4


def _hashes(rows: list[dict[str, Any]]) -> list[str]:
    return [row["event_hash"] for row in rows]


async def _paged_from(
    store: AuditStore, correlation_id: str, after_seq: int, size: int
) -> list[ChainPage]:
    pages = [await store.chain_page(correlation_id, after_seq, size)]
    while pages[-1].rows:
        pages.append(await store.chain_page(correlation_id, pages[-1].last_seq, size))
    return pages


class AppendingDuringRead:
    """The store, with one event appended to the chain after its first page is read: a
    busy Gateway writing while someone verifies."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self.appended = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def chain_page(self, correlation_id: str, after_seq: int, limit: int) -> ChainPage:
        page = await self.store.chain_page(correlation_id, after_seq, limit)
        if not self.appended:
            self.appended = True
            await self.store.write([ev(correlation_id)])
        return page


async def test_a_chain_appended_to_while_it_is_verified_in_pages_verifies_to_its_head(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from signalgate.datastorage import store as store_module

    monkeypatch.setattr(store_module, "VERIFY_PAGE", 2)
    await store.write([ev("rr-v") for _ in range(5)])
    appending = AppendingDuringRead(store)
    report, broken = await store_module.verify_stored(cast(AuditStore, appending), "rr-v")
    assert appending.appended
    assert (report.valid, report.events, broken) == (True, 5, None)
    assert (await store_module.verify_stored(store, "rr-v"))[0].events == 6


def _padded(correlation_id: str, pad: int) -> AuditEvent:
    return ev(correlation_id, event_data={"signal_name": "HighCPU", "pad": "x" * pad})


def _rows_within(sizes: list[int], budget: int) -> int:
    """How many rows a read of rows this size returns: each while those before it hold
    less than `budget` bytes of event_data."""
    taken = held = 0
    for size in sizes:
        if taken and held >= budget:
            break
        taken, held = taken + 1, held + size
    return taken


async def test_a_query_page_stops_at_its_byte_bound_and_the_rest_follows(
    store: AuditStore,
) -> None:
    """A page of large events would be hundreds of megabytes in memory: it ends at
    `page_bytes` of event_data (its first row always in), and `total` says more follow."""
    events = [_padded("rr-big", 1000 + 50 * i) for i in range(7)]
    await store.write(events)
    store.page_bytes = 2500
    sizes = [len(event.event_data_json.encode()) for event in reversed(events)]  # newest first
    expected = _rows_within(sizes, 2500)
    assert 1 < expected < 7
    first = await store.query(AuditQuery(correlation_id="rr-big", limit=100))
    assert (len(first.data), first.total) == (expected, 7)
    rest: list[dict[str, Any]] = []
    while len(first.data) + len(rest) < first.total:
        page = await store.query(
            AuditQuery(correlation_id="rr-big", limit=100, offset=len(first.data) + len(rest))
        )
        assert page.data, "a page past a cut must not be empty"
        rest.extend(page.data)
    ids = [row["event_id"] for row in [*first.data, *rest]]
    assert ids == [event.event_id for event in reversed(events)]
    store.page_bytes = 1  # one event larger than the bound is still answered, alone
    assert len((await store.query(AuditQuery(correlation_id="rr-big"))).data) == 1


async def test_chain_reads_cut_at_their_byte_bound_still_verify_every_row(
    store: AuditStore,
) -> None:
    from signalgate.datastorage.store import verify_many, verify_stored

    await store.write([_padded("rr-cut", 1200) for _ in range(9)])
    await store.write([_padded(f"rr-cut-{i}", 900) for i in range(5) for _ in range(2)])
    store.page_bytes = 3000
    page = await store.chain_page("rr-cut", 0, 100)
    assert page.cut and 1 < len(page.rows) < 9
    paged = await _paged(store, "rr-cut", 100)
    assert _hashes([row for page in paged for row in page.rows]) == _hashes(
        await store.chain("rr-cut")
    )
    assert not paged[-1].cut  # the end of the chain is not taken for a cut
    report, broken = await verify_stored(store, "rr-cut")
    assert (report.valid, report.events, broken) == (True, 9, None)
    names = ["rr-cut", *(f"rr-cut-{i}" for i in range(5))]
    chains = await store.chains(names)
    assert sum(len(rows) for rows in chains.values()) < 19  # one read, cut
    reports = [r async for r in verify_many(store, names)]
    assert [(r.correlation_id, r.valid, r.events) for r in reports] == [
        ("rr-cut", True, 9),
        *((f"rr-cut-{i}", True, 2) for i in range(5)),
    ]
