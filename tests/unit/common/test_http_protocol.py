"""Each response leaves in one socket write; streaming, keep-alive and closing still work;
a connection whose request head does not arrive in time is closed.

The protocol tests drive uvicorn's real protocol class with a recording transport (what
uvicorn hands its bytes to); the last tests serve over a real socket with the services'
own `http_server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import Server, ServerState

from e2ecov.recipes import free_port
from signalgate.common.http_protocol import (
    FLUSH_AT,
    HEAD_TIMEOUT,
    MAX_HEAD_BYTES,
    MAX_INSTANCE_SHOWN,
    MAX_PIPELINED,
    CoalescingTransport,
    ServiceHttpProtocol,
)
from signalgate.common.server import http_server


class RecordingTransport(asyncio.Transport):
    """The socket transport's side: what was written, in which calls, and when it closed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.writes_when_closed: int | None = None
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        if self.writes_when_closed is None:
            self.writes_when_closed = len(self.writes)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.writes_when_closed is not None

    def can_write_eof(self) -> bool:
        return False  # as TLS: a lingering close closes at once (and aborts after LINGER)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["path"] == "/refuse":  # as the services refuse a body over their limit: unread
        refusal = PlainTextResponse("too large", 413)  # `Connection: close` is the protocol's
        await refusal(scope, receive, send)
        return
    while scope["method"] == "POST":  # the body read whole, as the services read theirs
        message = await receive()
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":

        async def chunks() -> AsyncIterator[bytes]:
            for part in (b"one,", b"two,", b"three"):
                await asyncio.sleep(0.01)  # each chunk in a later step of the loop
                yield part

        await StreamingResponse(chunks(), media_type="text/plain")(scope, receive, send)
        return
    if scope["path"] == "/large":
        await PlainTextResponse("x" * LARGE)(scope, receive, send)
        return
    await PlainTextResponse("hello " + scope["path"])(scope, receive, send)


LARGE = 256 * 1024  # more than a small receive buffer takes at once


def protocol_on(transport: RecordingTransport) -> ServiceHttpProtocol:
    config = Config(hello, log_config=None, access_log=False, lifespan="off")
    protocol = ServiceHttpProtocol(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    protocol.connection_made(transport)
    return protocol


async def settle() -> None:
    for _ in range(20):  # the app's task, its sends, then the flush at the end of the step
        await asyncio.sleep(0)


async def test_status_line_headers_and_body_leave_in_one_write() -> None:
    transport = RecordingTransport()
    protocol = protocol_on(transport)
    protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    assert len(transport.writes) == 1  # uvicorn's own protocol writes twice
    (response,) = transport.writes
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"\r\n\r\nhello /a")

    protocol.data_received(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive: the next one
    await settle()
    assert len(transport.writes) == 2
    assert transport.writes[1].endswith(b"\r\n\r\nhello /b")
    assert transport.writes_when_closed is None


async def test_a_closing_connection_writes_its_answer_before_closing() -> None:
    transport = RecordingTransport()
    protocol = protocol_on(transport)
    protocol.data_received(b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await settle()
    # uvicorn closes right after writing the body, within the same step: held bytes go first
    assert transport.writes_when_closed == 1
    assert transport.writes[0].endswith(b"hello /c")


async def test_a_streamed_response_arrives_whole_and_in_order() -> None:
    transport = RecordingTransport()
    protocol = protocol_on(transport)
    protocol.data_received(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(100):
        await asyncio.sleep(0.01)
        if b"".join(transport.writes).endswith(b"0\r\n\r\n"):
            break
    raw = b"".join(transport.writes)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert body == b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n"
    assert len(transport.writes) > 1  # chunks made in later steps are not held back


async def test_held_bytes_count_in_the_buffer_and_abort_drops_them() -> None:
    transport = RecordingTransport()
    coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
    coalescing.write(b"abc")
    coalescing.write(memoryview(b"de"))
    coalescing.write(b"")
    assert transport.writes == []
    assert coalescing.get_write_buffer_size() == 5
    await asyncio.sleep(0)
    assert transport.writes == [b"abcde"]
    coalescing.write(b"never sent")
    coalescing.abort()
    await asyncio.sleep(0)
    assert transport.aborted
    assert transport.writes == [b"abcde"]


async def test_a_large_body_is_not_held_for_the_end_of_the_step() -> None:
    transport = RecordingTransport()
    coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
    coalescing.write(b"HTTP/1.1 200 OK\r\n\r\n")
    coalescing.write(b"x" * FLUSH_AT)  # the socket transport's flow control sees it now
    assert len(transport.writes) == 1
    assert len(transport.writes[0]) == FLUSH_AT + 19
    assert coalescing.get_write_buffer_size() == 0
    coalescing.write(b"tail")
    await asyncio.sleep(0)
    assert transport.writes[1:] == [b"tail"]


async def test_nothing_is_written_to_a_connection_lost_meanwhile() -> None:
    transport = RecordingTransport()
    coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
    coalescing.write(b"HTTP/1.1 200 OK\r\n\r\nbody")
    transport.close()  # the peer reset the connection before the end of the step
    await asyncio.sleep(0)
    assert transport.writes == []
    assert coalescing.get_write_buffer_size() == 0


@contextlib.asynccontextmanager
async def running(server: Server) -> AsyncIterator[None]:
    """`server` serving (started) until the block ends."""
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def serving(head_timeout: float = HEAD_TIMEOUT) -> AsyncIterator[int]:
    """The services' own `http_server` with `hello` on a free port, until the block ends."""
    port = free_port()
    async with running(http_server(hello, f"127.0.0.1:{port}", grace=1, head_timeout=head_timeout)):
        yield port


async def test_the_services_server_answers_over_a_real_socket() -> None:
    async with serving() as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        first = await client.get("/one")
        second = await client.get("/two")  # the same kept-alive connection
        streamed = await client.get("/stream")
    assert (first.status_code, first.text) == (200, "hello /one")
    assert (second.status_code, second.text) == (200, "hello /two")
    assert streamed.text == "one,two,three"


async def closed_after(reader: asyncio.StreamReader) -> float:
    """Seconds until the server closes the connection (end of stream), reading what comes."""
    started = time.monotonic()
    async with asyncio.timeout(5):
        while await reader.read(4096):
            pass
    return time.monotonic() - started


@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /one HTTP/1.1\r\nHost: x\r\n", b"GET /one HTTP/1.1\r\nHost: x\r\nX-Slow: "],
    ids=["nothing", "half a head", "a header cut short"],
)
async def test_a_connection_without_a_whole_request_head_is_closed(sent: bytes) -> None:
    async with serving(head_timeout=0.3) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(sent)
        await writer.drain()
        waited = await closed_after(reader)
        writer.close()
    assert 0.25 <= waited < 2.0


async def test_a_head_trickled_in_past_the_deadline_is_closed_not_answered() -> None:
    """Slowloris: each piece arrives well within the deadline, the whole head does not."""
    async with serving(head_timeout=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /one HTTP/1.1\r\n")
        answer = b""
        with contextlib.suppress(ConnectionError):
            for piece in (b"Host: x\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n", b"X-C: 3\r\n"):
                await asyncio.sleep(0.2)
                writer.write(piece)
                await writer.drain()
            writer.write(b"\r\n")
            await writer.drain()
            async with asyncio.timeout(5):
                answer = await reader.read()
        writer.close()
    assert answer == b""


async def test_a_request_in_time_is_answered_and_its_connection_kept() -> None:
    """The deadline covers only the head: a head in time is answered, and the connection
    serves a next request after a pause longer than the deadline (idle time between requests
    is uvicorn's keep-alive bound, 5 s)."""
    async with serving(head_timeout=0.3) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = []
        for path in (b"/one", b"/two"):
            writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                answers.append(await reader.readexactly(length))
            await asyncio.sleep(0.5)  # longer than the head deadline, shorter than keep-alive
        writer.close()
    assert answers == [b"hello /one", b"hello /two"]


def problem_answer(answer: bytes, status: int, title: str) -> dict[str, Any]:
    """The problem document of a raw HTTP answer, checked to be one with `status`."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} {title}\r\n".encode()), head
    assert b"content-type: application/problem+json" in head
    document: dict[str, Any] = json.loads(body)
    assert (document["status"], document["title"]) == (status, title)
    return document


def split_answers(raw: bytes) -> list[bytes]:
    """A connection's raw answers one by one (each framed by its content-length)."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
        found.append(head + b"\r\n\r\n" + rest[:length])
        raw = rest[length:]
    return found


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(5):
        return await reader.read()


async def test_a_head_past_the_size_bound_is_refused_with_431() -> None:
    """httptools holds a header line that never ends as it grows: past MAX_HEAD_BYTES the
    request is answered 431 (a problem document) and the connection closed."""
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /one?x=1 HTTP/1.1\r\nHost: x\r\nX-Big: ")
        with contextlib.suppress(ConnectionError):
            for _ in range(40):  # 40 times 4 KiB, in separate reads
                writer.write(b"a" * 4096)
                await writer.drain()
                await asyncio.sleep(0.005)
        answer = await read_all(reader)
        writer.close()
    document = problem_answer(answer, 431, "Request Header Fields Too Large")
    assert document["type"].endswith("/request-header-fields-too-large")
    assert document["instance"] == "/one"
    assert str(MAX_HEAD_BYTES) in document["detail"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /one HTTP/1.1\r\n\r\n",
        b"GET /one HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /one HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n",
        # behind an answered request: that one is answered first, the refusal after it
        b"GET /zero HTTP/1.1\r\nHost: x\r\n\r\nGET /one HTTP/1.1\r\n\r\n",
    ],
    ids=["1.1 without", "two", "two in 1.0", "pipelined"],
)
async def test_a_request_without_its_one_host_is_400(request_bytes: bytes) -> None:
    """RFC 9112 3.2: a server answers 400 to an HTTP/1.1 request without Host and to any
    request with more than one (a proxy in front may have routed it by the other); both
    were served (an outside check)."""
    answers = split_answers(await exchange(request_bytes))
    if len(answers) == 2:
        assert answers.pop(0).endswith(b"hello /zero")
    [answer] = answers
    document = problem_answer(answer, 400, "Bad Request")
    assert "Host" in document["detail"] and document["instance"] == "/one"
    assert b"\r\nconnection: close\r\n" in answer


async def test_http_1_0_without_host_is_served() -> None:
    answer = await exchange(b"GET /one HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"hello /one")


async def test_a_refusal_quotes_a_long_path_cut_short() -> None:
    """A request line of 1 MB is refused 431 quoting its path's first `MAX_INSTANCE_SHOWN`
    characters, not as much of it as was read (128 KB of it, an outside check)."""
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with contextlib.suppress(ConnectionError):
            writer.write(b"GET /" + b"a" * 1024 * 1024 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
        answer = await read_all(reader)
        writer.close()
    document = problem_answer(answer, 431, "Request Header Fields Too Large")
    assert document["instance"] == "/" + "a" * (MAX_INSTANCE_SHOWN - 1) + "…"
    assert len(answer) < 2 * MAX_INSTANCE_SHOWN


@pytest.mark.parametrize("piece", [1024 * 1024, 8192], ids=["one-write", "8KiB-pieces"])
async def test_a_finished_head_over_the_bound_is_refused_however_it_arrives(piece: int) -> None:
    """A whole head over MAX_HEAD_BYTES is refused whether the network delivers it in one
    read or in many (an outside check found 100 KB heads in one write served), also as the
    second request of a kept-alive connection; a head just under the bound in one write is
    served."""
    big = b"X-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n"
    under = b"X-Near: " + b"n" * (MAX_HEAD_BYTES - 1024) + b"\r\n"
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = (
            b"GET /first HTTP/1.1\r\nHost: x\r\n" + under + b"\r\n"
            b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n" + big + b"\r\nok"
        )
        with contextlib.suppress(ConnectionError):
            for start in range(0, len(request), piece):
                writer.write(request[start : start + piece])
                await writer.drain()
                await asyncio.sleep(0.002)
        answer = await read_all(reader)
        writer.close()
    first, _, rest = answer.partition(b"hello /first")
    assert first.startswith(b"HTTP/1.1 200 "), answer[:300]
    problem_answer(rest, 431, "Request Header Fields Too Large")
    assert b"hello /two" not in rest


async def test_heads_within_the_bound_and_large_bodies_are_served() -> None:
    """The bound is on the head only: a head near it, sent in pieces, and a small head
    followed at once by a body larger than the bound are both answered."""
    near = b"X-Near: " + b"n" * (MAX_HEAD_BYTES - 1024) + b"\r\n"
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = b"GET /near HTTP/1.1\r\nHost: x\r\n" + near + b"Connection: close\r\n\r\n"
        for start in range(0, len(request), 8192):
            writer.write(request[start : start + 8192])
            await writer.drain()
            await asyncio.sleep(0.002)
        near_answer = await read_all(reader)
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b"b" * (4 * MAX_HEAD_BYTES)
        writer.write(
            b"POST /body HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        body_answer = await read_all(reader)
        writer.close()
    assert near_answer.startswith(b"HTTP/1.1 200 ") and near_answer.endswith(b"hello /near")
    assert body_answer.startswith(b"HTTP/1.1 200 ") and body_answer.endswith(b"hello /body")


BIG = 32 * 1024 * 1024  # more than the kernel's socket buffers on both ends can take


async def big(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["path"] == "/streamed":

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(BIG // (1 << 20)):
                yield b"s" * (1 << 20)

        await StreamingResponse(chunks())(scope, receive, send)
        return
    await PlainTextResponse("b" * BIG)(scope, receive, send)


@pytest.mark.parametrize("path", ["/whole", "/streamed"])
async def test_an_answer_the_client_does_not_read_is_dropped(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that asks for a large answer and reads none of it: once the transport's buffer
    has stayed full for the stall timeout, the connection is aborted and its memory freed."""
    monkeypatch.setattr(ServiceHttpProtocol, "write_stall_timeout", 0.5)
    port = free_port()
    server = http_server(big, f"127.0.0.1:{port}", grace=1)
    async with running(server):
        _, writer = await asyncio.open_connection("127.0.0.1", port, limit=1)
        cast(asyncio.Transport, writer.transport).pause_reading()  # the client never reads
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        await asyncio.sleep(0.2)
        assert len(server.server_state.connections) == 1  # answering, buffer full
        for _ in range(50):
            if not server.server_state.connections:
                break
            await asyncio.sleep(0.1)
        assert not server.server_state.connections
        writer.close()


async def test_stalled_answers_are_bounded_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients asking for a large answer and never reading each held it whole until the stall
    timeout: 400 of them took a Gateway to 2.9 GB (an outside check). Past the listener's
    bound the connections holding most are aborted at once; a reading client is served."""
    monkeypatch.setattr(ServiceHttpProtocol, "stalled_bytes", int(2.5 * BIG))
    port = free_port()
    server = http_server(big, f"127.0.0.1:{port}", grace=1)
    async with running(server):
        stalled = []
        for _ in range(5):
            _, writer = await asyncio.open_connection("127.0.0.1", port, limit=1)
            cast(asyncio.Transport, writer.transport).pause_reading()  # the client never reads
            writer.write(b"GET /whole HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            stalled.append(writer)
        for _ in range(50):
            if len(server.server_state.connections) <= 2:
                break
            await asyncio.sleep(0.05)
        assert len(server.server_state.connections) == 2  # long before the stall timeout
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            answer = await client.get("/whole")
        assert answer.status_code == 200 and len(answer.content) == BIG
        for writer in stalled:
            writer.close()


async def test_a_slow_client_still_reading_is_not_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stall bound ran from the first pause, whatever the client took since: a steady
    reader on a slow link got a clean EOF mid-answer after 30 s (an outside check)."""
    monkeypatch.setattr(ServiceHttpProtocol, "write_stall_timeout", 0.6)
    monkeypatch.setattr(ServiceHttpProtocol, "stall_check", 0.1)
    port = free_port()
    server = http_server(big, f"127.0.0.1:{port}", grace=1)
    async with running(server):
        reader, writer = await slow_reader(port)
        taken = 0
        for _ in range(40):  # 2 s, over three stall bounds: a little at a time
            taken += len(await reader.read(16 * 1024))
            await asyncio.sleep(0.05)
        assert len(server.server_state.connections) == 1, "a reading client was cut off"
        while chunk := await reader.read(1 << 20):
            taken += len(chunk)
            if taken >= BIG:
                break
        assert taken >= BIG  # the head, then the whole body
        writer.close()


async def slow_reader(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client asking for `/whole` over a small receive window, as over a slow link."""
    slow_link = socket.socket()
    slow_link.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    slow_link.setblocking(False)
    await asyncio.get_running_loop().sock_connect(slow_link, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=slow_link, limit=16 * 1024)
    writer.write(b"GET /whole HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    return reader, writer


async def test_answers_read_slowly_are_bounded_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client taking a little at every look is not stalled, and held its answer whole for as
    long as it kept reading: 20 clients reading a 100 MB list at 128 KB/s held 2 GB of a
    Gateway (an outside check). Past the listener's bound for paused connections the slowest
    are aborted at once; a reading client is served."""
    monkeypatch.setattr(ServiceHttpProtocol, "stall_check", 0.1)
    monkeypatch.setattr(ServiceHttpProtocol, "paused_bytes", int(2.5 * BIG))
    # only this bound: a look that saw nothing taken (the window opens in steps) is not the point
    monkeypatch.setattr(ServiceHttpProtocol, "stalled_bytes", 100 * BIG)
    port = free_port()
    server = http_server(big, f"127.0.0.1:{port}", grace=1)
    async with running(server):
        slow = [await slow_reader(port) for _ in range(5)]
        for _ in range(40):  # 2 s: each takes a little at a time, never stalling
            for reader, _ in slow:
                with contextlib.suppress(ConnectionError):
                    await reader.read(16 * 1024)
            await asyncio.sleep(0.05)
            if len(server.server_state.connections) <= 2:
                break
        assert len(server.server_state.connections) <= 2, "slow readers held every answer"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            answer = await client.get("/whole")
        assert answer.status_code == 200 and len(answer.content) == BIG
        for _, writer in slow:
            writer.close()


async def exchange(request_bytes: bytes) -> bytes:
    """What a served app answers to `request_bytes` sent as they are, until it closes."""
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        await writer.drain()
        answer = await read_all(reader)
        writer.close()
    return answer


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # a first line that is not HTTP/1.1
        b"GET /one HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",
        b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # both framings: smuggling
        # a transfer coding list not ending in chunked: where the body ends cannot be known
        # (RFC 9112 6.3), so 400 and closed, not the 501 of `gzip, chunked` (docs/gateway.md)
        b"POST /one HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /one HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
    ],
    ids=["not http/1.1", "bad header name", "length and chunked", "gzip alone", "identity"],
)
async def test_malformed_http_gets_a_problem_document(request_bytes: bytes) -> None:
    answer = await exchange(request_bytes)
    document = problem_answer(answer, 400, "Bad Request")
    assert document["type"].endswith("/validation-error")
    assert "not valid HTTP/1.1" in document["detail"]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"MFOO /one HTTP/1.1\r\nHost: x\r\n\r\n", 501),  # a method, unknown
        (b"BREW /one HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"G@T /one HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # not a method at all
        (b"NOT HTTP AT ALL\r\n\r\n", 400),  # a token, but no request line
        (b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nMFOO /one HTTP/1.1\r\n\r\n", 400),
        (
            b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n67890"
            b"MFOO / HTTP/1.1\r\n\r\n",
            400,
        ),
    ],
    ids=[
        "unknown token",
        "another",
        "not a token",
        "no request line",
        "pipelined behind known",
        "behind a body",
    ],
)
async def test_an_unknown_method_is_501_and_garbage_400(request_bytes: bytes, status: int) -> None:
    """RFC 9110: a method the server does not recognise is 501; the parser refuses every
    method it does not know, and this was answered 400 "not valid HTTP/1.1" (an outside
    check: `MFOO` 400 where `PROPFIND` got 405). Which request of a read failed is not known
    when several came in it: the first is named, and as the parser knew it, 400 stays."""
    *earlier, answer = split_answers(await exchange(request_bytes))
    # a request pipelined before the refused one gets its own answer first
    assert [a.startswith(b"HTTP/1.1 200 OK") and a.endswith(b"hello /one") for a in earlier] == [
        True
    ] * (request_bytes.count(b"HTTP/1.1") - 1)
    if status == 501:
        document = problem_answer(answer, 501, "Not Implemented")
        assert document["type"].endswith("/not-implemented")
        assert request_bytes.split(b" ")[0].decode() in document["detail"]
    else:
        document = problem_answer(answer, 400, "Bad Request")
        assert "not valid HTTP/1.1" in document["detail"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (b"M", b"FOO /one HTTP/1.1\r\nHost: x\r\n\r\n"),  # a request line split in two
        (  # a body's end and the next request line in one read
            b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
            b"67890MFOO /one HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
    ],
    ids=["split line", "behind a body"],
)
async def test_a_method_is_not_named_from_a_read_that_does_not_begin_it(
    first: bytes, second: bytes
) -> None:
    """The parser fails in the second read, which does not begin the refused request line:
    naming `FOO` or `67890MFOO` would be wrong, so it is a 400 (an outside check)."""
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(first)
        await writer.drain()
        await asyncio.sleep(0.2)  # two reads on the server's side
        writer.write(second)
        await writer.drain()
        answer = await read_all(reader)
        writer.close()
    assert b"not one this service implements" not in answer
    assert b"HTTP/1.1 400 Bad Request" in answer


async def test_garbage_behind_a_request_being_answered_closes_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Malformed bytes pipelined behind a request still being answered (a streamed answer):
    the connection closes with a 400, no error is logged, and the server goes on serving."""
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        answer = await read_all(reader)
        writer.close()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            after = await client.get("/after")
    streamed, _, refusal = answer.partition(b"0\r\n\r\n")  # the chunked answer's end
    assert streamed.startswith(b"HTTP/1.1 200 OK") and b"three" in streamed
    problem_answer(refusal, 400, "Bad Request")
    assert (after.status_code, after.text) == (200, "hello /after")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_requests_pipelined_before_a_malformed_one_are_answered_first() -> None:
    """Each request gets its own answer, in order, and the refusal comes last: written at
    once, the 400 came first, the client took it for its first request's answer, and the
    close dropped the answers those requests had earned (a signal stored, its sender told
    400)."""
    first = b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    second = b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = split_answers(await exchange(first + second + b"G@T /three HTTP/1.1\r\n\r\n"))
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 400 Bad Request",
    ]
    assert answers[0].endswith(b"hello /one") and answers[1].endswith(b"hello /two")


async def test_an_answer_before_the_body_arrived_whole_closes_the_connection() -> None:
    """A request answered before its body arrived (a 401, a 408, a 413): the connection
    cannot serve another request. Left open it never closed — each body byte that still
    arrived cancelled uvicorn's keep-alive timer — so a client trickling bytes held it."""
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # `hello` answers a PUT without reading its body
        writer.write(b"PUT /early HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        writer.write(b"x")  # a byte of the body still on its way
        await writer.drain()
        waited = await closed_after(reader)
        writer.close()
    assert waited < 1.0


def refused_while_sending(port: int, body_size: int) -> bytes:
    """What a client writing a whole body before it reads (as Go's net/http does) reads."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = f"POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: {body_size}\r\n\r\n"
        sock.sendall(head.encode())
        sock.sendall(b"x" * body_size)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


async def test_an_answer_that_closes_before_the_body_arrived_lingers_for_the_body() -> None:
    """A 413 (or 401) says `Connection: close`, and uvicorn closed at once after it: with
    the body's bytes unread, the kernel reset the connection, and a client still writing
    its body read "connection reset by peer" instead of the answer (Go's net/http, 16 of 20
    oversized batches to DataStorage)."""
    async with serving() as port:
        for _ in range(5):
            answer = await asyncio.to_thread(refused_while_sending, port, 4 * 1024 * 1024)
            assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
            assert b"\r\nconnection: close\r\n" in answer and answer.endswith(b"too large")


async def test_a_listener_holds_at_most_its_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """One connection over the bound is answered 503 with Retry-After and closed; one that
    closes makes room again. Unbounded, 12,000 connections pipelining unread answers took a
    Gateway to 2 GB."""
    monkeypatch.setattr(ServiceHttpProtocol, "max_connections", 2)
    async with serving() as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = b""
        async with asyncio.timeout(5):
            while chunk := await reader.read(4096):
                answer += chunk
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer
        assert b"retry-after: 1\r\n" in answer and b"connection: close\r\n" in answer
        # stamped as every other answer is: a request id (in the body too) and the security
        # headers (an outside check found neither)
        head, body = answer.split(b"\r\n\r\n", 1)
        [request_id] = re.findall(rb"\r\nx-request-id: ([0-9a-f-]{36})\r\n", head + b"\r\n")
        assert json.loads(body)["request_id"] == request_id.decode()
        assert b"\r\nx-content-type-options: nosniff" in head
        held[0][1].close()
        await held[0][1].wait_closed()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(50):  # the server sees the close a moment later
                if (room := await client.get("/one")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
        assert room.status_code == 200, room.text
        held[1][1].close()


async def test_bad_chunk_framing_in_a_body_is_answered_400_at_once() -> None:
    """The parser fails inside the body of the request being read: that request is the one
    refused, not one behind another's answer (held back for its own answer, it waited for a
    body that never came and got a 408 after the body's timeout: an outside check)."""
    broken = (
        b"POST /one HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\nzz\r\n"  # not a chunk size
    )
    for pipelined in (b"", b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"):
        *earlier, refusal = split_answers(await exchange(pipelined + broken))
        assert [a.endswith(b"hello /first") for a in earlier] == [True] * bool(pipelined)
        problem_answer(refusal, 400, "Bad Request")


async def test_a_pipelined_request_whose_body_arrives_later_is_served() -> None:
    """A request pipelined behind one being answered, its body still arriving: the first
    answer's end took the connection for one answered before its body came, and closed it
    with the second request unserved (an outside check)."""
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n12345"
        )
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(b"67890")
        await writer.drain()
        answers = split_answers(await read_all(reader))
        writer.close()
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in answers] == [b"hello /one", b"hello /two"]


async def test_a_connection_holds_a_bounded_number_of_pipelined_requests() -> None:
    """uvicorn parses whole reads ahead and queued every pipelined request in them: a client
    sending small requests and never reading held about 5 MB a connection (an outside
    check). Behind the one being answered, `MAX_PIPELINED` wait; the next is answered 503
    after them, and the connection closed (what followed it never runs)."""
    requests = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(100))
    answers = split_answers(await exchange(requests))
    served = MAX_PIPELINED + 1
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in answers[:served]] == [
        b"hello /%d" % i for i in range(served)
    ]
    assert len(answers) == served + 1
    document = problem_answer(answers[-1], 503, "Service Unavailable")
    assert f"{MAX_PIPELINED} requests waiting" in document["detail"]
    assert b"retry-after: 1" in answers[-1]


async def test_pipelined_requests_within_the_bound_are_all_served() -> None:
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        count = MAX_PIPELINED + 1  # one answered, the rest waiting
        writer.write(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count)))
        await writer.drain()
        bodies = []
        async with asyncio.timeout(5):
            for _ in range(count):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"content-length: (\d+)", head)[1])  # type: ignore[index]
                bodies.append(await reader.readexactly(length))
        writer.close()
    assert bodies == [b"hello /%d" % i for i in range(count)]


@pytest.mark.parametrize(
    "first",
    [
        b"GET /large HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /large HTTP/1.0\r\n\r\n",
    ],
    ids=["connection close", "http/1.0"],
)
async def test_an_answer_that_closes_arrives_whole_behind_more_requests(first: bytes) -> None:
    """A large answer that closes its connection, with more requests pipelined behind it and
    one more arriving after the close: closed at once with those bytes unread, the kernel
    reset the connection and the client lost the end of the answer (an outside check: 9 of
    10). The close lingers, as the services' refusals do."""
    async with serving() as port:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, first + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.sleep(0.05)
            with contextlib.suppress(OSError):  # the server may have shut its side already
                await loop.sock_sendall(sock, b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.sleep(0.5)
            received = b""
            async with asyncio.timeout(5):
                while chunk := await loop.sock_recv(sock, 65536):
                    received += chunk
    [answer] = split_answers(received)
    assert answer.endswith(b"x" * LARGE)


WEBSOCKET_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def test_websocket_upgrades_are_served_as_http_and_free_their_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The services serve no WebSocket: a request asking for one is answered as plain HTTP
    (the app's own answer, not uvicorn's bare 403), and its connection, once closed, is no
    longer counted. uvicorn's handshake handed the connection to its WebSocket protocol, and
    the listener never counted it closed: 2,048 such requests left a listener answering 503
    to everything for good (an outside check)."""
    monkeypatch.setattr(ServiceHttpProtocol, "max_connections", 2)
    async with serving() as port:
        answers = []
        for _ in range(4):  # twice the bound, one after another, each closed by its client
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(WEBSOCKET_UPGRADE)
            await writer.drain()
            answer = b""
            async with asyncio.timeout(5):
                while b"\r\n\r\n" not in answer and (chunk := await reader.read(4096)):
                    answer += chunk
            answers.append(answer)
            writer.close()
            await writer.wait_closed()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(50):  # the server sees the last close a moment later
                if (room := await client.get("/one")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
        assert room.status_code == 200, room.text
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer


async def test_a_request_asking_to_upgrade_is_its_connections_last() -> None:
    """The parser reads nothing past an upgrade request's head: what followed it on the
    connection was dropped unanswered, and the connection kept open. Its answer now says
    `Connection: close`, and the connection closes."""
    answer = await exchange(
        b"GET /up HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
        b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"hello /up")
    assert b"\r\nconnection: close\r\n" in answer.lower()


@pytest.mark.parametrize(
    "framing",
    [b'Content-Length: 7\r\n\r\n{"x":1}', b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n0\r\n\r\n"],
    ids=["length", "chunked"],
)
async def test_a_request_asking_to_upgrade_with_a_body_is_400(framing: bytes) -> None:
    """Its body was never read: the request was served as if it had none (a webhook answered
    "zero-length" as if it had sent nothing)."""
    answer = await exchange(
        b"POST /up HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + framing
    )
    document = problem_answer(answer, 400, "Bad Request")
    assert "upgrade" in document["detail"] and document["instance"] == "/up"
