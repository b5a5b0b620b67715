"""The DataStorage API listener: write, query and verify audit events, and `/openapi.json`.

Write routes check, in order: route (404/405, before auth), auth (`audit:write`),
Content-Type, body size (413), JSON, then the whole batch; only then is anything written.
Errors are raised and rendered by one handler; lower-layer errors are translated to
problems in `_translate` and nowhere else.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from signalgate.common.http import (
    api_app,
    json_response,
    read_body,
    require_media_type,
)
from signalgate.common.ops import probe_routes
from signalgate.common.problems import Problem, service_unavailable, validation_error
from signalgate.common.reads import ReadLimiter
from signalgate.common.text import AUDIT_TEXT, json_error
from signalgate.datastorage.capabilities import CAPABILITIES_PATH, capabilities_document
from signalgate.datastorage.columns import stored_event_data
from signalgate.datastorage.errors import (
    Conflict,
    ForeignParent,
    MissingParent,
    ParentsUnconfirmed,
    StoreUnavailable,
)
from signalgate.datastorage.events import (
    CATEGORIES,
    RESERVED_CATEGORIES,
    AuditEvent,
    BatchSizeError,
    InvalidEvents,
    validate_batch,
    validate_event,
)
from signalgate.datastorage.openapi import openapi_document
from signalgate.datastorage.query import InvalidParameter, parse_query
from signalgate.datastorage.service import DataStorageService
from signalgate.datastorage.store import verify_stored
from signalgate.datastorage.verification import kubernaut_verification
from signalgate.datastorage.writer import (
    QUEUE_FULL_RETRY_AFTER,
    EventsLost,
    QueueFull,
    WriteOutcome,
    Written,
)

# full-size write bodies decided at once (their bytes together: any mix of sizes). A 5 MiB
# batch of wide events takes about a second of one core to parse, validate and hash, during
# which the event loop serves nothing else: sixteen at once starved the other requests' body
# reads into 408s and the probes past their timeouts (an outside check). Over the bound the
# answer is 503 with Retry-After at once, before any of that work.
BODIES_AT_ONCE = 4


class DataStorageAPI:
    """Route handlers bound to one running `DataStorageService`."""

    def __init__(self, service: DataStorageService) -> None:
        self.service = service
        self.max_body = service.settings.server.max_body_size
        self.body_timeout = service.settings.server.body_read_timeout
        self.max_batch = service.settings.batch.max_size
        self.max_inflight_bytes = BODIES_AT_ONCE * self.max_body
        self.inflight_bytes = 0  # of the write bodies being decided
        server = service.settings.server
        # query pages and chain checks (never writes or probes): common.reads
        self.reads = ReadLimiter(
            server.max_concurrent_reads,
            server.max_queued_reads,
            server.read_queue_timeout,
            service.metrics.reads,
            service.lifecycle.closing,
        )

    async def events(self, request: Request) -> Response:
        """One path, two methods: so a 405 elsewhere lists both in `Allow`."""
        if request.method == "POST":
            return await self.write_one(request)
        return await self.query(request)

    async def write_one(self, request: Request) -> Response:
        allowed = await self._writer(request)
        async with self._payload(request) as payload:
            return await self._write_one(payload, allowed)

    async def _write_one(self, payload: Any, allowed: frozenset[str] | None) -> Response:
        try:
            event = validate_event(payload, datetime.now(UTC))
        except InvalidEvents as exc:
            raise _invalid(exc) from None
        self._check_categories([event], allowed)
        try:
            outcome = await self.service.writer.write([event])
        except (MissingParent, ForeignParent) as exc:
            raise _parent_problem(exc, single=True) from None
        if outcome.written is Written.QUEUED:
            return _accepted(outcome)
        body = {
            "event_id": event.event_id,
            "event_timestamp": event.fields["event_timestamp"],
            "message": "audit event stored",
        }
        return json_response(201, body)

    async def write_batch(self, request: Request) -> Response:
        allowed = await self._writer(request)
        async with self._payload(request) as payload:
            return await self._write_batch(payload, allowed)

    async def _write_batch(self, payload: Any, allowed: frozenset[str] | None) -> Response:
        try:
            events = validate_batch(payload, datetime.now(UTC), self.max_batch)
        except BatchSizeError as exc:
            raise Problem(400, "batch-size-exceeded", str(exc)) from None
        except InvalidEvents as exc:
            raise _invalid(exc) from None
        self._check_categories(events, allowed)
        outcome = await self.service.writer.write(events)
        if outcome.written is Written.QUEUED:
            return _accepted(outcome)
        body = {
            "event_ids": [event.event_id for event in events],
            "message": f"{len(events)} audit event(s) stored",
        }
        return json_response(201, body)

    async def _writer(self, request: Request) -> frozenset[str] | None:
        """The categories the caller may write, or None for every one.

        `audit:write` writes every category but the reserved ones (`gateway`: only a token
        holding `audit:write:gateway` appends to the Gateway's chains, so no other writer can
        forge its decisions); `audit:write:<category>` writes that category. 403 when the
        caller holds none of them."""
        authorization = request.headers.get("authorization")
        auth = self.service.auth
        allowed: set[str] = set()
        try:
            await auth.authorize(authorization, "audit:write")
        except Problem as refused:
            if refused.status != 403:
                raise
            first_refusal: Problem | None = refused
        else:
            allowed.update(c for c in CATEGORIES if c not in RESERVED_CATEGORIES)
            first_refusal = None
        for category in CATEGORIES:
            if category in allowed:
                continue
            try:
                await auth.authorize(authorization, f"audit:write:{category}")
            except Problem as narrower:
                if narrower.status != 403:
                    raise
            else:
                allowed.add(category)
        if not allowed:
            raise first_refusal or Problem(
                403,
                "forbidden",
                "this token lacks the scope 'audit:write' (or audit:write:<category>)",
            )
        if allowed.issuperset(CATEGORIES):
            return None
        return frozenset(allowed)

    @staticmethod
    def _check_categories(events: Sequence[AuditEvent], allowed: frozenset[str] | None) -> None:
        if allowed is None:
            return
        for index, event in enumerate(events):
            category = event.fields["event_category"]
            if category not in allowed:
                raise Problem(
                    403,
                    "forbidden",
                    f"{index}.event_category: {category!r} events need a token with the scope "
                    f"'audit:write:{category}'; this one may write only "
                    f"{', '.join(sorted(allowed))} events",
                )

    @contextlib.asynccontextmanager
    async def _payload(self, request: Request) -> AsyncIterator[Any]:
        """A write's JSON body, counted against `BODIES_AT_ONCE` while it is decided."""
        require_media_type(request.scope)
        body = await read_body(
            request.scope, request.receive, self.max_body, self.body_timeout, AUDIT_TEXT
        )
        if self.inflight_bytes and self.inflight_bytes + len(body) > self.max_inflight_bytes:
            raise service_unavailable(
                f"more than {self.max_inflight_bytes:,} bytes of audit events being written "
                f"({BODIES_AT_ONCE} times server.maxBodySize); nothing was stored; retry "
                "shortly",
                1,
            )
        self.inflight_bytes += len(body)
        try:
            yield _parse_json_body(body)
        finally:
            self.inflight_bytes -= len(body)

    async def query(self, request: Request) -> Response:
        await self.service.auth.authorize(request.headers.get("authorization"), "audit:read")
        params = {key: request.query_params.getlist(key) for key in request.query_params}
        try:
            query = parse_query(params, datetime.now(UTC))
        except InvalidParameter as exc:
            raise validation_error(str(exc), field_errors={exc.name: str(exc)}) from None

        async def read() -> Response:  # the answer is built in the read's place too
            page = await self.service.store.query(query)
            body = {
                "data": [stored_event_data(event) for event in page.data],
                "pagination": {
                    "limit": query.limit,
                    "offset": query.offset,
                    "total": page.total,
                    "has_more": query.offset + len(page.data) < page.total,
                },
            }
            return json_response(200, body)

        return await self.reads.run(request.receive, read)

    async def verify_chain(self, request: Request) -> Response:
        await self.service.auth.authorize(request.headers.get("authorization"), "audit:read")
        if request.method == "POST":
            return await self._verify_chain_post(request)
        given = request.query_params.getlist("correlation_id")
        unknown = sorted(set(request.query_params) - {"correlation_id"})
        if unknown:
            raise validation_error(f"query parameter '{unknown[0]}': unknown")
        if len(given) != 1 or not 1 <= len(given[0]) <= 255 or "\x00" in given[0]:
            raise validation_error(
                "query parameter 'correlation_id': required once, 1..255 characters"
            )

        async def read() -> Response:
            report, _ = await verify_stored(self.service.store, given[0])
            return json_response(200, report.to_json())

        return await self.reads.run(request.receive, read)

    async def _verify_chain_post(self, request: Request) -> Response:
        """Kubernaut's form: `{"correlation_id": ...}` in, its `VerifyChainResponse` out."""
        require_media_type(request.scope)
        body = await read_body(
            request.scope, request.receive, self.max_body, self.body_timeout, AUDIT_TEXT
        )
        payload = _parse_json_body(body)
        given = payload.get("correlation_id") if isinstance(payload, dict) else None
        if not isinstance(given, str) or not 1 <= len(given) <= 255 or "\x00" in given:
            raise validation_error(
                "correlation_id: required, a string of 1..255 characters "
                '(e.g. {"correlation_id": "rr-0123456789ab-89abcdef"})',
                field_errors={"correlation_id": "required, a string of 1..255 characters"},
            )

        async def read() -> Response:
            report, broken = await verify_stored(self.service.store, given)
            return json_response(200, kubernaut_verification(report, broken))

        return await self.reads.run(request.receive, read)

    async def capabilities(self, request: Request) -> Response:
        """The event types this DataStorage accepts (see `capabilities`); no token needed."""
        return json_response(200, capabilities_document())

    async def openapi(self, request: Request) -> Response:
        return json_response(200, openapi_document())


def _accepted(outcome: WriteOutcome) -> Response:
    body = {
        "status": "accepted",
        "message": f"{outcome.why}; events are queued and will be stored",
        "count": outcome.count,
    }
    return json_response(202, body)


def _invalid(exc: InvalidEvents) -> Problem:
    count = len(exc.field_errors)
    more = f" (and {count - 1} more)" if count > 1 else ""
    return validation_error(f"{exc}{more}", field_errors=exc.field_errors)


def _parent_problem(exc: ForeignParent | MissingParent, *, single: bool = False) -> Problem:
    """A bad `parent_event_id`, named `<index>.parent_event_id` in a batch and plain
    `parent_event_id` for the single-event endpoint."""

    def field(index: int) -> str:
        return "parent_event_id" if single else f"{index}.parent_event_id"

    first = next(iter(exc.indexes))
    if isinstance(exc, ForeignParent):
        return validation_error(
            f"{field(first)}: {exc}; a parent must be an event of the same correlation id",
            field_errors={field(i): "belongs to another correlation id" for i in exc.indexes},
        )
    return validation_error(
        f"{field(first)}: {exc.indexes[first]} does not exist",
        field_errors={field(i): "does not exist" for i in exc.indexes},
    )


def _translate(exc: Exception) -> Problem | None:
    """Every lower-layer error becomes its problem here."""
    if isinstance(exc, Conflict):
        return Problem(409, "conflict", f"{exc}; the first write stands")
    if isinstance(exc, ForeignParent | MissingParent):
        return _parent_problem(exc)
    if isinstance(exc, EventsLost):
        return Problem(500, "internal-error", str(exc))
    if isinstance(exc, QueueFull):  # nothing taken: a retry once the queue drains succeeds
        return service_unavailable(str(exc), QUEUE_FULL_RETRY_AFTER)
    if isinstance(exc, StoreUnavailable):
        detail = (
            "a parent_event_id is not stored and the dead-letter queue that may hold it "
            "cannot be asked; retry later"
            if isinstance(exc, ParentsUnconfirmed)
            else "the audit database is unavailable; retry later"
        )
        return service_unavailable(detail)
    return None


# Kubernaut DataStorage operations this one does not provide (path, methods, what they do):
# answered 501, not 404 — a client generated from Kubernaut's OpenAPI document reads a 404
# on most of them as "no such correlation id", not as "not here"
NOT_PROVIDED = (
    ("/api/v1/audit/notifications", ["POST"], "notification audit records"),
    ("/api/v1/audit/legal-hold", ["GET", "POST"], "legal holds"),
    ("/api/v1/audit/legal-hold/{correlation_id}", ["DELETE"], "legal holds"),
    ("/api/v1/audit/export", ["GET"], "audit exports"),
    (
        "/api/v1/audit/remediation-requests/{correlation_id}/reconstruct",
        ["POST"],
        "RR reconstruction from the audit trail",
    ),
    ("/api/v1/effectiveness/{correlation_id}", ["GET"], "effectiveness scores"),
    ("/api/v1/remediation-history/context", ["GET"], "remediation history"),
)


def _not_provided(
    service: DataStorageService, what: str
) -> Callable[[Request], Awaitable[Response]]:
    async def answer(request: Request) -> Response:
        # a caller without a token learns nothing more here than on any other route
        authorization = request.headers.get("authorization")
        try:
            await service.auth.authorize(authorization, "audit:read")
        except Problem as refused:
            if refused.status != 403:
                raise
            await service.auth.authorize(authorization, "audit:write")
        raise Problem(
            501,
            "not-implemented",
            f"this DataStorage (signalgate) does not provide Kubernaut's {what}: only the "
            "audit event write, query and verify-chain operations",
        )

    return answer


def build_api_app(service: DataStorageService) -> ASGIApp:
    api = DataStorageAPI(service)
    batch = Route("/api/v1/audit/events/batch", api.write_batch, methods=["POST"])
    return api_app(
        [
            Route("/api/v1/audit/events", api.events, methods=["GET", "POST"]),
            batch,
            Route("/api/v1/audit/verify-chain", api.verify_chain, methods=["GET", "POST"]),
            Route(CAPABILITIES_PATH, api.capabilities, methods=["GET"]),
            # Kubernaut's services probe DataStorage here; ready only while the database answers
            *probe_routes(service.database_readiness),
            Route("/openapi.json", api.openapi, methods=["GET"]),
            *(
                Route(path, _not_provided(service, what), methods=m)
                for path, m, what in NOT_PROVIDED
            ),
        ],
        _translate,
        (StoreUnavailable, Conflict, ForeignParent, MissingParent, EventsLost, QueueFull),
        cors_origins=service.settings.server.cors_allowed_origins,
        direct=[batch],  # the Gateways' delivery path
        observer=service.metrics.requests,
        text=AUDIT_TEXT,  # a filter finds what was stored as written
    )


def _parse_json_body(body: bytes) -> Any:
    """A request body's JSON, or the 400 saying why it is none."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise validation_error(f"request body is not valid JSON: {json_error(body, exc)}") from None
