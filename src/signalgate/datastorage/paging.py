"""Reads bounded in bytes as well as rows: the rule, and the SQL both stores cut a read with.

A query page asks for up to 1,000 events and a chain check reads 1,000 rows at a time, but
an event's `event_data` may be 256 KiB: counted in rows alone, one such page was 256 MB in
the database driver and again in the answer, and four reads ran at once. So a read also
stops once the `event_data` of the rows before the next one reaches `PAGE_BYTES`. Its first
row is always returned (a read always moves on), so a read holds at most `PAGE_BYTES` plus
one event.

The cut is made in SQL, by the database, so the rows past it never reach this process (nor
SQLite's child process, nor its pipe to the service). A reader tells a cut page from the
end of what it asked for by `page_rows`, the rows the read had before the cut: the query
API by its total (`has_more`), a chain check by `ChainPage.cut`.
"""

# ruff: noqa: S608 - the SQL is built from the stores' constant fragments; values are bound parameters

from __future__ import annotations

from collections.abc import Sequence

from signalgate.datastorage.columns import Row

PAGE_BYTES = 8 * 1024 * 1024

# the columns the cut adds to every row it returns
PAGE_ROWS = "page_rows"


def cut_by_bytes(inner: str, order: str, size: str, budget: str) -> str:
    """`inner`'s rows in `order` (columns of `inner`), each returned only while the rows
    before it hold less than `budget` (a bound parameter: `PAGE_BYTES` or a test's) bytes of
    `event_data`, measured by `size` (the dialect's byte length of `page.event_data`).

    Each row also carries `page_rows`: how many rows `inner` had."""
    return (
        f"SELECT * FROM (SELECT page.*, count(*) OVER () AS {PAGE_ROWS}, "
        f"sum({size}) OVER (ORDER BY {order} ROWS UNBOUNDED PRECEDING) - {size} AS bytes_before "
        f"FROM ({inner}) AS page) AS cut WHERE bytes_before < {budget} ORDER BY {order}"
    )


def was_cut(rows: Sequence[Row]) -> bool:
    """Whether a read made with `cut_by_bytes` left rows out."""
    return bool(rows) and len(rows) < int(rows[0][PAGE_ROWS])
