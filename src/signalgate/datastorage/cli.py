"""`signalgate-datastorage`: serve the audit API, and the jobs around it.

    serve [--config FILE] [--listen ADDR] [--ops-listen ADDR] [--data-dir DIR]
    (every command takes --config and --data-dir; --listen and --ops-listen only matter to
    serve, and to check-config, which checks them)
    migrate        apply pending schema migrations (a production job before `serve`)
    maintain       create the monthly partitions ahead (cron)
    replay-dlq     replay the dead-letter queue into the database now
    dead-letters   list the buried (dead) letters: one JSON line each (event, reason, when),
                   then a count per reason
    requeue-dead   put the buried (dead) letters back in the queue, to be replayed
                   [--reason R] [--event-id ID ...]: only those
    verify-chain   recompute the hash chain of one correlation id
    verify-all     verify every chain, each held to its recorded head (deleted tails and
                   deleted chains show)
    check-config   print the resolved settings

Exit codes: 0 ok, 1 a dependency failed (database, queue), the chain is broken or no
event of it is stored, 2 invalid settings (a directory they name that cannot be written,
read-only file system included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from datetime import UTC, datetime
from typing import TypeVar

from signalgate.common.cli import (
    EXIT_FAILURE,
    EXIT_OK,
    Commands,
    database_advice,
    resolve_args,
    run_guarded,
    with_default_command,
)
from signalgate.common.logging import configure_logging
from signalgate.common.secrets import hide_secrets_in
from signalgate.datastorage.dlq import ReplayWorker
from signalgate.datastorage.dlq.base import DEAD_PAGE, Letter, readable
from signalgate.datastorage.errors import DeadLetterUnavailable, SchemaMismatch, StoreUnavailable
from signalgate.datastorage.metrics import DataStorageMetrics
from signalgate.datastorage.service import build_dlq, build_store, check_settings
from signalgate.datastorage.settings import SHORTHANDS, DataStorageSettings
from signalgate.datastorage.sqlite import path_from_dsn
from signalgate.datastorage.store import AuditStore, verify_many, verify_stored

log = logging.getLogger("signalgate.datastorage")

T = TypeVar("T")


def _parser() -> argparse.ArgumentParser:
    commands = Commands("signalgate-datastorage", __doc__, DataStorageSettings)
    commands.add("serve", "run the DataStorage API")
    for name, text in (
        ("migrate", "apply pending schema migrations"),
        ("maintain", "create monthly partitions ahead"),
        ("replay-dlq", "replay the dead-letter queue now"),
        ("dead-letters", "list the dead letters and why each was buried"),
        ("verify-all", "verify every chain and its recorded head"),
    ):
        commands.add(name, text, listens=False)
    requeue = commands.add("requeue-dead", "put the dead letters back in the queue", listens=False)
    requeue.add_argument(
        "--reason", help="only the letters buried for this reason (as dead-letters prints it)"
    )
    requeue.add_argument(
        "--event-id",
        action="append",
        default=[],
        dest="event_ids",
        metavar="ID",
        help="only this event's letter (repeatable)",
    )
    commands.add_check_config("validate settings and print them resolved")
    check = commands.add("verify-chain", "verify one correlation id's chain", listens=False)
    check.add_argument("correlation_id")
    return commands.parser


def serve(settings: DataStorageSettings) -> int:
    from signalgate.common.server import serve as run
    from signalgate.datastorage.app import build_api_app
    from signalgate.datastorage.service import DataStorageService

    service = DataStorageService.from_settings(settings)
    run(
        service,
        build_api_app(service),
        service.readiness,
        service.metrics.registry,
        settings.server,
    )
    return EXIT_OK


async def _with_store(
    settings: DataStorageSettings, job: Callable[[AuditStore], Awaitable[T]]
) -> T:
    store = build_store(settings)
    await store.open()
    try:
        return await job(store)
    finally:
        await store.close()


async def _migrate(settings: DataStorageSettings) -> int:
    store = build_store(settings)
    applied = await store.migrate()
    await store.close()
    print(f"applied migrations: {applied}" if applied else "schema is up to date")
    return EXIT_OK


async def _maintain(settings: DataStorageSettings, named: Callable[[str], str]) -> int:
    _refuse_missing_database(settings, named)

    async def job(store: AuditStore) -> int:
        created: int = await store.maintain()
        print(f"created {created} partition(s)")
        return EXIT_OK

    return await _with_store(settings, job)


async def _replay(settings: DataStorageSettings, named: Callable[[str], str]) -> int:
    from prometheus_client import CollectorRegistry

    # a queue whose database is gone is replayed into a new one (a lost SQLite file
    # recovered from its letters); only a directory that is not there is refused
    _refuse_missing_queue(settings, named)
    dlq = build_dlq(settings)
    await dlq.open()
    try:

        async def job(store: AuditStore) -> int:
            worker = ReplayWorker(
                dlq,
                store,
                settings.dlq.backoff,
                DataStorageMetrics(CollectorRegistry()),
                batch_size=settings.dlq.replay_batch,
            )
            report = await worker.drain()
            left = await dlq.depth()
            print(
                f"replayed {report.replayed}, rescheduled {report.rescheduled}, "
                f"dead {report.dead}, still queued {left}"
                + ("; the database is down" if report.deferred else "")
            )
            # a run that buried letters was refused events too: a script must see it
            refused = report.rescheduled or report.dead or report.deferred
            return EXIT_FAILURE if refused else EXIT_OK

        return await _with_store(settings, job)
    finally:
        await dlq.close()


async def _dead_letters(settings: DataStorageSettings, named: Callable[[str], str]) -> int:
    """The dead store as an operator reads it before mending a cause and requeueing: one
    JSON line per letter in burial order, then one with the count per reason. Read a page
    at a time (`DEAD_PAGE` letters): the dead store may hold an outage's worth of events."""
    _refuse_missing_queue(settings, named)
    dlq = build_dlq(settings)
    await dlq.open()
    reasons: Counter[str] = Counter()
    try:
        async for page in dlq.dead_pages(DEAD_PAGE):
            for letter in page:
                print(json.dumps(_dead_line(letter)))
            reasons.update(letter.reason for letter in page)
    finally:
        await dlq.close()
    print(json.dumps({"dead": reasons.total(), "reasons": dict(sorted(reasons.items()))}))
    return EXIT_OK


def _dead_line(letter: Letter) -> dict[str, object]:
    buried = (
        None
        if letter.buried is None
        else datetime.fromtimestamp(letter.buried, UTC).isoformat(timespec="milliseconds")
    )
    return {
        "event_id": letter.event_id or None,
        "correlation_id": letter.fields.get("correlation_id"),
        "event_type": letter.fields.get("event_type"),
        "reason": letter.reason,
        "attempts": letter.attempts,
        "buried": buried,
    }


async def _requeue_dead(
    settings: DataStorageSettings,
    named: Callable[[str], str],
    reason: str | None,
    event_ids: Collection[str],
) -> int:
    """The dead letters queued again, due now (the server's worker, or `replay-dlq`, replays
    them): for after the cause of their burial is mended — all of them, or those buried for
    `reason` and/or carrying one of `event_ids`. Read and queued a page at a time
    (`DEAD_PAGE`), then removed from the dead store (those queued, also when a later page
    fails), so a crash between the two leaves a letter twice, and its event is still stored
    once. A letter whose event no longer reads as one stays dead."""
    _refuse_missing_queue(settings, named)
    dlq = build_dlq(settings)
    await dlq.open()
    try:
        reasons: Counter[str] = Counter()
        requeued: list[Letter] = []  # their keys: the events are dropped once queued
        chosen = unreadable = 0
        try:
            async for page in dlq.dead_pages(DEAD_PAGE):
                reasons.update(letter.reason for letter in page)
                picked = [
                    letter
                    for letter in page
                    if (reason is None or letter.reason == reason)
                    and (not event_ids or letter.event_id in event_ids)
                ]
                chosen += len(picked)
                events, damaged = readable(picked)
                unreadable += len(damaged)
                if events:
                    await dlq.put([event for _, event in events], due=time.time())
                    requeued += [replace(letter, fields={}) for letter, _ in events]
        except Exception:
            if requeued:  # the pages queued before the failure leave the dead store
                await dlq.forget_dead(requeued)
                print(f"requeued {len(requeued)} dead letter(s) before it failed")
            raise
        if requeued:
            await dlq.forget_dead(requeued)
        left = reasons.total() - chosen
        print(
            f"requeued {len(requeued)} dead letter(s)"
            + (f"; {unreadable} unreadable left in the dead store" if unreadable else "")
            + (f"; {left} not chosen left in the dead store" if left else "")
        )
        if (reason is not None or event_ids) and not chosen:
            # a mistyped reason or id chose nothing: say so, not only "0"
            named_reasons = ", ".join(sorted(repr(found) for found in reasons)) or "none"
            print(f"no dead letter matches; the dead letters' reasons: {named_reasons}")
        return EXIT_OK
    finally:
        await dlq.close()


def _refuse_missing_database(settings: DataStorageSettings, named: Callable[[str], str]) -> None:
    """An operator's command on a SQLite file that is not there: `StoreUnavailable` naming
    the path, and the setting as the user gave it (`named`, `Resolved.named`: `--data-dir`,
    an environment variable, `dataDir in <file>`). Opening it would create an empty database
    (and migrate it), and the command would then report an empty, "valid" audit trail, or
    "created 0", for a mistyped `--data-dir` (`serve` and `migrate` make one, and
    `replay-dlq` into one)."""
    dsn = settings.store_dsn
    if not dsn.startswith("sqlite://"):
        return
    path = path_from_dsn(dsn)
    if not path.exists():
        source = named("store.dsn" if settings.store.dsn else "dataDir")
        raise StoreUnavailable(
            f"no audit database at '{path}' ({source}): give the data directory (or "
            "store.dsn) the server writes to (`migrate` or `serve` makes a new one)"
        )


def _refuse_missing_queue(settings: DataStorageSettings, named: Callable[[str], str]) -> None:
    """The dead-letter file's directory not there: `DeadLetterUnavailable` naming it (and
    the data directory as the user gave it, as `_refuse_missing_database` does). The
    file itself is made at the first letter, so its absence is an empty queue; its
    directory's is a mistyped `--data-dir`, which `dead-letters` reported as `"dead": 0`."""
    if settings.dlq.redis_url:
        return
    directory = settings.dlq_path.parent
    if not directory.is_dir():
        source = named("dlq.path" if settings.dlq.path else "dataDir")
        raise DeadLetterUnavailable(
            f"no dead-letter queue directory '{directory}' ({source}): give the data "
            "directory (or dlq.path) the server writes to"
        )


async def _verify(
    settings: DataStorageSettings, named: Callable[[str], str], correlation_id: str
) -> int:
    _refuse_missing_database(settings, named)

    async def job(store: AuditStore) -> int:
        report, _ = await verify_stored(store, correlation_id)
        if report.events == 0:
            # an empty chain is sound, but a script checking a mistyped or never-written id
            # must not read "valid" as "the audit trail of this RR is intact": stdout says
            # what the exit status says
            detail = "no audit events stored for this correlation id"
            print(json.dumps({**report.to_json(), "valid": False, "detail": detail}))
            print(f"error: no audit events stored for {correlation_id!r}", file=sys.stderr)
            return EXIT_FAILURE
        print(json.dumps(report.to_json()))
        return EXIT_OK if report.valid else EXIT_FAILURE

    return await _with_store(settings, job)


async def _verify_all(settings: DataStorageSettings, named: Callable[[str], str]) -> int:
    """Every chain, held to its head: one JSON line per broken chain, then a summary line."""
    _refuse_missing_database(settings, named)

    async def job(store: AuditStore) -> int:
        broken = 0
        names = await store.correlation_ids()
        async for report in verify_many(store, names):
            if not report.valid:
                broken += 1
                print(json.dumps(report.to_json()))
        print(json.dumps({"chains": len(names), "broken": broken, "valid": broken == 0}))
        return EXIT_OK if broken == 0 else EXIT_FAILURE

    return await _with_store(settings, job)


def main(argv: list[str] | None = None) -> int:
    argv = with_default_command(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)

    def command() -> int:
        resolved = resolve_args(DataStorageSettings, args, SHORTHANDS)
        settings = resolved.settings
        named = resolved.named  # a setting as the user gave it, for the refusals
        configure_logging(settings.logging.level, settings.logging.format, resolved.notes)
        try:
            if args.command == "serve":
                check_settings(settings, named)
                return serve(settings)
            if args.command == "check-config":
                check_settings(settings, named)  # what serve refuses without a network
                # passwords in DSNs and URLs shown masked, as the Gateway's
                print(json.dumps(hide_secrets_in(settings.resolved()), indent=2))
                return EXIT_OK
            if args.command == "migrate":
                return asyncio.run(_migrate(settings))
            if args.command == "maintain":
                return asyncio.run(_maintain(settings, named))
            if args.command == "replay-dlq":
                return asyncio.run(_replay(settings, named))
            if args.command == "dead-letters":
                return asyncio.run(_dead_letters(settings, named))
            if args.command == "requeue-dead":
                event_ids = set(args.event_ids)
                return asyncio.run(_requeue_dead(settings, named, args.reason, event_ids))
            if args.command == "verify-all":
                return asyncio.run(_verify_all(settings, named))
            return asyncio.run(_verify(settings, named, args.correlation_id))
        except SchemaMismatch as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        except StoreUnavailable as exc:
            advice = database_advice(settings.store.dsn, named)
            print(f"error: {exc}{advice}", file=sys.stderr)
            return EXIT_FAILURE
        except DeadLetterUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILURE

    return run_guarded(command)


if __name__ == "__main__":
    sys.exit(main())
