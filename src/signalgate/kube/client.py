"""A small async client of the Kubernetes REST API, on httpx.

Why not a general Kubernetes library: signalgate reads and writes a handful of kinds as plain
JSON (custom resources, TokenReview, SubjectAccessReview, metadata-only reads), needs a
list's `resourceVersion` to start a watch without missing an event, and sits on the hot path
of every signal, where building typed model objects per request costs more than the request.
httpx does the HTTP; this module adds the API's conventions: bearer tokens that rotate, the
`Status` error body, and watch streams.

Errors, by what the caller does with them (translated here, nowhere else):
- `KubeUnavailable` — cannot be reached, timed out, 429 or 5xx: transient, retry later;
  `KubeUnauthorized` (401), this client's own token not accepted, is one too;
- `KubeNotFound`, `KubeAlreadyExists`, `KubeConflict` (stale `resourceVersion`) — the
  answers the stores build their logic on; `KubeNotServed`, a `KubeNotFound` of the path
  itself (a CRD not installed), not of one object;
- `KubeTooLarge` — the object is larger than the API server or etcd stores: the same on
  every retry (a 500 among them, which is otherwise transient);
- `KubeError` — anything else the server refused (403, 422 …): a bug or a misconfiguration.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson

from signalgate.kube.config import KubeConfig

TOKEN_REREAD_SECONDS = 60.0  # projected ServiceAccount tokens rotate; kubelet refreshes hourly
# a call's whole deadline beyond its `timeout`: httpx's per-read deadline fires first and
# marks a stalled connection broken; this one bounds the waits httpx does not (see KubeClient)
CALL_DEADLINE_MARGIN = 1.0
# how long an idle connection to the API server is kept for the next call (seconds)
KEEPALIVE = 60.0
# a watch that hears nothing for this long is given up and started again from the last
# version it saw: what a stalled connection costs a watch no call put in doubt
WATCH_SILENCE = 90.0


class KubeError(Exception):
    """The API server refused a request. `reason` is the `Status` reason (e.g. `Forbidden`)."""

    def __init__(
        self, status: int, reason: str, message: str, causes: tuple[str, ...] = ()
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        # the `Status` details' causes, by reason (`NamespaceTerminating` …)
        self.causes = causes


class KubeUnavailable(KubeError):
    """The API server cannot answer now (unreachable, timed out, overloaded)."""


class KubeUnauthorized(KubeUnavailable):
    """The API server does not accept this client's own credentials (401: its ServiceAccount
    deleted, its token revoked or expired). Nothing works until they are replaced, which
    needs no restart (a projected token file is read again), so it is an outage, not a
    refusal of one request."""


class WatchSilent(KubeUnavailable):
    """A watch heard nothing, not even a bookmark, for `WATCH_SILENCE` seconds: its
    connection is likely stalled; watching again from the last version seen loses nothing."""


class KubeNotFound(KubeError):
    pass


class KubeNotServed(KubeNotFound):
    """The API server serves nothing at that path (its answer is a plain-text `404 page not
    found`, not a `Status`): the resource's kind is unknown to it, as a custom resource's is
    while its CRD is not installed. Not that one object is missing."""


class KubeAlreadyExists(KubeError):
    pass


class KubeConflict(KubeError):
    """The object changed since it was read (its `resourceVersion` is stale)."""


class KubeTooLarge(KubeError):
    """The object written is larger than the API server or etcd stores (413, or a 500 from
    etcd or the API server's gRPC client to it): writing it again is refused again."""


# how the API server says an object is too large to store: its own bound on a request body
# (413), etcd's on a request (`--max-request-bytes`), and its gRPC client's on a message
_TOO_LARGE_MARKS = (
    "request is too large",  # etcdserver: request is too large
    "trying to send message larger than max",  # rpc error: code = ResourceExhausted
    "Request entity too large",
)


def _error(status: int, body: bytes) -> KubeError:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = {}
    if not isinstance(parsed, dict):
        parsed = {}
    reason = str(parsed.get("reason") or "")
    message = str(parsed.get("message") or body[:300].decode(errors="replace"))
    details = parsed.get("details")
    found = details.get("causes") if isinstance(details, dict) else None
    causes = tuple(
        str(cause.get("reason") or "") for cause in found or () if isinstance(cause, dict)
    )
    if status == 401:
        return KubeUnauthorized(status, reason or "Unauthorized", message)
    if status == 404:
        if parsed.get("kind") != "Status":
            return KubeNotServed(status, "NotServed", message.strip())
        return KubeNotFound(status, reason or "NotFound", message)
    if status == 409:
        if reason == "AlreadyExists":
            return KubeAlreadyExists(status, reason, message)
        return KubeConflict(status, reason or "Conflict", message)
    if status == 413 or (status >= 500 and any(mark in message for mark in _TOO_LARGE_MARKS)):
        # before the 5xx below: etcd's refusal of an object's size is a 500, and answering
        # it 503 had Alertmanager send the alert again for ever
        return KubeTooLarge(status, reason or "RequestEntityTooLarge", message)
    if status == 429 or status >= 500:
        return KubeUnavailable(status, reason or "ServerError", message)
    return KubeError(status, reason or "Failure", message, causes)


def _json(content: bytes | str, what: str) -> Any:
    """A 2xx answer's JSON; `KubeUnavailable` when it is none. The API server always answers
    JSON, so such an answer comes from something in front of it (a proxy's or a load
    balancer's page with a 200): the server is not reached, as when it does not answer.
    Raised as the JSON error it was, it ended the RR watch's task and was a 500 with a
    traceback wherever it was read."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        text = content if isinstance(content, str) else content[:200].decode(errors="replace")
        raise KubeUnavailable(
            0, "NotJSON", f"{what}: the answer is not JSON (a proxy in between?): {text[:120]!r}"
        ) from None


class KubeClient:
    """One connection pool to one API server, for calls; each watch has a connection of its
    own.

    A call is bounded as a whole (`timeout`, plus a second for httpx's own deadlines to fire
    first), not only per read: on an HTTP/2 connection one stream reads the socket at a time
    and the others wait for it with no deadline. When the watch shared the calls' connection
    and the API server stopped answering without closing it (a hung process, a node gone
    without a reset), every call waited behind the watch's read deadline, 330 s: signals
    got no answer and nothing failed over to a working API server (an outside check). A
    call that times out marks its connection broken (httpcore), so the next one opens a new
    connection, through the Service to an API server that answers.
    """

    def __init__(
        self, config: KubeConfig, timeout: float = 10.0, max_connections: int = 64
    ) -> None:
        self.config = config
        self.timeout = timeout
        # HTTP/2, as every Kubernetes client speaks to the API server: many requests share a
        # few connections (httpcore's HTTP/1.1 pool costs CPU per request and connection)
        self._http = httpx.AsyncClient(
            base_url=config.server,
            verify=config.ssl_context(),
            timeout=timeout,
            http2=True,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                # httpx's 5 s let the connection go between two readiness probes, and
                # each probe made a new TLS connection to the API server (an outside check)
                keepalive_expiry=KEEPALIVE,
            ),
        )
        self._token = config.token
        self._token_read_at = 0.0
        # the token file as it was when last read (`_file_state`): a 401 reads it again at
        # once when it changed since
        self._token_file_state: tuple[int, int, int] | None = None

    def __repr__(self) -> str:
        return f"KubeClient({self.config.server!r})"

    async def close(self) -> None:
        await self._http.aclose()

    async def _headers(self, accept: str, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        token = await self._current_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _current_token(self) -> str | None:
        path = self.config.token_file
        if path is None:
            return self._token
        now = time.monotonic()
        if self._token is None or now - self._token_read_at > TOKEN_REREAD_SECONDS:
            await self._read_token(path)
        return self._token

    async def _read_token(self, path: Path) -> None:
        self._token_file_state, text = await asyncio.to_thread(_read_with_state, path)
        self._token = text.strip()
        self._token_read_at = time.monotonic()

    async def _token_replaced(self) -> bool:
        """After a 401: whether the token file holds another token than the one refused,
        read at once when the file changed since it was last read (a stat, no read, when it
        did not). Only the once-a-minute re-read picked a new token up: the Gateway stayed
        unready with 503s for up to a minute after its token was replaced (its
        ServiceAccount made again, a revoked token's Secret rewritten)."""
        path = self.config.token_file
        if path is None or await asyncio.to_thread(_file_state, path) == self._token_file_state:
            return False
        refused = self._token
        try:
            await self._read_token(path)
        except OSError:
            return False
        return self._token != refused

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> dict[str, Any]:
        """One API call; the answer's JSON object, or a `KubeError`. Refused with a 401
        while the token file now holds another token, it is asked once more with that one:
        a 401 is answered before anything is done, so asking again changes nothing twice."""
        call = (method, path, params, body, content_type, accept)
        try:
            return await self._request(*call)
        except KubeUnauthorized:
            if not await self._token_replaced():
                raise
        return await self._request(*call)

    async def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Any,
        content_type: str,
        accept: str,
    ) -> dict[str, Any]:
        content = None if body is None else orjson.dumps(body)
        headers = await self._headers(accept, content_type if content is not None else None)
        try:
            async with asyncio.timeout(self.timeout + CALL_DEADLINE_MARGIN):
                answer = await self._http.request(
                    method, path, params=params, content=content, headers=headers
                )
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise KubeUnavailable(0, "Timeout", f"{method} {path}: timed out") from exc
        except httpx.RemoteProtocolError as exc:
            refused = await self._credentials_refused(exc)
            if refused is not None:
                raise refused from exc
            raise KubeUnavailable(0, "Unreachable", f"{method} {path}: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise KubeUnavailable(0, "Unreachable", f"{method} {path}: {exc!r}") from exc
        if answer.status_code >= 300:
            raise _error(answer.status_code, answer.content)
        loaded = _json(answer.content, f"{method} {path}") if answer.content else {}
        return loaded if isinstance(loaded, dict) else {"items": loaded}

    async def _credentials_refused(self, exc: httpx.RemoteProtocolError) -> KubeError | None:
        """The refusal behind an HTTP/2 connection the API server closed (GOAWAY) under a
        call, if it was this client's token: the API server answers a token it does not
        accept 401 and closes the connection at once, and httpcore reports the closing, not
        the answer (an outside check: "unreachable … ConnectionTerminated" for a revoked
        token, and the operator was not told to replace it). Asked again over HTTP/1.1,
        where the answer arrives, with a request that changes nothing; None when it is not
        refused (a closing for another reason, as when the API server shuts down)."""
        if "ConnectionTerminated" not in str(exc):
            return None
        headers = await self._headers("application/json", None)
        try:
            async with (
                httpx.AsyncClient(
                    base_url=self.config.server,
                    verify=self.config.ssl_context(),
                    timeout=self.timeout,
                ) as http,
                asyncio.timeout(self.timeout + CALL_DEADLINE_MARGIN),
            ):
                answer = await http.get("/version", headers=headers)
        except (httpx.HTTPError, TimeoutError):
            return None
        if answer.status_code != 401:
            return None
        return _error(answer.status_code, answer.content)

    async def watch(
        self, path: str, *, params: Mapping[str, str], timeout_seconds: int = 300
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of a watch (`{"type", "object"}`), until the server ends it. Silence for
        `WATCH_SILENCE` seconds is `WatchSilent`: a stalled connection says nothing, and a
        quiet namespace's watch is cheap to open again (bookmarks, asked for, come only when
        the API server's version moved). The watch has a connection of its own, closed with
        it, so a stalled one is not kept, and no call waits behind its long read."""
        query = dict(params) | {
            "watch": "true",
            "timeoutSeconds": str(timeout_seconds),
            "allowWatchBookmarks": "true",
        }
        headers = await self._headers("application/json", None)
        timeout = httpx.Timeout(self.timeout, read=WATCH_SILENCE)
        try:
            async with (
                httpx.AsyncClient(
                    base_url=self.config.server, verify=self.config.ssl_context()
                ) as http,
                http.stream("GET", path, params=query, headers=headers, timeout=timeout) as answer,
            ):
                if answer.status_code >= 300:
                    raise _error(answer.status_code, await answer.aread())
                async for line in answer.aiter_lines():
                    if line:
                        event = _json(line, f"watch {path}")
                        if isinstance(event, dict):
                            yield event
        except httpx.ReadTimeout as exc:
            raise WatchSilent(
                0, "Timeout", f"watch {path}: nothing for {WATCH_SILENCE:g}s"
            ) from exc
        except httpx.TimeoutException as exc:
            raise KubeUnavailable(0, "Timeout", f"watch {path}: timed out") from exc
        except httpx.TransportError as exc:
            raise KubeUnavailable(0, "Unreachable", f"watch {path}: {exc!r}") from exc


def _file_state(path: Path) -> tuple[int, int, int] | None:
    """What tells that a file was replaced or written (inode, size, modification time),
    through symlinks (a projected token is swapped by its `..data` link); None if gone."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_ino, found.st_size, found.st_mtime_ns)


def _read_with_state(path: Path) -> tuple[tuple[int, int, int] | None, str]:
    """The file's state (`_file_state`) and its text, off the event loop in one call."""
    return _file_state(path), Path(path).read_text()
