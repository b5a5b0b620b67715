"""`signalgate up`: every service on embedded defaults, for trying signalgate on one machine.

Each service runs as its own process (as it would in production) under this supervisor,
which gives them one admin token, prints where everything is, and stops them all on
Ctrl-C / SIGTERM or when one of them exits. Their output is interleaved on one terminal, so
every line they print is prefixed with the service's name (`gateway     | …`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from signalgate.common.auth import ADMIN_TOKEN_FILE, hash_token, write_new_token
from signalgate.common.cli import EXIT_CONFIG, command_line, keep_files_private
from signalgate.common.config import ConfigError, split_listen
from signalgate.common.credential_files import read_own, write_private
from signalgate.common.directories import writable_directory
from signalgate.common.listeners import bind_problem
from signalgate.common.parent import parent_env

EXIT_OK = 0
EXIT_FAILURE = 1


@dataclass
class Component:
    name: str
    command: str  # its name in signalgate/__main__.py's COMMANDS
    api: str
    ops: str
    scopes: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    relay: threading.Thread | None = None


def _admin_token(data_dir: Path) -> tuple[str, Path]:
    """One admin token for every service, made on first start (mode 0600)."""
    path = data_dir / ADMIN_TOKEN_FILE
    if (token := read_own(path, "the admin token")) is not None:
        return token.strip(), path
    return write_new_token(path), path


def components(host: str, base_port: int, token_path: Path) -> list[Component]:
    """DataStorage first: the Gateway delivers its audit trail there from its first signal."""
    datastorage = Component(
        name="datastorage",
        command="datastorage",
        api=f"{host}:{base_port + 10}",
        ops=f"{host}:{base_port + 11}",
        # the Gateway writes its events with this token too: gateway.* needs its own scope
        scopes=("audit:write", "audit:write:gateway", "audit:read"),
    )
    gateway = Component(
        name="gateway",
        command="gateway",
        api=f"{host}:{base_port}",
        ops=f"{host}:{base_port + 1}",
        scopes=("signals:write", "remediations:read", "remediations:write"),
        env={
            "SIGNALGATE_DATASTORAGE__URL": f"http://{datastorage.api}",
            "SIGNALGATE_DATASTORAGE__TOKENFILE": str(token_path),
        },
    )
    return [datastorage, gateway]


def unusable_addresses(parts: list[Component]) -> list[str]:
    """The listen addresses that cannot be listened on (someone else holds them, the host is
    not this machine's), each with why, checked before anything starts.

    Such an address would otherwise surface as one service exiting half-way through start-up,
    after the others are already running.
    """
    found = []
    for address in (address for part in parts for address in (part.api, part.ops)):
        problem = bind_problem(*split_listen(address))
        if problem is not None:
            found.append(f"{address} ({problem})")
    return found


def base_port(text: str) -> int:
    """`--base-port`: the Gateway's API port; the last of the four (+11) must be a port too."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535 - 11:
        raise argparse.ArgumentTypeError(f"{port} is not between 1 and {65535 - 11}")
    return port


def _start(component: Component, data_dir: Path, token: str) -> None:
    service_dir = data_dir / component.name
    service_dir.mkdir(parents=True, exist_ok=True)
    tokens = service_dir / "tokens"
    write_private(
        tokens,
        "# written by `signalgate up`: the admin token's hash and scopes\n"
        f"{hash_token(token)} {','.join(component.scopes)}\n",
    )
    env = {
        **os.environ,
        "SIGNALGATE_DATADIR": str(service_dir),
        "SIGNALGATE_SERVER__LISTEN": component.api,
        "SIGNALGATE_SERVER__OPSLISTEN": component.ops,
        "SIGNALGATE_AUTH__TOKENSFILE": str(tokens),
        "SIGNALGATE_LOGGING__FORMAT": os.environ.get("SIGNALGATE_LOGGING__FORMAT", "console"),
        **component.env,
        **parent_env(),  # `up` killed with SIGKILL takes its services along
    }
    component.proc = subprocess.Popen(
        [*command_line(component.command), "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    component.relay = threading.Thread(
        target=_relay, args=(component.proc, component.name), name=f"relay-{component.name}"
    )
    component.relay.start()


PREFIX_WIDTH = len("datastorage")


def _relay(proc: subprocess.Popen[bytes], name: str) -> None:
    """Copy a service's output to ours line by line, each line prefixed with its name."""
    assert proc.stdout is not None
    prefix = f"{name:<{PREFIX_WIDTH}} | ".encode()
    out = sys.stdout.buffer
    for line in proc.stdout:
        out.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
        out.flush()


def _wait_ready(component: Component, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert component.proc is not None
        if component.proc.poll() is not None:
            return False
        try:
            if httpx.get(f"http://{component.ops}/readyz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def _stop_all(parts: list[Component]) -> None:
    for part in reversed(parts):
        if part.proc and part.proc.poll() is None:
            part.proc.send_signal(signal.SIGTERM)
    for part in reversed(parts):
        if part.proc:
            try:
                part.proc.wait(40)
            except subprocess.TimeoutExpired:
                part.proc.kill()
    for part in parts:  # the services' last lines (draining, stopped) before ours
        if part.relay:
            part.relay.join(5)


def up(data_dir: Path, host: str, base_port: int = 8080) -> int:
    try:
        writable_directory(data_dir, "--data-dir", "every service's data and the admin token")
        token, token_path = _admin_token(data_dir)
    except ConfigError as exc:
        print(f"signalgate: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    parts = components(host, base_port, token_path.resolve())
    unusable = unusable_addresses(parts)
    if unusable:
        print(
            f"signalgate: cannot listen on {', '.join(unusable)}; choose other ports with "
            "--base-port or another --host",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    stop = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        for part in parts:
            _start(part, data_dir.resolve(), token)
            if not _wait_ready(part):
                print(
                    f"signalgate: {part.name} did not become ready; see its log above",
                    file=sys.stderr,
                )
                return EXIT_FAILURE
        print("\nsignalgate is up", flush=True)
        for part in parts:
            print(f"  {part.name:12} API http://{part.api}   ops http://{part.ops}", flush=True)
        print(
            f"  admin token  {token_path.resolve()}  (Authorization: Bearer $(cat ...))\n",
            flush=True,
        )
        while not stop:
            for part in parts:
                assert part.proc is not None
                if part.proc.poll() is not None:
                    print(
                        f"signalgate: {part.name} exited with {part.proc.returncode}",
                        file=sys.stderr,
                    )
                    return EXIT_FAILURE
            time.sleep(0.2)
        return EXIT_OK
    finally:
        _stop_all(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="signalgate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start every service on embedded defaults")
    start.add_argument("--data-dir", type=Path, default=Path("var"), help="default: ./var")
    start.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    start.add_argument(
        "--base-port",
        type=base_port,
        default=8080,
        help="Gateway API port; its ops port is +1, DataStorage's +10 and +11 (default 8080)",
    )
    args = parser.parse_args(argv)
    keep_files_private()  # the data directory, tokens files and the services' files
    return up(args.data_dir, args.host, args.base_port)


if __name__ == "__main__":
    sys.exit(main())
