"""The relay: delivers the journal to DataStorage in order, one batch at a time.

In order per correlation id because there is one relay per journal and it reads the journal
front to back, sending the next batch only once the previous one is settled. Idempotent
because every event carries its own `event_id`: a batch resent after a crash or a lost
answer is stored once. Once a batch is settled the journal's cursor moves past it.

Answers, and why: 201/202 delivered (on 202 DataStorage's own queue holds them); 400 drops
only the items DataStorage's `field_errors` name and resends the rest; a 400 that names no
item is narrowed down one event at a time, so a refusal never takes valid events with it
(another vendor's DataStorage refuses a whole batch for one unknown event type); 409 is
resolved event by event; 413 halves the batch; 401/403 and everything else are retried with
backoff, since they need a person or time, not a different request.

Event types: our extension types (resolved, rejected) go only to a DataStorage that lists
them at `GET /api/v1/audit/capabilities` (`{"eventTypes": [...]}`); a DataStorage without
that endpoint gets them in the log instead. The relay asks before its first delivery.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
from prometheus_client import Counter

from signalgate.audit.journal import Entry, Journal, Slice
from signalgate.audit.settings import DeliverySettings
from signalgate.common.audit import MAX_EVENT_AGE

log = logging.getLogger("signalgate.audit")

BATCH_PATH = "/api/v1/audit/events/batch"
CAPABILITIES_PATH = "/api/v1/audit/capabilities"
# a rotated (service-account) token applies within this long, or at once after a 401
TOKEN_REFRESH_SECONDS = 10.0


class Relay:
    def __init__(
        self,
        journal: Journal,
        settings: DeliverySettings,
        extension_types: frozenset[str],
        dropped: Counter,
        service: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        assert settings.url is not None
        self._journal = journal
        self._settings = settings
        self._extensions = extension_types
        self._dropped = dropped
        self._service = service
        # (loop time read, token): the token file is read again after TOKEN_REFRESH_SECONDS
        # or a 401, not once per batch
        self._token: tuple[float, str] | None = None
        verify: ssl.SSLContext | bool = True
        if settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(settings.ca_file))
        self._client = httpx.AsyncClient(
            base_url=settings.url.rstrip("/"),
            timeout=settings.timeout,
            transport=transport,
            verify=verify,
        )
        self.advertised: frozenset[str] | None = None  # None: not asked successfully yet
        self.reachable: bool | None = None
        self.last_error = ""
        self.delivered = 0

    async def close(self) -> None:
        await self._client.aclose()

    async def check_token(self) -> None:
        """At start: a `datastorage.tokenFile` without a sendable token is logged and shown in
        /readyz's audit check now, not first at the first delivery (which an idle Gateway may
        not attempt for hours). Not a refusal: the file is read again at each retry."""
        if self._settings.token_file is None:
            return
        try:
            await asyncio.to_thread(_read_token, self._settings.token_file)
        except TokenUnavailable as exc:
            self._failed(str(exc))

    async def run(self) -> None:
        """Deliver forever (cancelled by the sink's `stop()`). A failure of the journal's
        own files (a read, or the cursor's write after a delivery) is retried with the same
        backoff as a failed delivery: the events stay in the journal, and the relay must
        outlive a disk that fails for a while."""
        delays = self._backoff()
        piece: Slice | None = None
        while True:
            try:
                if piece is None:
                    piece = await self._next()
                    if piece is None:
                        continue
                if await self._deliver(piece):
                    await self._journal.confirm(piece)
                    piece = None
                    delays = self._backoff()
                    continue
            except OSError as exc:
                piece = None  # the cursor did not move: read (and sent) again, stored once
                self._journal_failed(exc)
            await asyncio.sleep(next(delays))

    async def deliver_all(self) -> None:
        """Deliver until the journal is empty, retrying with backoff: for a journal nothing
        appends to any more (a worker's, after `server.workers` went down)."""
        for delay in self._backoff():
            try:
                if await self.drain():
                    return
            except OSError as exc:
                self._journal_failed(exc)
            await asyncio.sleep(delay)

    def _backoff(self) -> Iterator[float]:
        """Waits between failed deliveries: `backoffInitial`, doubling up to `backoffMax`."""
        delay = self._settings.backoff_initial
        while True:
            yield delay
            delay = min(delay * 2, self._settings.backoff_max)

    async def drain(self) -> bool:
        """Deliver until the journal is empty or a delivery fails; True when empty."""
        while self._journal.backlog_events:
            piece = await self._journal.read(self._settings.batch_size)
            if not piece.lines:
                return True  # nothing readable left (the count was ahead of the file)
            if not await self._deliver(piece):
                return False
            await self._journal.confirm(piece)
        return True

    async def _next(self) -> Slice | None:
        """The next batch: at once when a full batch waits, else once `flushInterval` has
        passed since events were first waiting (a busy Gateway sends full batches, not one
        per journal write; an idle one still delivers within one interval)."""
        journal, batch_size = self._journal, self._settings.batch_size
        if not journal.backlog_events:
            await journal.wait_appended(self._settings.flush_interval)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.flush_interval
        while 0 < journal.backlog_events < batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await journal.wait_appended(remaining, backlog=batch_size)
        if not journal.backlog_events:
            return None
        limit = min(self._settings.batch_size, self._settings.buffer_size)
        return await self._journal.read(limit)

    # -- one batch ---------------------------------------------------------------------------

    async def _deliver(self, piece: Slice) -> bool:
        """True when every event of `piece` is settled: delivered, or dropped for good.

        Settled events leave `piece.entries` at once, so a retry resends only the rest.
        """
        if piece.entries and not await self._know_capabilities():
            return False
        piece.entries = self._sendable(piece.entries)
        chunk = len(piece.entries)
        while piece.entries:
            part = piece.entries[:chunk]
            try:
                answer = await self._post(part)
            except httpx.HTTPError as exc:
                return self._failed(f"{type(exc).__name__}: {exc}")
            except TokenUnavailable as exc:
                return self._failed(str(exc))
            status = answer.status_code
            if status in (201, 202):
                del piece.entries[: len(part)]
                self._delivering()
                self.delivered += len(part)
            elif status == 400:
                named = _named_items(answer, len(part))
                if named:
                    self._drop(len(named), "rejected", _why(answer))
                    keep = [e for i, e in enumerate(part) if i not in named]
                    piece.entries[: len(part)] = keep
                elif len(part) > 1:
                    chunk = 1  # find the refused one without dropping the others
                else:
                    self._drop(1, "rejected", _why(answer))
                    del piece.entries[0]
            elif status == 409 and len(part) > 1:
                chunk = 1
            elif status == 409:
                self._drop(1, "conflict", _why(answer))
                del piece.entries[0]
            elif status == 413 and len(part) > 1:
                chunk = len(part) // 2
            else:
                return self._failed(f"DataStorage answered {status}: {_why(answer)}")
        return True

    def _sendable(self, entries: list[Entry]) -> list[Entry]:
        """Drop expired events; log (not send) extension types DataStorage does not list."""
        oldest = datetime.now(UTC) - MAX_EVENT_AGE
        kept = []
        for entry in entries:
            kind = entry.event_type
            if kind in self._extensions and kind not in (self.advertised or frozenset()):
                event = entry.event()
                log.info(
                    "audit event not sent: DataStorage does not list its type",
                    extra={
                        "event_type": kind,
                        "event_id": event.get("event_id"),
                        "correlation_id": event.get("correlation_id"),
                        "event": event,
                    },
                )
                continue
            if _timestamp(entry.timestamp) < oldest:
                self._drop(1, "expired", "older than DataStorage accepts")
                continue
            kept.append(entry)
        return kept

    async def _know_capabilities(self) -> bool:
        """Ask DataStorage once which event types it accepts; False while it cannot answer."""
        if self.advertised is not None:
            return True
        try:
            answer = self._seen(
                await self._client.get(CAPABILITIES_PATH, headers=await self._headers())
            )
        except httpx.HTTPError as exc:
            return self._failed(f"capabilities: {type(exc).__name__}: {exc}")
        except TokenUnavailable as exc:
            return self._failed(str(exc))
        if answer.status_code == 200:
            try:
                types = answer.json().get("eventTypes")
            except (ValueError, AttributeError):
                types = None
            if isinstance(types, list):
                self.advertised = frozenset(str(t) for t in types)
                return True
        if answer.status_code in (401, 403, 429) or answer.status_code >= 500:
            return self._failed(f"capabilities: DataStorage answered {answer.status_code}")
        # no such endpoint (another vendor's DataStorage): it lists no extension types
        log.warning(
            "DataStorage lists no event types; extension events are logged, not sent",
            extra={"status": answer.status_code, "types": sorted(self._extensions)},
        )
        self.advertised = frozenset()
        return True

    async def _post(self, entries: Sequence[Entry]) -> httpx.Response:
        # the events as journaled, joined into a JSON array: nothing is parsed or re-encoded
        body = b"[" + b",".join([entry.line for entry in entries]) + b"]"
        headers = {**await self._headers(), "Content-Type": "application/json"}
        return self._seen(await self._client.post(BATCH_PATH, content=body, headers=headers))

    def _seen(self, answer: httpx.Response) -> httpx.Response:
        if answer.status_code == 401:
            self._token = None  # a rotated token: read the file again on the next try
        return answer

    async def _headers(self) -> dict[str, str]:
        if self._settings.token_file is None:
            return {}
        now = asyncio.get_running_loop().time()
        if self._token is None or now - self._token[0] > TOKEN_REFRESH_SECONDS:
            token = await asyncio.to_thread(_read_token, self._settings.token_file)
            self._token = (now, token)
        return {"Authorization": f"Bearer {self._token[1]}"}

    def _journal_failed(self, exc: OSError) -> None:
        """The journal's own files failed (a read, or the cursor's write): retried later."""
        log.error(
            "audit journal unreadable or cursor not saved; will retry", extra={"error": str(exc)}
        )
        self.last_error = f"journal: {exc}"

    def _delivering(self) -> None:
        """A batch was taken: the last error is history (/readyz showed it for good)."""
        if self.reachable is False:
            log.info("audit delivery recovered", extra={"recovered_from": self.last_error})
        self.reachable = True
        self.last_error = ""

    def _failed(self, error: str) -> bool:
        if self.reachable is not False or error != self.last_error:
            log.warning("audit delivery failed; will retry", extra={"error": error})
        self.reachable = False
        self.last_error = error
        return False

    def _drop(self, count: int, reason: str, detail: str) -> None:
        self._dropped.labels(self._service, reason).inc(count)
        log.error(
            "audit events dropped", extra={"count": count, "reason": reason, "detail": detail}
        )


# what a header value can carry as one bearer token: visible ASCII, no space (RFC 6750's
# token68 and more, so a hand-made static token with other punctuation still works)
_BEARER = re.compile(r"[\x21-\x7e]+")


class TokenUnavailable(Exception):
    """`datastorage.tokenFile` holds no token that can be sent (missing, empty, unreadable,
    or not one header value): the message names the setting, the path and which."""


def _read_token(path: Path) -> str:
    """Read again every TOKEN_REFRESH_SECONDS: rotated (service-account) tokens apply without
    a restart. A file without a sendable token raises `TokenUnavailable`, and nothing is
    sent: an empty token went out as `Bearer ` and failed in the HTTP client with a message
    naming neither the setting nor the file. It is not refused at start: the relay reads it
    again at every retry, so a token written (or a projected one mounted) later is used."""
    where = f"datastorage.tokenFile '{path}'"
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise TokenUnavailable(f"{where} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise TokenUnavailable(f"{where} is not text") from None
    if not token:
        raise TokenUnavailable(f"{where} is empty: there is no token to send DataStorage")
    if not _BEARER.fullmatch(token):
        # never sent: a newline would end the header, other bytes are refused by the client
        raise TokenUnavailable(
            f"{where} holds characters a bearer token cannot (one token of visible ASCII)"
        )
    return token


# bounds what an answer's body puts in a log line and in /readyz's last_error
WHY_CHARS = 1000


def _why(answer: httpx.Response) -> str:
    """What DataStorage said, for the log: its problem document's `detail` (which names the
    field, or the scope a token lacks) whole, else the start of the body."""
    try:
        detail = answer.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = detail if isinstance(detail, str) and detail else answer.text
    return text[:WHY_CHARS]


def _named_items(answer: httpx.Response, size: int) -> set[int]:
    """Which items of a 400 batch DataStorage named by index (`"<index>.<field>"` keys)."""
    try:
        errors = answer.json().get("field_errors") or {}
    except (ValueError, AttributeError):
        return set()
    if not isinstance(errors, dict):
        return set()
    named = {int(head) for key in errors if (head := str(key).split(".", 1)[0]).isdecimal()}
    return {index for index in named if index < size}


def _timestamp(value: str) -> datetime:
    """The event's time, or now when it has none DataStorage could read (it will say why)."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return datetime.now(UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)
