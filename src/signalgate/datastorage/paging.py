"""Reads bounded in bytes as well as rows: the rule, and the SQL both stores cut a read with.

A query page asks for up to 1,000 events and a chain check reads 1,000 rows at a time, but
an event's `event_data` may be 256 KiB: counted in rows alone, one such page was 256 MB in
the database driver and again in the answer, and four reads ran at once. So a read also
stops once the `event_data` of the rows before the next one reaches `PAGE_BYTES`. Its first
row is always returned (a read always moves on), so a read holds at most `PAGE_BYTES` plus
one event.

The cut is made in SQL, by the database, so the rows past it never reach this process (nor
SQLite's child process, nor its pipe to the service). A reader tells a cut page from the
end of what it asked for: the query API by its total (`has_more`), a chain check by
`ChainPage.cut` (`was_cut`).
"""

# ruff: noqa: S608 - the SQL is built from the stores' constant fragments; values are bound parameters

from __future__ import annotations

from collections.abc import Sequence

from signalgate.datastorage.columns import Row

PAGE_BYTES = 8 * 1024 * 1024

# the column the cut adds to every row it returns: the event_data bytes up to and with it
BYTES_THROUGH = "bytes_through"


def cut_by_bytes(inner: str, order: str, size: str, budget: str) -> str:
    """`inner`'s rows in `order` (columns of `inner`), each returned only while the rows
    before it hold less than `budget` (a bound parameter: `PAGE_BYTES` or a test's) bytes of
    `event_data`, measured by `size` (the dialect's byte length of `page.event_data`).

    A running sum, so the database streams the rows through it (a count of `inner`'s rows
    beside it held every row of the page at once, event_data and all, before the first)."""
    return (
        f"SELECT * FROM (SELECT sized.*, sum(row_bytes) OVER "
        f"(ORDER BY {order} ROWS UNBOUNDED PRECEDING) AS {BYTES_THROUGH} "
        f"FROM (SELECT page.*, {size} AS row_bytes FROM ({inner}) AS page) AS sized) AS cut "
        f"WHERE {BYTES_THROUGH} - row_bytes < {budget} ORDER BY {order}"
    )


def was_cut(rows: Sequence[Row], limit: int, budget: int) -> bool:
    """Whether a read of at most `limit` rows made with `cut_by_bytes` may have left rows
    out: it is short and reached `budget`. A short read that reached it at the very end of
    what there was says so too, so the reader's next read is empty: one read more, never a
    row missed."""
    return 0 < len(rows) < limit and int(rows[-1][BYTES_THROUGH]) >= budget
