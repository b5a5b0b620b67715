"""`signalgate-gateway`: take Alertmanager webhooks and Kubernetes Events, open RemediationRequests.

    serve [--config FILE] [--listen ADDR] [--ops-listen ADDR] [--data-dir DIR]
                   run the Gateway; the default command (`signalgate-gateway --config FILE`)
    check-config [FILE]
                   check the settings as `serve` would without a network, print them resolved

Settings: built-in defaults (API 127.0.0.1:8080, ops 127.0.0.1:8081, SQLite and the audit
journal under the data directory, ./var), then the YAML file, then SIGNALGATE_<SECTION>__<KEY>
environment variables, then the flags. Without auth.tokensFile the first start writes an admin
token to <data directory>/admin.token (send it as `Authorization: Bearer <token>`).

Exit codes: 0 ok, 1 a dependency failed at start (the store, a listener), 2 invalid settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence

import uvloop

from signalgate.audit.journal import JournalHeld, worker_journal
from signalgate.common.cli import (
    EXIT_FAILURE,
    EXIT_OK,
    Commands,
    command_line,
    database_advice,
    resolve_args,
    run_guarded,
    with_default_command,
)
from signalgate.common.logging import configure_logging
from signalgate.common.secrets import hide_secrets_in
from signalgate.common.server import serve as run
from signalgate.common.workers import WorkerRole, supervise
from signalgate.gateway.kubernaut_config import read_kubernaut_layout
from signalgate.gateway.settings import SHORTHANDS, GatewaySettings
from signalgate.remediation.store import StoreError

log = logging.getLogger("signalgate.gateway")


def _parser() -> argparse.ArgumentParser:
    commands = Commands("signalgate-gateway", __doc__, GatewaySettings)
    commands.add("serve", "run the Gateway")
    commands.add_check_config("validate settings and print them resolved")
    return commands.parser


def serve(
    settings: GatewaySettings,
    argv: list[str],
    named: Callable[[str], str],
    notes: Sequence[str],
) -> int:
    from signalgate.gateway.app import build_api_app
    from signalgate.gateway.service import GatewayService

    configure_logging(settings.logging.level, settings.logging.format, notes)
    if settings.server.workers > 1 and WorkerRole.from_environ() is None:
        return supervise_workers(settings, argv)
    service = GatewayService.from_settings(settings)
    try:
        run(
            service,
            build_api_app(service),
            service.readiness,
            service.metrics.registry,
            settings.server,
        )
    except StoreError as exc:
        log.error("cannot open the remediation store", extra={"error": str(exc)})
        advice = database_advice(settings.store_dsn, named)
        print(f"error: cannot open the remediation store: {exc}{advice}", file=sys.stderr)
        return EXIT_FAILURE
    except JournalHeld as exc:
        log.error("cannot open the audit journal", extra={"error": str(exc)})
        print(f"error: cannot open the audit journal: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def supervise_workers(settings: GatewaySettings, argv: list[str]) -> int:
    """`server.workers` > 1: this process supervises that many Gateway processes. Each has
    its own audit journal directory (`worker_journal`); the first worker delivers those a
    run with more workers left behind."""
    journal = settings.audit_journal
    per_worker = [
        {"SIGNALGATE_DATASTORAGE__SPOOLPATH": str(worker_journal(journal, i))}
        for i in range(settings.server.workers)
    ]
    main = supervise(
        [*command_line("gateway"), *argv],
        settings.server.workers,
        settings.server.listen,
        settings.server.ops_listen,
        settings.server.shutdown_grace,
        per_worker,
        head_timeout=settings.server.header_read_timeout,
        metrics_listen=settings.server.metrics_listen,
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def main(argv: list[str] | None = None) -> int:
    argv = with_default_command(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)

    def command() -> int:
        from signalgate.gateway.service import check_settings

        resolved = resolve_args(GatewaySettings, args, SHORTHANDS, read_kubernaut_layout)
        settings = resolved.settings
        # what serve refuses without a network: check-config too
        check_settings(settings, resolved.named)
        if args.command == "check-config":
            for note in resolved.notes:  # what `serve` would log as a warning
                print(f"warning: {note}", file=sys.stderr)
            # passwords in DSNs and URLs shown masked: the output goes to terminals and tickets
            print(json.dumps(hide_secrets_in(settings.resolved()), indent=2))
            return EXIT_OK
        return serve(settings, argv, resolved.named, resolved.notes)

    return run_guarded(command)


if __name__ == "__main__":
    sys.exit(main())
