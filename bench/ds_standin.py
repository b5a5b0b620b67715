"""A DataStorage stand-in: takes the Gateway's audit batches at once and only counts them.

`bench/ingest.py --audit standin` delivers a journal case's events here instead of to a
DataStorage process. The Gateway does all of its own audit work as with `journal` (builds
and journals every event, waits for the journal's write before answering, relays the
journal), but nothing validates, hashes or stores the events and no PostgreSQL writes them:
the row's share of audit off is what the audit trail costs the Gateway itself, and the gap
to the `journal` row is what DataStorage costs on the same cores (docs/performance.md,
"Where the time goes"). The benchmark still checks that every event arrived, by type.

    uvicorn bench.ds_standin:app --loop uvloop --http httptools
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson

from signalgate.audit.relay import BATCH_PATH, CAPABILITIES_PATH
from signalgate.gateway import audit_events as ev

Scope = dict[str, Any]

COUNTS_PATH = "/counts"  # the events taken so far, by type (for the benchmark's check)
# what the relay asks for before it sends: every type the Gateway emits
EVENT_TYPES = list(ev.EVENT_TYPES)

taken: Counter[str] = Counter()


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path = scope["path"]
    if path == BATCH_PATH and scope["method"] == "POST":
        events = orjson.loads(body)
        taken.update(str(event.get("event_type")) for event in events)
        await _answer(send, 201, {"stored": len(events)})
    elif path == CAPABILITIES_PATH:
        await _answer(send, 200, {"eventTypes": EVENT_TYPES})
    elif path == COUNTS_PATH:
        await _answer(send, 200, dict(taken))
    else:
        await _answer(send, 404, {"detail": f"{path}: not served by the stand-in"})


async def _answer(send: Any, status: int, document: Any) -> None:
    body = orjson.dumps(document)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
