"""The stored row layout both stores share, and the conversion of a row back to fields."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import orjson

from signalgate.datastorage.chain import CANONICAL_FIELDS, format_timestamp

if TYPE_CHECKING:
    from signalgate.datastorage.store import PlannedRow

# Every column we write, in insert order: the request fields, then the chain bookkeeping.
COLUMNS: tuple[str, ...] = (*CANONICAL_FIELDS, "event_date", "previous_event_hash", "event_hash")
SELECT_LIST = ", ".join(COLUMNS)


def column_values(planned: PlannedRow, native: Mapping[str, Any]) -> tuple[Any, ...]:
    """A planned row's values in `COLUMNS` order: the request fields, `event_data` as its
    stored text, the chain links; `native` overrides columns a store keeps in its own type
    (PostgreSQL's timestamp and date, SQLite's date as text)."""
    event = planned.event
    values = {
        **event.fields,
        "event_data": event.event_data_json,
        "previous_event_hash": planned.previous_event_hash,
        "event_hash": planned.event_hash,
        **native,
    }
    return tuple(map(values.get, COLUMNS))  # in C: a generator was a third of the call


class Row(Protocol):
    """A database row by column name (asyncpg `Record`, `sqlite3.Row`)."""

    def __getitem__(self, key: str, /) -> Any: ...


def row_to_event(row: Row, *, event_data_text: bool = False) -> dict[str, Any]:
    """A stored row → the event's fields as read (what `chain.canonical` re-hashes).

    Null columns are left out, so the dict hashes exactly as the request fields did.
    `event_data_text`: keep `event_data` as its stored JSON text, for an answer that embeds
    it as it is (`stored_event_data`); parsing a page of events to serialise them again was
    nearly all of a query's CPU, and the parsed values several times the text's memory.
    """
    event: dict[str, Any] = {}
    for name in COLUMNS:
        value = row[name]
        if value is None:
            continue
        if name == "event_data" and isinstance(value, str):
            if not event_data_text:
                value = json.loads(value)
        elif name == "is_sensitive":
            value = bool(value)
        elif isinstance(value, datetime):
            value = format_timestamp(value)
        elif isinstance(value, date):
            value = value.isoformat()
        elif not isinstance(value, str | int | float | bool | dict | list):
            value = str(value)  # uuid.UUID
        event[name] = value
    return event


class NotAnObject(NamedTuple):
    """A stored `event_data` that is no JSON object: an SQLite file edited behind the
    service's back (PostgreSQL's `json` column holds only valid JSON). Answered as its text,
    a JSON string, so the page around it stays readable; its chain reports the row broken."""

    text: str


def stored_event_data(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event read with `event_data_text`, its `event_data` text as an `orjson.Fragment`,
    which orjson writes as it is: into a query answer, and into the canonical form a chain
    check hashes. The text is what the write stored and hashed (the canonical JSON of a
    validated object; PostgreSQL's `json` column keeps it byte for byte), so nothing is
    parsed to be serialised again, and a changed byte of it is a changed hash."""
    data = event.get("event_data")
    if isinstance(data, NotAnObject):
        return {**event, "event_data": data.text}
    if not isinstance(data, str):
        return dict(event)
    return {**event, "event_data": orjson.Fragment(data)}


def stored_chains(chains: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """`stored_event_data` of every event of chains read with `event_data_text`."""
    return {name: [stored_event_data(event) for event in events] for name, events in chains.items()}


def rows_by_chain(
    rows: Iterable[Row], *, event_data_text: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """Rows (in write order within each chain) → each correlation id's events, as read."""
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        event = row_to_event(row, event_data_text=event_data_text)
        found.setdefault(event["correlation_id"], []).append(event)
    return found
