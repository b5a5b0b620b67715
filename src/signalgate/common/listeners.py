"""Whether a service can listen where its settings say, asked before anything starts.

A listen address another process holds (a `make run` still up) or that is not this host's
would otherwise surface as uvicorn's error once the store was opened and the service had
logged itself serving; here it is one line naming the address and its setting (exit 1).
"""

from __future__ import annotations

import errno
import socket

from signalgate.common.config import ConfigError, split_listen


class ListenerUnavailable(Exception):
    """A listen address cannot be listened on (held by another process, not this host's)."""


def bind_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on `host:port` now (as the services bind it), or None."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "already in use"
            return exc.strerror or str(exc)
    return None


def check_distinct_listeners(
    listen: str, ops_listen: str, metrics_listen: str | None = None
) -> None:
    """A service's own listeners on addresses that do not overlap, else a `ConfigError`
    naming both settings. Each is free until the first of them binds, so the probe of
    `check_listeners` passes them; the second then failed after "serving" with a raw errno
    (exit 3). Asked of the kernel, not read from the text: with the first one listening, the
    second is bound as the service would bind it (`localhost` and `127.0.0.1` are one
    address; `0.0.0.0` and `[::1]` are not; `[::]` holds IPv4's too). Port 0 (any free port)
    never clashes."""
    named = [
        ("server.listen", listen),
        ("server.opsListen", ops_listen),
        ("server.metricsListen", metrics_listen),
    ]
    for index, (key, address) in enumerate(named):
        for other_key, other in named[index + 1 :]:
            if address is None or other is None:
                continue
            first, second = split_listen(address), split_listen(other)
            if first[1] == 0 or first[1] != second[1]:
                continue
            # the second taken by another process, or not this host's: said by the caller
            # (the first so is no clash either: `_clash` cannot hold it)
            if bind_problem(*second) is None and _clash(first, second):
                raise ConfigError(
                    f"config keys '{key}' ({address}) and '{other_key}' ({other}): both "
                    f"listen on port {first[1]} of the same address; give each its own port"
                )


def _clash(first: tuple[str, int], second: tuple[str, int]) -> bool:
    """Whether `second` cannot be bound while `first` is listening."""
    host, port = first
    with socket.socket(_family(host), socket.SOCK_STREAM) as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            held.bind((host, port))
            held.listen(1)
        except OSError:
            return False
        return bind_problem(*second) == "already in use"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_listeners(listen: str, ops_listen: str, metrics_listen: str | None = None) -> None:
    """A service's listen addresses can be listened on, before anything starts; else
    `ConfigError` when two of them overlap (`check_distinct_listeners`), or
    `ListenerUnavailable` naming the first that cannot and its setting. (Found only when the
    listener started, it was uvicorn's traceback, after the store had been opened.)"""
    check_distinct_listeners(listen, ops_listen, metrics_listen)
    for key, address in (
        ("server.listen", listen),
        ("server.opsListen", ops_listen),
        ("server.metricsListen", metrics_listen),
    ):
        if address is None:
            continue
        problem = bind_problem(*split_listen(address))
        if problem is not None:
            raise ListenerUnavailable(
                f"cannot listen on {address} ({key}): {problem}; stop what holds it, or set "
                f"{key} to another address"
            )
