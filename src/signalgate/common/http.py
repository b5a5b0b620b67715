"""HTTP pieces shared by the APIs: request ids, security headers, bounded bodies, media
types, JSON answers, and the one way every error becomes a problem document."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from signalgate.common.cors import with_cors
from signalgate.common.ids import new_uuid
from signalgate.common.json_numbers import check_json_integers
from signalgate.common.logging import SampledLog, request_id_var
from signalgate.common.problems import Problem, service_unavailable, validation_error
from signalgate.common.text import SERVICE_TEXT, TextRule, check_json_text, check_request_target

log = logging.getLogger("signalgate.http")
# what a request can make the service log: once per status and problem type in a while
sampled = SampledLog(log)

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
    (b"content-security-policy", b"default-src 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-xss-protection", b"1; mode=block"),  # as Kubernaut's services send it
]


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (`name` lowercase), decoded as latin-1."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class RequestObserver(Protocol):
    """Told about every request the envelope passes on (the Gateway's request metrics)."""

    def started(self) -> None: ...

    def finished(self, scope: Scope, status: int, seconds: float) -> None: ...


class Envelope:
    """The one layer every API request passes through first, in pure ASGI.

    - drops `Impersonate-*` request headers before anything reads them: Kubernetes honours
      them on its own API, and a service that checks tokens with the cluster must never let
      a caller ask to be treated as someone else;
    - gives the request an id (kept from `X-Request-ID` when well-formed) and stamps every
      response with it and the security headers;
    - refuses a control character in the path or query (the one check for every route of
      both services, see `common.text`), and an encoded '/' in the path (routes match the
      decoded path: `rr%2Fstatus` would be the route `rr/status`);
    - refuses headers whose meaning would be a guess: `Authorization` or `Content-Type`
      given twice (400: which one counts?), a transfer coding besides `chunked` (501,
      RFC 9112: the body cannot be decoded; a Transfer-Encoding not ending in `chunked`
      never gets here: the parser answers it 400, as its body's end is unknown) and a
      content coding other than `identity` (415: a compressed body would be parsed as if
      it were not);
    - tells `observer`, if any, when the request starts and how it ended.

    One layer instead of one middleware per concern: each layer wraps `send` once more, and
    on the signal path that wrapping was a tenth of the Gateway's CPU.
    """

    PREFIX = b"impersonate-"

    def __init__(
        self, app: ASGIApp, observer: RequestObserver | None = None, text: TextRule = SERVICE_TEXT
    ) -> None:
        self.app = app
        self.observer = observer
        self.text = text  # what a query parameter's value may hold (`common.text`)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        inbound = None
        once: list[bytes] = []
        refusal: Problem | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and inbound is None:
                inbound = value.decode("latin-1")
            elif name.startswith(self.PREFIX):
                scope = {**scope, "headers": _without_impersonation(scope["headers"])}
            elif name in _SCREENED and refusal is None:
                refusal = _screened(name, value, once)
        request_id = inbound if inbound and _REQUEST_ID_RE.match(inbound) else new_uuid()
        token = request_id_var.set(request_id)
        stamped = [(b"x-request-id", request_id.encode()), *SECURITY_HEADERS]
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # (`Connection: close` when the body has not arrived whole: `http_protocol`)
                message["headers"] = [*message.get("headers", []), *stamped]
            await send(message)

        observer = self.observer
        started = time.perf_counter()
        if observer is not None:
            observer.started()
        try:
            try:
                if refusal is not None:
                    raise refusal
                check_request_target(
                    scope["path"],
                    scope.get("query_string", b""),
                    self.text,
                    scope.get("raw_path") or b"",
                )
                if b"%2f" in scope.get("raw_path", b"").lower():
                    # decoded before routing, `a%2Fstatus` would be the route `a/status`
                    raise validation_error(
                        "path: an encoded '/' (%2F) is not part of any name in this API"
                    )
            except Problem as refused:
                response = refused.to_response(scope["path"].encode("unicode_escape").decode())
                await response(scope, receive, send_with_headers)
                return
            await self.app(scope, receive, send_with_headers)
        finally:
            request_id_var.reset(token)
            if observer is not None:
                observer.finished(scope, status, time.perf_counter() - started)


def _without_impersonation(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if not name.startswith(Envelope.PREFIX)]


# the request headers `Envelope` looks at beyond its own
_SCREENED = frozenset(
    {b"authorization", b"content-type", b"transfer-encoding", b"content-encoding"}
)


def _screened(name: bytes, value: bytes, once: list[bytes]) -> Problem | None:
    """The refusal one of `_SCREENED` calls for, if any; `once` collects the headers that
    may be given only once."""
    if name == b"transfer-encoding":
        if value.strip().lower() != b"chunked":
            return Problem(
                501,
                "not-implemented",
                f"Transfer-Encoding {value.decode('latin-1')[:60]!r} is not supported; send the "
                "body as it is, with Content-Length or Transfer-Encoding: chunked",
                # where its body ends is a guess: what follows must not be read as a request
                headers={"Connection": "close"},
            )
        return None
    if name == b"content-encoding":
        if value.strip().lower() not in (b"", b"identity"):
            return Problem(
                415,
                "unsupported-media-type",
                f"Content-Encoding {value.decode('latin-1')[:60]!r} is not supported; send the "
                "body uncompressed",
            )
        return None
    if name in once:
        shown = name.decode().title()
        return validation_error(
            f"{shown}: given more than once; send it once",
            field_errors={shown: "given more than once"},
        )
    once.append(name)
    return None


Endpoint = Callable[[Request], Awaitable[Response]]


class DirectRoutes:
    """Serve a few fixed paths (the signal routes) without Starlette's router and middleware
    stack; every other request goes on to `app`.

    A signal passed through five more layers there (two exception wrappers, the router, the
    route, the request/response adapter), about 35 µs of CPU per request, a sixth of the
    Gateway's budget. Errors are answered by `error_response`, the same function the
    Starlette app's handlers use, so a status code is still decided in one place. A direct
    path with another method falls through to `app`, which answers 405 as before.
    """

    def __init__(self, routes: Sequence[Route], app: ASGIApp, translate: Translate) -> None:
        self.app = app
        self.translate = translate
        self.routes: dict[tuple[str, str], Route] = {}
        for route in routes:
            if route.param_convertors:
                raise ValueError(f"{route.path}: a direct route has no path parameters")
            for method in route.methods or ():
                self.routes[(method, route.path)] = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http":
            route = self.routes.get((scope["method"], scope["path"]))
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # what Starlette's router sets: the metrics' route label
        endpoint: Endpoint = route.endpoint
        try:
            response = await endpoint(Request(scope, receive))
        except Exception as exc:
            response = error_response(exc, self.translate, scope["path"])
        await response(scope, receive, send)


async def read_body(
    scope: Scope,
    receive: Receive,
    limit: int,
    timeout: float | None = None,  # noqa: ASYNC109
    text: TextRule = SERVICE_TEXT,
) -> bytes:
    """The request body, refusing with 413 as soon as it is known to exceed `limit` bytes,
    and with 400 a string holding a character `text` refuses (`common.text`).

    A client that takes longer than `timeout` seconds to send it gets 408 (a slow client must
    not hold the service's resources); one that goes away before sending all it declared in
    `Content-Length` gets 400, and its partial body is never processed.
    """
    declared = header(scope, b"content-length")
    expected = (
        int(declared)
        if declared is not None and declared.isascii() and declared.isdigit()
        else None
    )
    if expected is not None and expected > limit:
        raise _too_large(limit)
    try:
        async with asyncio.timeout(timeout):
            body = await _receive_body(receive, limit, expected)
    except TimeoutError:
        raise Problem(
            408,
            "request-timeout",
            f"the request body did not arrive within {timeout:g}s; send it at once and retry",
        ) from None
    check_json_text(body, text)
    check_json_integers(body)
    return body


# request bodies still arriving are held whole until they have; together, in one process, at
# most this many full bodies' bytes (`limit` each): 200 senders trickling 4 MB bodies in,
# each within the body's time bound, held 880 MB (an outside check)
ARRIVING_BODIES = 16
_arriving = [0]  # the bytes of the bodies being received now, in this process


async def _receive_body(receive: Receive, limit: int, expected: int | None) -> bytes:
    """The body's chunks; `expected` is the `Content-Length`, when one was sent. A chunk that
    would take the bodies arriving together past `ARRIVING_BODIES` full ones is refused with
    503 (nothing was done; a retry is served once they are in)."""
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # before the body's end (its Content-Length, or a chunked body's last chunk):
                # it is incomplete, and never processed. A chunked body cut short was taken
                # whole, so a request refused for bad chunk framing (400, the connection
                # closed) was stored all the same (an outside check: 20 of 20)
                if expected is not None:
                    raise validation_error(
                        f"Content-Length: {expected} bytes declared but the client sent {size} "
                        "before it went away"
                    )
                raise validation_error(
                    f"the chunked body ended after {size} bytes without its last chunk"
                )
            chunk = message.get("body", b"")
            if size + len(chunk) > limit:
                raise _too_large(limit)
            if _arriving[0] + len(chunk) > ARRIVING_BODIES * limit:
                raise service_unavailable(
                    f"more than {ARRIVING_BODIES * limit:,} bytes of request bodies are "
                    f"arriving at once ({ARRIVING_BODIES} times the largest body); nothing "
                    "was done: retry shortly",
                    1,
                )
            size += len(chunk)
            _arriving[0] += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
    finally:
        _arriving[0] -= size
    return b"".join(chunks)


def _too_large(limit: int) -> Problem:
    return Problem(413, "payload-too-large", f"request body exceeds {limit} bytes")


JSON = "application/json"
_MEDIA_TYPE_RE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$")


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type=JSON)


def require_media_type(scope: Scope, allowed: tuple[str, ...] = (JSON,)) -> None:
    """`Content-Type` may be absent; present, it must parse (400) and be allowed (415)."""
    value = header(scope, b"content-type")
    if value is None:
        return
    kind = value.split(";", 1)[0].strip().lower()
    if not _MEDIA_TYPE_RE.match(kind):
        raise validation_error(f"Content-Type: {value[:100]!r} is not a media type")
    if kind not in allowed:
        raise Problem(
            415,
            "unsupported-media-type",
            f"Content-Type {kind!r} is not supported; send {' or '.join(allowed)}",
            headers={"Accept": ", ".join(allowed)},
        )


Translate = Callable[[Exception], Problem | None]


def problem_app(
    routes: list[BaseRoute], translate: Translate, domain_errors: tuple[type[Exception], ...]
) -> Starlette:
    """A Starlette app whose every error is a problem document.

    `translate` maps the service's own lower-layer errors (`domain_errors`) to problems and
    returns None for anything else; routing errors (404/405), raised `Problem`s and
    unexpected exceptions (500, no internals in the answer) are handled here, once.
    """

    async def handler(request: Request, exc: Exception) -> Response:
        return error_response(exc, translate, request.url.path)

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        exc: handler for exc in (HTTPException, Problem, *domain_errors)
    }
    # unexpected errors are answered by `_AnswerUnexpected`, not an `Exception` handler:
    # Starlette re-raises after such a handler, and the server then drops the connection
    return unredirected(
        Starlette(
            routes=routes, exception_handlers=handlers, middleware=[Middleware(_AnswerUnexpected)]
        )
    )


def unredirected(app: Starlette) -> Starlette:
    """No redirect for a path with or without its trailing slash: Starlette's answers a 307
    to a URL built from the request's `Host` header (anyone's host), for paths this API does
    not have. They are 404, as the docs say."""
    app.router.redirect_slashes = False
    return app


class _AnswerUnexpected:
    """Answer an unexpected error with a 500 problem (no internals) and keep the connection:
    a client's keep-alive connection outlives a bug in one request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            if started:
                log.exception("unexpected error", extra={"error": repr(exc)})
                raise  # half an answer is out: only closing the connection can end it
            response = error_response(exc, lambda exc: None, scope["path"])
            await response(scope, receive, send)


def error_response(exc: Exception, translate: Translate, path: str) -> Response:
    """The problem document answering `exc`, raised while serving `path`: a `Problem` as
    raised, a lower-layer error as `translate` maps it, 404/405 for routing errors, and 500
    (no internals in the answer, the traceback in the log) for anything else."""
    problem = exc if isinstance(exc, Problem) else translate(exc)
    if problem is None:
        if not isinstance(exc, HTTPException):
            log.exception("unexpected error", extra={"error": repr(exc)})
        problem = _generic_problem(exc)
    elif problem.status >= 503:
        sampled.log(
            logging.WARNING,
            (problem.status, problem.slug),
            "request failed",
            {"status": problem.status, "error": repr(exc)[:500]},
        )
    elif problem.status not in (404, 405):  # a sender's mistake: say which
        # (401 and 403 too: after a token rotation the sender still using the old token is
        # found here; the detail never holds the token; 404/405 are scanners' noise)
        sampled.log(
            logging.INFO,
            (problem.status, problem.slug),
            "request refused",
            {"status": problem.status, "path": path[:200], "detail": problem.detail[:300]},
        )
    return problem.to_response(path)


def _generic_problem(exc: Exception) -> Problem:
    if isinstance(exc, HTTPException):
        if exc.status_code == 405:
            return Problem(
                405,
                "method-not-allowed",
                "method not allowed on this path",
                headers=dict(exc.headers or {}),
            )
        return Problem(404, "not-found", "no such path")
    return Problem(500, "internal-error", "Internal server error")


def api_app(
    routes: list[BaseRoute],
    translate: Translate,
    domain_errors: tuple[type[Exception], ...],
    *,
    cors_origins: Sequence[str] = (),
    direct: Sequence[Route] = (),
    observer: RequestObserver | None = None,
    text: TextRule = SERVICE_TEXT,
) -> ASGIApp:
    """A service's API listener: the envelope, then CORS (when origins are set), then the
    `direct` routes, then the Starlette app of all `routes` (the direct ones included, so
    their other methods get 405 and the OpenAPI document sees one list). `text` is the
    service's rule for the text it takes (`common.text`)."""
    app: ASGIApp = problem_app(routes, translate, domain_errors)
    if direct:
        app = DirectRoutes(direct, app, translate)
    return Envelope(with_cors(app, cors_origins), observer, text)
