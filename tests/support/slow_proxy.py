"""A TCP proxy that can hold back a server's answers: a slow API server, as a client sees
one, without slowing what the server does. Requests pass at once (so a write lands); every
byte the server sends back waits `delay` seconds from when it arrived, in order. TLS passes
through untouched (the client verifies the server's own certificate)."""

from __future__ import annotations

import queue
import socket
import threading
import time
from contextlib import suppress


class SlowProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.delay = 0.0  # seconds each byte from the server is held, read as it arrives
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._held = 0  # chunks from the server not yet passed on
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def holding(self) -> int:
        """How many pieces of the server's answers wait to be passed on."""
        return self._held

    def __enter__(self) -> SlowProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        for sock in [self._listener, *self._sockets]:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            held: queue.Queue[tuple[float, bytes]] = queue.Queue()
            threading.Thread(target=self._hold, args=(server, held), daemon=True).start()
            threading.Thread(target=self._release, args=(held, client), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _hold(self, source: socket.socket, held: queue.Queue[tuple[float, bytes]]) -> None:
        with suppress(OSError):
            while chunk := source.recv(65536):
                with self._lock:
                    self._held += 1
                held.put((time.monotonic() + self.delay, chunk))
        held.put((0.0, b""))

    def _release(self, held: queue.Queue[tuple[float, bytes]], sink: socket.socket) -> None:
        with suppress(OSError):
            while True:
                due, chunk = held.get()
                if not chunk:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                sink.sendall(chunk)
                with self._lock:
                    self._held -= 1
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
