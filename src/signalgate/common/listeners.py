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
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "already in use"
            return exc.strerror or str(exc)
    return None


# any address of the host: a listener there holds the port on every address
_WILDCARDS = frozenset({"0.0.0.0", "::"})


def check_distinct_listeners(
    listen: str, ops_listen: str, metrics_listen: str | None = None
) -> None:
    """A service's own listeners on addresses that do not overlap, else a `ConfigError`
    naming both settings: the same host and port, or one port on a wildcard host and on
    another host. Each is free until the first of them binds, so the probe of
    `check_listeners` passes them; the second then failed after "serving" with a raw errno
    (exit 3). Port 0 (any free port) never clashes."""
    named = [
        ("server.listen", listen),
        ("server.opsListen", ops_listen),
        ("server.metricsListen", metrics_listen),
    ]
    for index, (key, address) in enumerate(named):
        for other_key, other in named[index + 1 :]:
            if address is None or other is None:
                continue
            host, port = split_listen(address)
            other_host, other_port = split_listen(other)
            if port == 0 or port != other_port:
                continue
            if host == other_host or host in _WILDCARDS or other_host in _WILDCARDS:
                raise ConfigError(
                    f"config keys '{key}' ({address}) and '{other_key}' ({other}): both "
                    f"listen on port {port} of the same address; give each its own port"
                )


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
