"""uvicorn's HTTP protocol, answering each response with one socket write.

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
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["FLUSH_AT", "CoalescingHttpProtocol", "CoalescingTransport"]

# a response's head and a small body are held for the end of the step; more goes at once
FLUSH_AT = 64 * 1024


class CoalescingTransport(asyncio.Transport):
    """A transport that passes each loop step's writes to `transport` as one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_bytes = 0

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
        if not self._transport.is_closing():
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
        buffer)."""
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held.clear()
        self._held_bytes = 0
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

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


class CoalescingHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a `CoalescingTransport` (uvicorn.Config's `http`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))
