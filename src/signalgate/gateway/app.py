"""The Gateway's API listener: signal routes, the RR API and the OpenAPI document.

Signal routes check, in this order (docs/gateway.md, "What a signal request goes through"):
route (404/405, before auth), auth, the audit trail refusing, Content-Type, body size, the
concurrency limit, `X-Timestamp`, then parse and decide under the processing deadline. Each
signal route is one line in `build_api_app` and a handler calling `_signal` with its
adapter's parse function (`adapters/`); every check above is `_signal`'s. Errors are raised as
`Problem`s and rendered by one handler; lower-layer errors (store, journal, deadline) are
translated to problems in `_translate`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from signalgate.audit.journal import FAILURE_RETRY_AFTER, JournalUnavailable
from signalgate.common.http import (
    JSON,
    api_app,
    json_response,
    read_body,
    require_media_type,
)
from signalgate.common.logging import SampledLog
from signalgate.common.problems import Problem, service_unavailable, validation_error
from signalgate.common.reads import ReadLimiter
from signalgate.gateway import responses
from signalgate.gateway.adapters.alertmanager import parse_webhook
from signalgate.gateway.adapters.kubernetes_event import parse_event
from signalgate.gateway.adapters.parsing import Freshness, PayloadError, check_fresh, parse_object
from signalgate.gateway.fingerprint import FINGERPRINT_PATTERN
from signalgate.gateway.openapi import openapi_document
from signalgate.gateway.pipeline import Outcome, ProcessingTimeout
from signalgate.gateway.responses import Rendered, rendered
from signalgate.gateway.retries import DecidedBefore, Kept
from signalgate.gateway.service import GatewayService
from signalgate.gateway.signal import AdapterItem, Ignored, Invalid, Signal
from signalgate.gateway.status_patch import parse_status_patch
from signalgate.kube.names import is_dns1123_label
from signalgate.remediation.model import PHASES, utcnow
from signalgate.remediation.store import (
    DEFAULT_PAGE,
    MAX_PAGE,
    Conflict,
    InvalidCursor,
    ListQuery,
    NotFound,
    StoreRefused,
    StoreUnavailable,
    TooLarge,
    decode_cursor,
)

# alerts of one webhook decided at once (beyond the store's pool size this only queues)
WEBHOOK_CONCURRENCY = 16
# full-size webhooks decided at once (their bytes together: any mix of sizes). A full one
# takes 3-5 s of one core here: more at once pass the processing deadline together (504,
# with part of each stored), and their alerts take ~55 MiB of memory each
FULL_WEBHOOKS_AT_ONCE = 2

log = logging.getLogger("signalgate.gateway")
refused_alerts = SampledLog(log)  # an invalid alert of a webhook: once in a while, with a count
# the latest unix time a datetime holds (9999-12-31): a later X-Timestamp is as far ahead
LAST_TIMESTAMP = 253_402_300_799

_FINGERPRINT_RE = re.compile(FINGERPRINT_PATTERN)
# ASCII digits only: str.isdigit() accepts "²", which int() refuses
_ASCII_INTEGER_RE = re.compile(r"^[0-9]{1,6}$")


class GatewayAPI:
    """Route handlers bound to one running `GatewayService`."""

    def __init__(self, service: GatewayService) -> None:
        self.service = service
        settings = service.settings
        self.max_body = settings.server.max_body_size
        self.max_inflight = settings.server.max_concurrent_requests
        self.timeout = settings.server.processing_timeout
        self.body_timeout = settings.server.body_read_timeout
        self.freshness = Freshness(
            tolerance=timedelta(seconds=settings.freshness.tolerance),
            future_skew=timedelta(seconds=settings.freshness.future_skew),
        )
        self.inflight = 0
        # a webhook's alerts take ~15 times its size in memory while decided: bodies being
        # decided are bounded together too, so that large webhooks at once cannot exhaust it
        self.max_inflight_bytes = FULL_WEBHOOKS_AT_ONCE * self.max_body
        self.inflight_bytes = 0
        self.decided_before = DecidedBefore()  # a failed webhook's decisions, for its retry
        # RR list pages (up to 500 RRs each; never signals, status patches or probes)
        self.reads = ReadLimiter(
            settings.server.max_concurrent_reads,
            settings.server.max_queued_reads,
            settings.server.read_queue_timeout,
            service.metrics.reads,
            service.lifecycle.closing,
        )

    # -- signal routes ---------------------------------------------------------------

    async def prometheus(self, request: Request) -> Response:
        return await self._signal(request, self._parse_prometheus, check_timestamp=True)

    async def kubernetes_event(self, request: Request) -> Response:
        return await self._signal(request, self._parse_event, check_timestamp=False)

    def _parse_prometheus(self, body: bytes) -> list[AdapterItem]:
        return parse_webhook(body, utcnow(), self.freshness, self.service.kinds)

    def _parse_event(self, body: bytes) -> list[AdapterItem]:
        return [parse_event(body, utcnow(), self.freshness, self.service.kinds)]

    async def _signal(
        self,
        request: Request,
        parse: Callable[[bytes], list[AdapterItem]],
        *,
        check_timestamp: bool,
    ) -> Response:
        await self.service.auth.authorize(request.headers.get("authorization"), "signals:write")
        if refused := self.service.signal_refusal():
            raise service_unavailable(
                f"{refused.message}; signals are refused, nothing was stored; retry later",
                refused.retry_after,
            )
        require_media_type(request.scope)
        # the slot is taken once the body is in: a slow sender holds no slot, only its timeout
        body = await read_body(request.scope, request.receive, self.max_body, self.body_timeout)
        if busy := self._busy(len(body)):
            # 503, not 429: Alertmanager retries a 5xx with backoff, but gives a 429 up
            # until the group's next flush (`group_interval`, five minutes by default)
            raise service_unavailable(f"{busy}; nothing was stored; retry shortly", 1)
        self.inflight += 1
        self.inflight_bytes += len(body)
        try:
            if check_timestamp:
                self._check_timestamp(request.headers.get("x-timestamp"))
            try:
                items = parse(body)
            except PayloadError as exc:
                raise validation_error(str(exc)) from exc
            deadline = asyncio.get_running_loop().time() + self.timeout
            if len(items) == 1 and isinstance(items[0], Invalid):
                raise validation_error(items[0].error)
            # a webhook's alerts are decided one after another, their events staged into
            # several journal groups: the commit is held to every group written since here
            mark = self.service.audit.mark()
            results = await self._process_all(items, deadline, body, mark)
            # durable before acknowledged: the answer waits for the audit events' fsync
            await self.service.audit.commit(mark)
            if len(items) == 1:
                outcome = results[0]
                if isinstance(outcome, str):  # its RR too large to store: as when oversized
                    raise validation_error(outcome)
                assert isinstance(outcome, Outcome)  # one alert: nothing kept for a retry
                status, answer = responses.single(outcome)
            else:
                status, answer = responses.multi(results)
            return json_response(status, answer)
        finally:
            self.inflight -= 1
            self.inflight_bytes -= len(body)

    def _busy(self, size: int) -> str:
        """Why a request of `size` body bytes cannot be decided now, or ""."""
        if self.inflight >= self.max_inflight:
            return (
                f"more than {self.max_inflight} signal requests in flight "
                "(server.maxConcurrentRequests)"
            )
        if self.inflight and self.inflight_bytes + size > self.max_inflight_bytes:
            return (
                f"more than {self.max_inflight_bytes:,} bytes of webhooks being decided "
                f"({FULL_WEBHOOKS_AT_ONCE} times server.maxBodySize)"
            )
        return ""

    async def _process_all(
        self, items: list[AdapterItem], deadline: float, body: bytes, mark: int = 0
    ) -> list[Outcome | str | Rendered]:
        """Every item's outcome, in input order (an invalid item's is its error). A large
        webhook's alerts are decided `WEBHOOK_CONCURRENCY` at a time, so they share the
        store's connections and its coalescing instead of waiting for each other.

        A failure fails the whole request (the first, in input order, decides the answer;
        Alertmanager retries the group), but never cuts a decision short: cancelling the
        alerts in flight left RRs created without their audit events. After a failure that
        a retry can cure (the store or the journal away, a deadline) the alerts not begun
        are left for that retry; after one it cannot (the store refused an RR as written)
        the others are decided, so one refused alert does not hold its group back. An alert
        whose RR the store refuses for its size is that alert's own result, as an oversized
        alert is (`_decide_one`).

        The alerts decided before a failure are answered as they were by the retry of the
        same body, which decides only the rest (`gateway.retries`): decided again, each was
        counted once more per retry. So is an alert whose decision was under way at the
        deadline (a write sent, its answer late), once that decision ends: a webhook of one
        alert too. Not when a journal write failed since they were decided (`mark`, the
        journal's mark when this request began): their events may be lost, so they are
        decided again."""
        before = self.decided_before.take(body, mark)
        if len(items) == 1:
            (item,) = items
            if isinstance(item, Invalid):
                return [item.error]
            kept = before.get(0)  # only a decision under way is kept for a lone alert
            try:
                late = kept if isinstance(kept, asyncio.Task) else None
                return [await self._decide_one(item, deadline, "", late)]
            except ProcessingTimeout as exc:
                if exc.late is not None:
                    self.decided_before.remember(body, {0: exc.late}, mark)
                raise
        results: list[Outcome | str | Rendered] = [""] * len(items)
        decided: set[int] = {i for i, k in before.items() if isinstance(k, Rendered)}
        under_way: dict[int, asyncio.Task[Outcome]] = {}  # at a deadline, for the retry
        failures: dict[int, Exception] = {}
        retried = False  # a failure a retry can cure came: what is not begun waits for it
        slots = asyncio.Semaphore(WEBHOOK_CONCURRENCY)

        async def decide(
            index: int, item: Signal | Ignored, late: asyncio.Task[Outcome] | None
        ) -> None:
            nonlocal retried
            async with slots:
                if retried:
                    if late is not None:
                        under_way[index] = late  # still the next retry's to wait for
                    return  # not begun, so not counted twice when the group comes again
                try:
                    results[index] = await self._decide_one(
                        item, deadline, f"alerts[{index}]: ", late
                    )
                    decided.add(index)
                except Exception as exc:  # raised below: the first, in input order
                    failures[index] = exc
                    retried = retried or not isinstance(exc, StoreRefused)
                    if isinstance(exc, ProcessingTimeout) and exc.late is not None:
                        under_way[index] = exc.late

        tasks = []
        for index, item in enumerate(items):
            kept = before.get(index)
            if isinstance(kept, Rendered):
                results[index] = kept
            elif isinstance(item, Invalid):
                metrics = self.service.metrics
                metrics.child(metrics.signals_parse_dropped, "invalid").inc()
                refused_alerts.log(
                    logging.INFO, "alert", "alert refused", {"detail": item.error[:300]}
                )
                results[index] = item.error
            else:
                tasks.append(asyncio.create_task(decide(index, item, kept)))
        await asyncio.gather(*tasks)
        if failures:
            kept_now: dict[int, Kept] = {i: rendered(results[i]) for i in decided}
            kept_now.update(under_way)
            self.decided_before.remember(body, kept_now, mark)
            raise failures[min(failures)]
        return results

    async def _decide_one(
        self,
        item: Signal | Ignored,
        deadline: float,
        where: str,
        late: asyncio.Task[Outcome] | None = None,
    ) -> Outcome | str:
        """One item's outcome; for a signal whose RR the store refuses for its size, the
        error naming it (`where` is its place in the webhook), as for an alert refused as
        oversized while parsing: the same on every retry, so never a 5xx. Answered 503, an
        alert of 200,000 '<' (1.2 MB as the API server writes it, twice in its RR) was sent
        again for ever, and its webhook's other alerts counted again each time.

        `late`: the item's decision a failed request of the same body left under way; its
        outcome is the item's, waited for until `deadline`, and the item is decided anew
        only if it failed (its failure audited when it did)."""
        if late is not None:
            await asyncio.wait({late}, timeout=deadline - asyncio.get_running_loop().time())
            if not late.done():
                raise ProcessingTimeout(late)
            if not late.cancelled() and late.exception() is None:
                return late.result()
        try:
            return await self.service.pipeline.process(item, deadline)
        except TooLarge as exc:
            error = f"{where}{exc}"
            refused_alerts.log(logging.INFO, "alert", "alert refused", {"detail": error[:300]})
            return error

    def _check_timestamp(self, value: str | None) -> None:
        """Replay protection: `X-Timestamp` (unix seconds) within the freshness window, the
        same window as an Event's timestamps (`check_fresh`)."""
        if value is None:
            return
        if not value.isascii() or not value.isdigit() or len(value) > 12:
            raise validation_error(
                f"X-Timestamp: {value[:40]!r} is not a base-10 integer of unix seconds"
            )
        try:
            sent = datetime.fromtimestamp(min(int(value), LAST_TIMESTAMP), UTC)
            check_fresh(sent, utcnow(), self.freshness, "X-Timestamp")
        except PayloadError as exc:
            raise validation_error(f"{exc} (a possible replay)") from exc

    # -- RemediationRequest API -------------------------------------------------------

    async def list_rrs(self, request: Request) -> Response:
        await self.service.auth.authorize(request.headers.get("authorization"), "remediations:read")
        query = _list_query(request.query_params)

        async def read() -> Response:  # the answer is built in the read's place too
            try:
                page = await self.service.store.list(query)
            except InvalidCursor as exc:
                raise validation_error(f"cursor: {exc}") from exc
            return json_response(
                200, {"items": [rr.to_json() for rr in page.items], "nextCursor": page.next_cursor}
            )

        return await self.reads.run(request.receive, read)

    async def get_rr(self, request: Request) -> Response:
        await self.service.auth.authorize(request.headers.get("authorization"), "remediations:read")
        name = request.path_params["name"]
        rr = await self.service.store.get(name)
        if rr is None:
            raise NotFound(f"RemediationRequest {name!r} not found")
        return json_response(200, rr.to_json())

    async def patch_status(self, request: Request) -> Response:
        await self.service.auth.authorize(
            request.headers.get("authorization"), "remediations:write"
        )
        require_media_type(request.scope, (JSON, "application/merge-patch+json"))
        body = await read_body(request.scope, request.receive, self.max_body, self.body_timeout)
        try:
            patch = parse_status_patch(parse_object(body))
        except PayloadError as exc:
            raise validation_error(str(exc)) from exc
        rr = await self.service.store.update_status(request.path_params["name"], patch)
        return json_response(200, rr.to_json())

    async def openapi(self, request: Request) -> Response:
        return json_response(200, openapi_document())


# the RR list's query parameters (the OpenAPI document lists the same, a test holds it)
LIST_PARAMETERS = ("fingerprint", "phase", "namespace", "active", "limit", "cursor")


def _list_query(params: Any) -> ListQuery:
    for key in params:
        if key not in LIST_PARAMETERS:
            raise validation_error(
                f"{key}: unknown query parameter (allowed: {', '.join(LIST_PARAMETERS)})"
            )
        if len(params.getlist(key)) > 1:
            raise validation_error(f"{key}: given more than once; give it once")
    limit_text = params.get("limit", str(DEFAULT_PAGE))
    if not _ASCII_INTEGER_RE.match(limit_text) or not 1 <= int(limit_text) <= MAX_PAGE:
        raise validation_error(
            f"limit: {limit_text[:20]!r} must be an integer from 1 to {MAX_PAGE}"
        )
    active_text = params.get("active")
    if active_text not in (None, "true", "false"):
        raise validation_error(f"active: {active_text[:20]!r} must be true or false")
    fingerprint = params.get("fingerprint")
    if fingerprint is not None and not _FINGERPRINT_RE.match(fingerprint):
        raise validation_error("fingerprint: must be 64 lowercase hex characters")
    # a filter no RR can match is a mistake, not an empty page
    phase = params.get("phase") or None
    if phase is not None and phase not in PHASES:
        raise validation_error(f"phase: {phase[:40]!r} is not a phase (one of {', '.join(PHASES)})")
    namespace = params.get("namespace")
    if namespace and not is_dns1123_label(namespace):
        raise validation_error(
            f"namespace: {namespace[:70]!r} is not a namespace name (a DNS-1123 label)"
        )
    return ListQuery(
        fingerprint=fingerprint,
        phase=phase,
        namespace=namespace,
        active=None if active_text is None else active_text == "true",
        limit=int(limit_text),
        cursor=_cursor(params.get("cursor") or None),
    )


def _cursor(cursor: str | None) -> str | None:
    """Refuse a cursor whose time no store can compare (the store decodes it again)."""
    if cursor is None:
        return None
    try:
        created_at, _ = decode_cursor(cursor)
        created_at.astimezone(UTC)
    except (InvalidCursor, OverflowError) as exc:
        raise validation_error(
            "cursor: not one this API returned; use nextCursor from a previous page"
        ) from exc
    return cursor


def _translate(exc: Exception) -> Problem | None:
    """The Gateway's lower-layer errors → problems: the one place these codes are decided."""
    if isinstance(exc, StoreUnavailable):
        return service_unavailable("the remediation store is unavailable; retry later")
    if isinstance(exc, JournalUnavailable):  # the journal then refuses for its hold
        return service_unavailable(f"{exc}; retry later", FAILURE_RETRY_AFTER)
    if isinstance(exc, StoreRefused):  # 5xx: a sender retries, and succeeds once fixed
        return Problem(500, "internal-error", f"the remediation store refused the RR: {exc}")
    if isinstance(exc, ProcessingTimeout):
        return Problem(504, "gateway-timeout", "processing deadline exceeded")
    if isinstance(exc, NotFound):
        return Problem(404, "not-found", str(exc))  # the store names the RR
    if isinstance(exc, Conflict):
        return Problem(409, "conflict", str(exc))
    return None


def build_api_app(service: GatewayService) -> ASGIApp:
    api = GatewayAPI(service)
    signals = [
        Route("/api/v1/signals/prometheus", api.prometheus, methods=["POST"]),
        Route("/api/v1/signals/kubernetes-event", api.kubernetes_event, methods=["POST"]),
    ]
    return api_app(
        [
            *signals,
            Route("/api/v1/remediation-requests", api.list_rrs, methods=["GET"]),
            Route("/api/v1/remediation-requests/{name}", api.get_rr, methods=["GET"]),
            Route(
                "/api/v1/remediation-requests/{name}/status", api.patch_status, methods=["PATCH"]
            ),
            Route("/openapi.json", api.openapi, methods=["GET"]),
        ],
        _translate,
        (
            StoreUnavailable,
            StoreRefused,
            ProcessingTimeout,
            NotFound,
            Conflict,
            JournalUnavailable,
        ),
        cors_origins=service.settings.server.cors_allowed_origins,
        direct=signals,
        observer=service.metrics.requests,
    )
