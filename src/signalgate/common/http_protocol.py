"""The services' HTTP connections: uvicorn's protocol, answering each response with one
socket write, and bounding what uvicorn leaves unbounded (a request head's time and size,
an answer nobody reads).

uvicorn writes a response's status line and headers, then its body, each with its own
`transport.write` — two `send` system calls (and, with Nagle off, two TCP segments) for
every answer. A signal's answer is a few hundred bytes; the second call was about a tenth
of a request's CPU on the Gateway's hot path (py-spy, docs/performance.md).

`CoalescingTransport` sits between uvicorn and the socket transport: what is written during
one step of the event loop is held and handed on in one write when the step ends
(`loop.call_soon`), before the loop next waits for the network, so nothing is delayed by
more than the rest of that step. Past `FLUSH_AT` held bytes are written at once, so a body
sent in many pieces without a pause neither piles up here nor escapes the socket transport's
flow control (which pauses uvicorn's sends when its own buffer is full). Everything else
(reading, closing) goes to the socket transport unchanged; closing or half-closing first
writes what is held.

uvicorn bounds only the idle time between requests on a kept-alive connection: a client that
connects and sends nothing, or sends part of a request line and headers and then trickles
the rest (slowloris), holds its connection and a file descriptor for as long as it likes.
`ServiceHttpProtocol` closes such a connection once its request's head (request line and
headers) has not arrived within `head_timeout` of connecting, or of that request's first
byte. Nor does httptools bound a head's size: a header line that never ends is held in
memory as it grows, at whatever rate the client sends. A head still unfinished after
`MAX_HEAD_BYTES` is answered 431 and the connection closed (after `LINGER`); so is a
finished head over that size, however the network split it into reads (a whole head
arriving in one read is measured when its headers are complete). The body is the
application's to bound (`server.maxBodySize`, 413; `server.bodyReadTimeout`, 408). A request
answered before its body arrived whole (those two, a 401) closes its connection the same
lingering way, and its answer says `Connection: close`: it cannot serve another request, and
left open it never closed, since each body byte that still arrived cancelled uvicorn's
keep-alive timer. An error to a request whose body is in keeps the connection.

Nor does uvicorn bound how many connections a listener holds. Each costs memory, and
more than a connection's worth when its client pipelines requests and never reads the
answers (about 190 KB each, measured: 12,000 such connections took a Gateway to 2 GB,
which CPython keeps after they close). A listener holds at most `MAX_CONNECTIONS`; one
more is answered 503 (`Retry-After: 1`) and closed. Each listener counts its own, so a
flood of the API listener leaves the ops listener's probes answered. uvicorn parses a
whole read ahead and queues every pipelined request in it: small requests, about 2,000
to a read, held about 5 MB a connection (an outside check). A connection holds at most
`MAX_PIPELINED` requests waiting behind the one being answered; the next is answered 503
(`Retry-After: 1`) after them, and the connection closed.

Nor does uvicorn bound how long an answer may wait for a client that does not read it: the
bytes stay in the transport's buffer (and a streamed answer's task waits) for as long as
the connection lives. A connection whose buffer stays over its high-water mark, its client
taking nothing, for `WRITE_STALL_TIMEOUT` is aborted (what Go's and Kubernaut's
`writeTimeout` bounds; a slow client still taking the answer is not). Until
then such answers would add up, a whole answer each (a list of RRs can be megabytes): a
listener's stalled connections (paused, and nothing taken since the last look, every
`STALL_CHECK`) hold at most `STALLED_BYTES` together, and past it the one holding most is
aborted at once. A client that keeps taking a little (a few KB a second) is not stalled, and
held its answer whole for as long as it read: 20 such clients of a 100 MB list held 2 GB of
a Gateway for as long as they liked (an outside check). So a listener's paused connections
(paused for a look or more, the slow and the stalled alike) hold at most `PAUSED_BYTES`
together; past it the one that would take longest to take the rest, at the rate it took at
its last look, is aborted at once (a stalled one first).
"""

from __future__ import annotations

import asyncio
import fcntl
import re
import sys
import termios
from collections.abc import Callable
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from signalgate.common.http import SECURITY_HEADERS
from signalgate.common.ids import new_uuid
from signalgate.common.problems import PROBLEM_MEDIA_TYPE, TITLES, problem_document

__all__ = [
    "FLUSH_AT",
    "HEAD_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_HEAD_BYTES",
    "MAX_INSTANCE_SHOWN",
    "MAX_PIPELINED",
    "PAUSED_BYTES",
    "STALLED_BYTES",
    "WRITE_STALL_TIMEOUT",
    "CoalescingTransport",
    "ServiceHttpProtocol",
    "service_http_protocol",
]

# a response's head and a small body are held for the end of the step; more goes at once
FLUSH_AT = 64 * 1024
# the default for `server.headerReadTimeout`: a request head must arrive within this many
# seconds of connecting, or of the request's first byte
HEAD_TIMEOUT = 10.0
# a request head (request line and headers) still unfinished past this many bytes is refused
# (431): a webhook's or a controller's head is a few hundred bytes, a ServiceAccount token
# 1 - 2 KiB. An unfinished head is checked per read (so it is held to one read, up to
# 256 KiB, past it); a finished one exactly.
MAX_HEAD_BYTES = 64 * 1024
# requests a connection may have waiting behind the one being answered (pipelined): real
# clients (Go's, Alertmanager's, Kubernaut's) send one at a time
MAX_PIPELINED = 32
# a request line whose method is an RFC 9110 token: what a method may be
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) [!-~]+ HTTP/1\.[01]\r?")
MAX_METHOD_SHOWN = 32
# the most of a refused request's path an answer here quotes (`instance`): the rest is cut,
# `…` saying so. Quoted whole, a 431's path was the request line as far as it was read, up to
# a read past the head's bound (an outside check: a 1 MB request line was answered with
# 128 KB of it)
MAX_INSTANCE_SHOWN = 1024
# after refusing a head, what the client still sends is read and dropped this long before the
# connection is closed: closing with unread bytes makes the kernel reset the connection, and
# a client still sending could lose the answer (a "lingering close", as nginx and Go do)
LINGER = 2.0
# an answer the client takes nothing of for this long (the send buffer full, no progress seen
# at any look) is dropped and its connection aborted
WRITE_STALL_TIMEOUT = 30.0
# the bytes a listener's stalled connections (the client not reading) may hold together: past
# it the one holding most is aborted at once, not after WRITE_STALL_TIMEOUT. A list answer can
# be megabytes, and 150 clients asking for one and never reading held 5.5 MB each, 2.9 GB for
# 400 of them (an outside check)
STALLED_BYTES = 64 * 1024 * 1024
# the bytes a listener's paused connections (the client not reading, or reading slowly: paused
# at a look) may hold together: past it the one slowest to take the rest is aborted at once. 20
# clients reading a 100 MB list at 128 KB/s each held 2 GB of a Gateway (an outside check)
PAUSED_BYTES = 256 * 1024 * 1024
# how often a paused connection is looked at: one whose client took nothing since the last
# look is stalled
STALL_CHECK = 1.0


class _HeadTooLarge(Exception):
    """Raised from the parser's callback to stop it at a head over MAX_HEAD_BYTES."""


class _BadHost(Exception):
    pass


class _UpgradeWithBody(Exception):
    pass


class _PipelineFull(Exception):
    """Raised from the parser's callback to stop it at a request over MAX_PIPELINED."""


class CoalescingTransport(asyncio.Transport):
    """A transport that passes each loop step's writes to `transport` as one write."""

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        closing: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._closing = closing  # the protocol's say on a close: True when it closes its way
        self._lingering = False

    # -- writing ------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        chunk = bytes(data)  # the same object when it is bytes already
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(chunk)
        self._held_bytes += len(chunk)
        if self._held_bytes >= FLUSH_AT:
            self.flush()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Hand what is held to the socket transport now (a no-op when nothing is). A
        socket transport already closing (the peer went away since) takes nothing more."""
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        if not self.is_closing():  # (lingering: our end is shut for writing already)
            self._transport.write(data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._held_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close after what is held is written (as the socket transport does with its own
        buffer), unless the protocol closes the connection its own way (`closing`: a
        lingering close while a request's body still arrives)."""
        if self._closing():
            return
        self.flush()
        self._transport.close()

    def close_lingering(self) -> None:
        """Write what is held, end this side for writing, and close after `LINGER`,
        reading and dropping what still arrives meanwhile (the protocol drops it): closing
        with unread bytes makes the kernel reset the connection, and the client could lose
        the answer. TLS has no half-close: its close (`close_notify`, then asyncio reads
        until the peer's, up to 30 s, decrypting all a sender still sends: 830 MB from one
        client in an outside check) is cut short after `LINGER` too."""
        if self._lingering or self._transport.is_closing():
            return
        self.flush()
        if not self._transport.can_write_eof():
            self._transport.close()
            self._loop.call_later(LINGER, self._transport.abort)
            return
        self._lingering = True
        self._transport.write_eof()
        self._transport.resume_reading()  # uvicorn pauses reading a body nobody takes
        self._loop.call_later(LINGER, self._transport.close)

    def abort(self) -> None:
        self._held.clear()
        self._held_bytes = 0
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._lingering or self._transport.is_closing()

    # -- everything else is the socket transport's ---------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


# connections one listener holds at once (see the module docstring); with the answers a
# client pipelines and never reads, about 400 MB at most
MAX_CONNECTIONS = 2048

_SECURITY_HEADER_LINES = b"".join(
    name + b": " + value + b"\r\n" for name, value in SECURITY_HEADERS
)


class _Cycle(RequestResponseCycle):
    """uvicorn's request/response cycle, whose answer says `Connection: close` when it
    starts before the request's body has arrived whole (a 401, a 413, a 415 answered
    unread): such a connection cannot serve another request and is closed after the answer
    (`ServiceHttpProtocol.on_response_complete`), and said in the answer, a client does not
    send its next request into it ("server disconnected"). An answer to a request whose body
    is in (read by the application or not: a 400 for a bad field, a 415 to a body sent
    whole) keeps the connection: every such error said close once, and each sender
    (Alertmanager, Kubernaut's) reconnected for its next request (an outside check)."""

    async def send(self, message: ASGISendEvent) -> None:
        if self.more_body and message["type"] == "http.response.start":
            self.keep_alive = False  # uvicorn then writes `connection: close`, and closes
        await super().send(message)


class ServiceHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a `CoalescingTransport`, with a deadline and a size
    bound for each request's head and a bound on stalled answers (uvicorn.Config's `http`;
    `service_http_protocol` sets the head's deadline). Malformed HTTP and an oversized head
    are answered here with problem documents, as the application answers everything else."""

    head_timeout: ClassVar[float] = HEAD_TIMEOUT
    # a head is pending from connecting, or from a request's first byte, until its headers
    # are complete; its timer is armed only when a read ends with it still pending, so a
    # head that arrives whole in one read (nearly every request) costs no timer
    _head_pending = False
    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0  # bytes read while the current head is unfinished
    _head_bound = 0  # at least the current head's bytes in earlier reads (an upper bound)
    _head_done = False  # a head was completed during the read being parsed
    _refused = False  # answered here (400, 431): what still arrives is dropped until the close
    _read_bytes = 0  # the size of the read being parsed
    _read = b""  # the read being parsed (a refused method is named from it)
    _completed_in_read = False  # a request ended in the read being parsed
    _line_at_read_start = False  # the request being parsed began where that read begins
    _head_too_large = False  # a finished head over MAX_HEAD_BYTES: the parser was stopped
    _pipeline_full = False  # a request over MAX_PIPELINED: the parser was stopped
    _bad_host = False  # no Host (HTTP/1.1) or more than one: the parser was stopped
    _upgrade_with_body = False  # asks to upgrade and has a body: the parser was stopped
    _quiet_close = False  # a close with no answer in it: nothing to linger for
    # a refusal (400, 431, 501, 503) of a request pipelined behind others unanswered:
    # written once they are, so each answer reaches the client in its request's place
    _deferred: bytes | None = None
    # the refused request's own cycle when the parser failed in its body (it is queued then,
    # and must never start: its body will not come)
    _refused_cycle: Any = None
    write_stall_timeout: ClassVar[float] = WRITE_STALL_TIMEOUT
    stalled_bytes: ClassVar[int] = STALLED_BYTES
    stall_check: ClassVar[float] = STALL_CHECK
    _progress_timer: asyncio.TimerHandle | None = None  # armed while writing is paused
    _progress_left = 0  # the bytes left to write at the last look
    _last_progress = 0.0  # loop time the client last took something (or writing paused)
    # the listener's connections whose writing is paused (one set per class, as `_open`)
    _stalled_now: ClassVar[set[ServiceHttpProtocol]] = set()
    paused_bytes: ClassVar[int] = PAUSED_BYTES
    # the listener's connections paused at a look (slow or stalled), with the rate (bytes a
    # second) each took since its previous look
    _paused_now: ClassVar[dict[ServiceHttpProtocol, float]] = {}
    max_connections: ClassVar[int] = MAX_CONNECTIONS
    # the listener's open connections: one counter per class `service_http_protocol` makes
    _open: ClassVar[list[int]] = [0]
    _counted = False
    # set while the service drains: each answer then says `Connection: close`, so a client
    # holding a kept-alive connection opens a new one (to another replica) for its next
    # request instead of meeting the listener's close
    draining: ClassVar[list[bool]] = [False]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop, self._close_requested))
        if self._open[0] >= self.max_connections:
            self._answer_and_close(
                503,
                "service-unavailable",
                f"this listener holds {self.max_connections} connections already; retry shortly",
                retry_after=1,
            )
            return
        self._open[0] += 1
        self._counted = True
        self._head_pending = True  # a client that sends nothing is bounded too
        self._arm_head_timer()

    def _body_unread(self) -> bool:
        """A request's body is still arriving (answered before it came whole)."""
        return self.cycle is not None and self.cycle.more_body

    def _close_requested(self) -> bool:
        """The transport is asked to close: linger instead while a body still arrives, and
        after an answer (one that said `Connection: close`, or to HTTP/1.0). True when it
        closes this way.

        uvicorn closes at once after an answer that says `Connection: close`, and the
        services' errors to a request with a body say so (a 413 or 401 answered before the
        body arrived): closed with the body's bytes unread, the kernel reset the connection,
        and a client still writing its body (Go's net/http: 16 of 20 oversized batches) got
        "connection reset by peer" instead of the answer. So did a client pipelining more
        requests behind such an answer: the end of a large answer was lost (an outside
        check: 9 of 10). A close with no answer in it (the head's deadline, the keep-alive
        timeout, the server's shutdown) has nothing to linger for."""
        if self._quiet_close and not self._body_unread():
            return False
        self._close_lingering()
        return True

    def _unsupported_upgrade_warning(self) -> None:
        """A request asking to upgrade (`Upgrade: websocket`, `h2c`) is served as plain
        HTTP/1.1 (the services speak nothing else; RFC 9110 7.8 lets a server ignore it):
        no warning per request for a client to fill the log with."""

    def timeout_keep_alive_handler(self) -> None:
        self._quiet_close = True
        super().timeout_keep_alive_handler()

    def shutdown(self) -> None:
        self._quiet_close = True
        super().shutdown()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._head_done = False
        self._read_bytes = len(data)
        self._read = data
        self._completed_in_read = self._line_at_read_start = False
        super().data_received(data)
        if self._refused:  # answered already (malformed: uvicorn called send_400_response)
            return
        if not self._head_pending:
            self._head_bytes = self._head_bound = 0
        elif self._head_done:
            # a head finished in this read, and the next one began in it: that one's
            # unfinished part is counted from the next read on, but its bound counts the
            # whole read (some of it may be the next head's)
            self._head_bytes, self._head_bound = 0, len(data)
        else:
            self._head_bytes += len(data)
            self._head_bound += len(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self._refuse_head()
                return
        self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_pending = True  # a kept-alive connection's next request
        # its request line is where this read begins (for naming a method it refuses)
        self._line_at_read_start = not self._completed_in_read

    def on_message_complete(self) -> None:
        self._completed_in_read = True
        super().on_message_complete()

    def on_headers_complete(self) -> None:
        # measured only when this read and the head's earlier ones could hold that much
        if self._head_bound + self._read_bytes > MAX_HEAD_BYTES and (
            self._head_size() > MAX_HEAD_BYTES
        ):
            self._head_too_large = True
            raise _HeadTooLarge  # stops the parser; uvicorn answers via send_400_response
        if len(self.pipeline) >= MAX_PIPELINED:
            self._pipeline_full = True
            raise _PipelineFull  # likewise
        # RFC 9112 3.2: an HTTP/1.1 request without Host, or any with two, is answered 400
        # (which one a proxy in front routed by is a guess); uvicorn lowercases the names
        hosts = sum(1 for name, _ in self.headers if name == b"host")
        if hosts > 1 or (hosts == 0 and self.parser.get_http_version() == "1.1"):
            self._bad_host = True
            raise _BadHost  # likewise
        # the parser reads nothing past the head of a request asking to upgrade (`Upgrade`,
        # `Connection: upgrade`): its body was lost, the request served as if it had none
        # (`{}` expected, "zero-length" answered), and every request after it on the
        # connection dropped unanswered. Served as plain HTTP/1.1 (the services speak nothing
        # else), such a request is its connection's last, and one with a body is refused
        upgrade = self.parser.should_upgrade()
        if upgrade and any(
            name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0")
            for name, value in self.headers
        ):
            self._upgrade_with_body = True
            raise _UpgradeWithBody  # likewise
        self._head_arrived()
        self._head_done = True
        super().on_headers_complete()
        if type(self.cycle) is RequestResponseCycle:  # the one just made (not an upgrade)
            self.cycle.__class__ = _Cycle
        if (upgrade or self.draining[0]) and self.cycle is not None:
            self.cycle.keep_alive = False

    def _head_size(self) -> int:
        """The finished head's bytes: request line, and each header with ': ' and CRLF."""
        return len(self.url) + 16 + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self._open[0] -= 1
        self._head_arrived()
        self._writing_resumed()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The transport's buffer is over its high-water mark: the client may not be reading.
        From here on it is looked at every `stall_check` until writing resumes."""
        super().pause_writing()
        if self._progress_timer is None:
            self._progress_left = self._unsent()
            self._last_progress = self.loop.time()
            self._progress_timer = self.loop.call_later(self.stall_check, self._check_progress)

    def _check_progress(self) -> None:
        """Every `stall_check` while paused. A client that took something since the last look
        is not stalled, and its stall bound starts again (a steady reader on a slow link was
        cut off mid-answer after 30 s). One that took nothing counts as stalled (a large
        answer pauses every connection for a moment, the reading ones too), is aborted once
        that has lasted `write_stall_timeout`, and on becoming stalled holds the listener's
        stalled ones to their bound."""
        left, now = self._unsent(), self.loop.time()
        newly_stalled = False
        newly_paused = self not in self._paused_now
        if left < self._progress_left:
            self._last_progress = now
            self._stalled_now.discard(self)
            self._paused_now[self] = (self._progress_left - left) / self.stall_check
        elif now - self._last_progress >= self.write_stall_timeout:
            self._stalled()
            return
        else:
            self._paused_now[self] = 0.0
            if self not in self._stalled_now:
                self._stalled_now.add(self)
                newly_stalled = True
        self._progress_left = left
        self._progress_timer = self.loop.call_later(self.stall_check, self._check_progress)
        if newly_stalled:
            self._shed_stalled()
        if newly_paused:
            self._shed_paused()

    def _unsent(self) -> int:
        """The answer's bytes not yet taken by the client: ours, and the kernel's send queue
        (`SIOCOUTQ`: not sent, or not acknowledged). Ours alone moved only once the kernel's
        few megabytes had drained, so a slow reader looked like one taking nothing."""
        held = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return held
        try:
            queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except (OSError, ValueError):
            return held
        return held + int.from_bytes(queued, sys.byteorder, signed=True)

    def _shed_stalled(self) -> None:
        """Abort the stalled connections holding most until the rest hold `stalled_bytes` at
        most together."""
        held = {c: c.transport.get_write_buffer_size() for c in self._stalled_now}
        total = sum(held.values())
        if total <= self.stalled_bytes:  # nearly always: no sort
            return
        for connection in sorted(held, key=held.__getitem__, reverse=True):
            if total <= self.stalled_bytes:
                break
            total -= held[connection]
            connection._stalled()

    def _shed_paused(self) -> None:
        """Abort the paused connections slowest to take the rest of what they hold, at the
        rate each took at its last look (a stalled one, taking nothing, first), until the rest
        hold `paused_bytes` at most together. Checked when a connection joins them: what each
        holds only shrinks until its writing resumes."""
        held = {c: c.transport.get_write_buffer_size() for c in self._paused_now}
        total = sum(held.values())
        if total <= self.paused_bytes:  # nearly always: no sort
            return

        def time_left(connection: ServiceHttpProtocol) -> float:
            rate = self._paused_now.get(connection, 0.0)
            return held[connection] / rate if rate > 0 else float("inf")

        for connection in sorted(held, key=lambda c: (time_left(c), held[c]), reverse=True):
            if total <= self.paused_bytes:
                break
            total -= held[connection]
            connection._stalled()

    def resume_writing(self) -> None:
        self._writing_resumed()
        super().resume_writing()

    def _writing_resumed(self) -> None:
        self._stalled_now.discard(self)
        self._paused_now.pop(self, None)
        if self._progress_timer is not None:
            self._progress_timer.cancel()
            self._progress_timer = None

    def _stalled(self) -> None:
        """Nothing taken for `write_stall_timeout`, or too much held by stalled connections:
        drop what is buffered, abort (uvicorn then treats the client as gone, and a waiting
        send returns)."""
        self._writing_resumed()
        self.transport.abort()

    def _arm_head_timer(self) -> None:
        if self._head_pending and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_overdue)

    def _head_arrived(self) -> None:
        self._head_pending = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        """No whole request head in time: the connection goes (there is no request to
        answer yet, so no answer)."""
        self._head_timer = None
        self._quiet_close = True
        if not self.transport.is_closing():
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """Not HTTP/1.1 the parser accepts (a bad request line, header or chunk framing, a
        request both chunked and with a length): a problem document like every other error,
        not uvicorn's plain text, then close (the stream cannot be trusted past it)."""
        if self._head_too_large:
            self._refuse_head()
            return
        if self._pipeline_full:
            detail = (
                f"this connection has {MAX_PIPELINED} requests waiting for their answers "
                "already; send the rest on another connection"
            )
            self._answer_and_close(503, "service-unavailable", detail, retry_after=1)
            return
        if self._upgrade_with_body:
            detail = (
                "a request asking to upgrade (Upgrade, Connection: upgrade) cannot carry a body "
                "here; send it without those headers"
            )
            self._answer_and_close(400, "validation-error", detail)
            return
        if self._bad_host:
            detail = "an HTTP/1.1 request carries exactly one Host header (RFC 9112 3.2)"
            self._answer_and_close(400, "validation-error", detail)
            return
        if method := self._unknown_method():
            # RFC 9110: a method the server does not recognise is 501, not a malformed request
            detail = f"the method {method!r} is not one this service implements"
            self._answer_and_close(501, "not-implemented", detail)
            return
        detail = "the request is not valid HTTP/1.1 (its request line, headers or framing)"
        self._answer_and_close(400, "validation-error", detail)

    def _unknown_method(self) -> str | None:
        """The method of a request the parser stopped at its method (send_400_response runs
        inside uvicorn's `except` for the parser's error): a well-formed request line whose
        method, a token, it does not know (`MFOO / HTTP/1.1`), not garbage (`G@T`, `NOT
        HTTP AT ALL`). Named only when that request began where the read that failed
        begins: a request line split over two reads, or one behind another request's end in
        the same read, stays 400 rather than have a wrong method named (an outside check:
        `M` then `FOO /` was answered "'FOO' is not one…")."""
        if not isinstance(sys.exc_info()[1], httptools.HttpParserInvalidMethodError):
            return None
        if not self._line_at_read_start:  # begun in an earlier read, or after another one
            return None
        line = self._read.lstrip(b"\r\n").split(b"\n", 1)[0]
        request_line = _REQUEST_LINE.fullmatch(line)
        if request_line is None or len(token := request_line[1]) > MAX_METHOD_SHOWN:
            return None  # not a request line at all ("NOT HTTP AT ALL"): malformed, 400
        return token.decode("ascii")

    def _refuse_head(self) -> None:
        """431 with a problem document, then a lingering close: the rest of the head is
        dropped, not parsed."""
        detail = f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"
        self._answer_and_close(431, "request-header-fields-too-large", detail)

    def _answer_and_close(
        self, status: int, slug: str, detail: str, retry_after: int | None = None
    ) -> None:
        """Answer a request the application never saw with a problem document, then close:
        after what is still arriving has been read and dropped for `LINGER` (closing with
        unread bytes resets the connection, and a client still sending could lose the
        answer). Behind requests still being answered (pipelined in one write), the answer
        waits for theirs (`on_response_complete`): written at once, it came first, so the
        client took it for its first request's, and the close then dropped the answer that
        request had earned (its signal was stored, its sender told 400)."""
        self._head_arrived()
        self._refused = True
        url: bytes = getattr(self, "url", b"") or b""  # set once a request has begun
        path = url.split(b"?", 1)[0].decode("latin-1")
        if len(path) > MAX_INSTANCE_SHOWN:
            path = path[:MAX_INSTANCE_SHOWN] + "…"
        # stamped as every answer of the services is (the envelope never sees this one): a
        # request id to quote, and the security headers
        request_id = new_uuid()
        document = problem_document(status, slug, detail, path, {"request_id": request_id})
        body = orjson.dumps(document)
        retry = f"retry-after: {retry_after}\r\n" if retry_after is not None else ""
        answer = (
            f"HTTP/1.1 {status} {TITLES[slug]}\r\ncontent-type: {PROBLEM_MEDIA_TYPE}\r\n".encode()
            + f"content-length: {len(body)}\r\n{retry}connection: close\r\n".encode()
            + f"x-request-id: {request_id}\r\n".encode()
            + _SECURITY_HEADER_LINES
            + b"\r\n"
            + body
        )
        cycle = self.cycle  # the last request read
        refused = cycle if cycle is not None and cycle.more_body else None
        if self._earlier_unanswered(refused):
            self._deferred, self._refused_cycle = answer, refused
            return
        self._write_and_close(answer)

    def _earlier_unanswered(self, refused: Any) -> bool:
        """A request read before the refused one still waits for its answer. When the parser
        failed in a head, every request read is earlier; when it failed in the body of the
        last one read (`refused`: bad chunk framing), only if that one is still queued behind
        another (uvicorn answers pipelined requests one after another). Waiting for the
        refused request's own answer waited for a body that never came: a 408 after the
        body's timeout instead of the 400 (an outside check)."""
        if refused is None:
            return self.cycle is not None and not self.cycle.response_complete
        return any(queued is refused for queued, _ in self.pipeline)

    def _write_and_close(self, answer: bytes) -> None:
        """`answer`, then a lingering close: nothing the application writes after it (a
        request whose own body was refused may still be answered) goes out."""
        self.transport.write(answer)
        self._close_lingering()

    def _close_lingering(self) -> None:
        """Close once what is still arriving has been read and dropped for `LINGER`."""
        self._refused = True
        transport = self.transport
        if isinstance(transport, CoalescingTransport):
            transport.close_lingering()  # the answer, then our end closed for writing
        else:
            transport.close()

    def on_response_complete(self) -> None:
        """An answer sent before its request's body arrived whole (a 401, a 408, a 413): the
        connection cannot serve another request, and left open it never closed — every byte
        of the body that still arrived cancelled uvicorn's keep-alive timer. (An answer
        that said `Connection: close` was closed by uvicorn already, lingering likewise:
        `_close_requested`.)"""
        # the last request read: the one answered, unless others follow it
        answered = self.cycle is not None and self.cycle.response_complete
        if answered and self._body_unread() and not self.transport.is_closing():
            self._close_lingering()
        if self._deferred is None:
            super().on_response_complete()
            return
        # a refusal waits for the answers before it: the refused request itself, queued,
        # never starts, and once nothing else is queued the refusal is written
        for entry in [e for e in self.pipeline if e[0] is self._refused_cycle]:
            self.pipeline.remove(entry)
        queued = len(self.pipeline)
        super().on_response_complete()  # starts the next queued request, if any
        if not queued:
            answer, self._deferred = self._deferred, None
            if not self.transport.is_closing():  # else the last answer closed it
                self._write_and_close(answer)


def service_http_protocol(head_timeout: float) -> type[ServiceHttpProtocol]:
    """`ServiceHttpProtocol` with its request-head deadline set (uvicorn makes one protocol
    object per connection from the class it is given, so the setting travels on a class)."""
    return type(
        "ServiceHttpProtocol",
        (ServiceHttpProtocol,),
        # its listener's own count, drain flag and paused connections
        {
            "head_timeout": head_timeout,
            "_open": [0],
            "draining": [False],
            "_stalled_now": set(),
            "_paused_now": {},
        },
    )
