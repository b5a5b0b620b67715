"""A webhook's alerts decided before its request failed, kept for the retry of that body.

A webhook's alerts are decided one by one (`WEBHOOK_CONCURRENCY` at a time). When a failure
a retry can cure (the deadline, the store away) ends the request, the alerts decided by
then are stored and counted, and the request is answered 5xx so that Alertmanager sends the
group again — the same bytes. Deciding them again counted each once more per retry, and a
webhook too large to decide within `server.processingTimeout` (thousands of new RRs in
Kubernetes mode, where each is an API write) spent every retry on its first alerts and
never reached the last ones.

So the alerts decided before the failure are remembered by the body's digest, and the next
request with those bytes answers them as they were and decides only the rest. Remembered
only after a failure, taken by the next request with that body, and for at most
`KEPT_SECONDS`: a later notification with the same bytes (a `repeat_interval`) is a new
occurrence of each alert, as before. Per process: a retry that reaches another replica
decides every alert again, as before this existed.

An alert whose decision was still under way at the deadline (a status write sent to the
API server, its answer late) is kept too, as that decision: the retry waits for it (under
its own deadline) and answers its outcome, and decides the alert again only if it failed.
Decided again at once, a write that had landed after the 504 was counted a second time, a
single-alert webhook's too (an outside check against a slowed API server).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping

from signalgate.common.ttlcache import TTLCache
from signalgate.gateway.pipeline import Outcome
from signalgate.gateway.responses import Rendered

# an alert's answer, or its decision still under way when its request failed
Kept = Rendered | asyncio.Task[Outcome]

# how long a failed webhook's decisions wait for its retry (Alertmanager retries a group
# within its group_interval, five minutes by default)
KEPT_SECONDS = 300.0
# failed webhooks remembered at once, the oldest going first: a full one's answers (5,500
# alerts) take ~2.8 MB, so at most ~23 MB in all
KEPT_WEBHOOKS = 8


class DecidedBefore:
    """Body digest → the answers of the alerts decided before its request failed, and the
    decisions under way when it did (by index), with the audit journal's `mark()` from
    before they were decided. A body is hashed only when something is kept, or to be kept:
    not on every webhook."""

    def __init__(self) -> None:
        self._kept: TTLCache[tuple[dict[int, Kept], int]] = TTLCache(KEPT_WEBHOOKS)

    def take(self, body: bytes, mark: int = 0) -> dict[int, Kept]:
        """The decisions a failed request with this body made; forgotten here, so that only
        one retry answers from them (a second failure remembers them again). None when a
        journal write failed since they were made (`mark`, the journal's mark now, differs
        from theirs): their audit events may be among the lost, and answering them as
        decided would acknowledge signals without their events — they are decided again
        (counted once more, as any retry of a failed write is)."""
        if not len(self._kept):
            return {}
        kept = self._kept.pop(hashlib.sha256(body).digest())
        if kept is None or kept[1] != mark:
            return {}
        return kept[0]

    def remember(self, body: bytes, decided: Mapping[int, Kept], mark: int = 0) -> None:
        if decided:
            self._kept.put(hashlib.sha256(body).digest(), (dict(decided), mark), KEPT_SECONDS)
