"""``kleer-sync audit``, ``kleer-sync replay`` and ``kleer-sync dlq``.

Each command reads ``DATABASE_URL`` (and for redrive and replay the service
settings the redrivers and the pusher need), prints for people by default and
JSON with ``--json``. Exit codes: 0 done, 1 something failed (the output says
what), 2 bad input or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson

from libs.config import ConfigError, Settings, load_settings
from libs.events.dlq import DeadLetterQueue
from libs.events.store import EventStoreError, PostgresEventStore, create_pool
from libs.records import RecordRef
from services.inbound.webhook_events import WEBHOOK_RECEIVED
from services.operations import render
from services.operations.audit import DEFAULT_LIMIT, load_audit, load_correlation
from services.operations.deadletters import STATUSES, DeadLetterFilter, ServiceRedrivers, redrive_entries
from services.operations.progress import ProgressBar
from services.operations.replay import (
    BATCH,
    DryRunReport,
    ReplayError,
    ReplaySelector,
    RunReport,
    dry_run,
    get_run,
    object_kind,
    parse_moment,
    recent_runs,
    replay_tools,
    run_replay,
)
from services.operations.replay_inbound import (
    InboundSelector,
    inbound_dry_run,
    inbound_kind,
    is_inbound,
    run_inbound_replay,
)


def default_actor() -> str:
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return "user:unknown"


def register(subparsers: Any) -> None:
    audit = subparsers.add_parser(
        "audit",
        help="a record's timeline: polls, pushes, webhooks, commands, conflicts, dead letters",
        description="Show everything the log knows about one record and the record it syncs with "
        "on the other side, oldest first, with changed fields and causation chains.",
    )
    audit.add_argument("record", nargs="?", help="system:kind:id, e.g. kleer:client:123 or hubspot:company:456")
    audit.add_argument("--correlation", help="instead of a record: every event of one correlation id (a chain)")
    audit.add_argument("--connection", help="connection name (default: CONNECTION_ID)")
    audit.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="newest events to read (default %(default)s)")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.set_defaults(func=run_audit)

    dlq = subparsers.add_parser("dlq", help="the dead-letter queue: list, show, redrive, discard")
    tasks = dlq.add_subparsers(dest="dlq_command", metavar="TASK")
    tasks.required = True

    listing = tasks.add_parser("list", help="list entries (newest first)")
    _filters(listing)
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--before", type=int, help="page back: entries with an id below this")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=run_dlq_list)

    show = tasks.add_parser("show", help="one entry with its reason, detail and payload")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=run_dlq_show)

    redrive = tasks.add_parser("redrive", help="run entries again through their service's normal path")
    redrive.add_argument("ids", type=int, nargs="*", help="entry ids (or --all with filters)")
    redrive.add_argument("--all", action="store_true", help="every open entry matching the filters")
    _filters(redrive, status=False)
    redrive.add_argument("--actor", default=default_actor())
    redrive.add_argument("--json", action="store_true")
    redrive.set_defaults(func=run_dlq_redrive)

    discard = tasks.add_parser("discard", help="give up on entries (recorded, with who and why)")
    discard.add_argument("ids", type=int, nargs="+")
    discard.add_argument("--why", default="", help="the reason, kept with the entry")
    discard.add_argument("--actor", default=default_actor())
    discard.set_defaults(func=run_dlq_discard)

    replay = subparsers.add_parser(
        "replay",
        help="re-drive selected changes through the pusher or the inbound handlers (--dry-run: the diff only)",
        description="Outbound (default): select Kleer changes from the log and push them to HubSpot again, "
        "forced, through the normal pusher path (rate budget, batching, DLQ, outcome events with "
        "source=replay). Inbound (--direction inbound): select recorded HubSpot webhooks and sync their "
        "records to Kleer again through the normal inbound handlers (current HubSpot values, merge, conflict "
        "policy, DLQ). Per record the latest selected event wins. A killed run resumes when the same command "
        "runs again.",
    )
    replay.add_argument("--direction", choices=("outbound", "inbound"), default="outbound",
                        help="outbound: Kleer -> HubSpot (default); inbound: HubSpot -> Kleer")
    replay.add_argument("--connection", help="connection name (default: CONNECTION_ID)")
    replay.add_argument("--type", dest="kinds", action="append", default=[], metavar="OBJECT",
                        help="outbound: clients, products, invoices, agreements, projects, line_items; "
                        "inbound: companies, projects (repeat)")
    replay.add_argument("--record", dest="records", action="append", default=[], metavar="RECORD",
                        help="outbound: a Kleer record, e.g. kleer:client:123; inbound: a HubSpot record, "
                        "e.g. hubspot:company:456 (repeat)")
    replay.add_argument("--event-type", dest="event_types", action="append", default=[], metavar="TYPE",
                        help="e.g. KleerClientChanged (repeat)")
    replay.add_argument("--since", help="events recorded at or after: ISO time or an age like 2h, 7d")
    replay.add_argument("--until", help="events recorded before: ISO time or an age")
    replay.add_argument("--from-position", type=int, help="first log position (inclusive)")
    replay.add_argument("--to-position", type=int, help="last log position (inclusive)")
    replay.add_argument("--dry-run", action="store_true",
                        help="show what would change in HubSpot (inbound: in Kleer); write nothing")
    replay.add_argument("--show", type=int, default=50, help="dry run: records to print in detail (default 50)")
    replay.add_argument("--batch-size", type=int, default=BATCH, help="records per push (default %(default)s)")
    replay.add_argument("--runs", action="store_true", help="list recent replay runs and exit")
    replay.add_argument("--resume", metavar="RUN", help="go on with an unfinished run (its own selection)")
    replay.add_argument("--actor", default=default_actor())
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=run_replay_command)


def _filters(parser: argparse.ArgumentParser, *, status: bool = True) -> None:
    parser.add_argument("--source", help="e.g. outbound-pusher, inbound-handlers, outbound-poller")
    parser.add_argument("--record", help="system:kind:id")
    parser.add_argument("--connection")
    if status:
        parser.add_argument("--status", choices=STATUSES, default="open")


# --- plumbing -----------------------------------------------------------------------------------------------


def fail(message: str, code: int = 2) -> int:
    print(message, file=sys.stderr)
    return code


def settings_or_fail() -> Settings:
    return load_settings(required=["DATABASE_URL"])


def run_with_pool(body: Callable[[Settings, asyncpg.Pool], Awaitable[int]]) -> int:
    """Load the settings, open a small pool, run ``body``; configuration and connection errors exit 2."""
    try:
        settings = settings_or_fail()
    except ConfigError as exc:
        return fail(str(exc))

    async def main() -> int:
        pool = await create_pool(settings.require("DATABASE_URL"), min_size=1, max_size=4)
        try:
            return await body(settings, pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(main())
    except (EventStoreError, ConfigError) as exc:
        return fail(str(exc))
    except asyncpg.UndefinedTableError as exc:
        return fail(f"the database is not migrated ({exc}); run `kleer-sync db migrate` first")


def print_json(value: object) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


# --- audit --------------------------------------------------------------------------------------------------


def run_audit(args: argparse.Namespace) -> int:
    if args.limit < 1:
        return fail("--limit must be at least 1")
    if args.correlation:
        if args.record:
            return fail("name a record or --correlation, not both")
        return run_with_pool(lambda settings, pool: _correlation(pool, args.correlation, args))
    if not args.record:
        return fail("name a record (system:kind:id, e.g. kleer:client:123) or --correlation ID")
    try:
        ref = RecordRef.parse(args.record)
    except ValueError as exc:
        return fail(str(exc))

    async def body(settings: Settings, pool: asyncpg.Pool) -> int:
        audit = await load_audit(pool, ref, args.connection or settings.connection_id, limit=args.limit)
        if args.json:
            print_json(audit.to_json())
        else:
            print(render.audit_text(audit))
        return 0

    return run_with_pool(body)


async def _correlation(pool: asyncpg.Pool, correlation_id: str, args: argparse.Namespace) -> int:
    entries = await load_correlation(pool, correlation_id, limit=args.limit)
    if args.json:
        print_json({"correlation_id": correlation_id, "entries": [e.to_json() for e in entries]})
    else:
        print(render.correlation_text(correlation_id, entries))
    return 0


# --- dlq ----------------------------------------------------------------------------------------------------


def _filter(args: argparse.Namespace, **overrides: Any) -> DeadLetterFilter:
    values = {
        "status": getattr(args, "status", "open"),
        "source": args.source,
        "record": args.record,
        "connection": args.connection,
        "limit": getattr(args, "limit", 50),
        "before_id": getattr(args, "before", None),
    }
    values.update(overrides)
    return DeadLetterFilter(**values)


def run_dlq_list(args: argparse.Namespace) -> int:
    try:
        wanted = _filter(args)
    except ValueError as exc:
        return fail(str(exc))

    async def body(settings: Settings, pool: asyncpg.Pool) -> int:
        entries = await wanted.list(DeadLetterQueue(PostgresEventStore(pool)))
        if args.json:
            print_json([render.dead_letter_json(e) for e in entries])
        else:
            print(render.dead_letters_table(entries))
            if len(entries) == wanted.limit:
                print(f"(more may exist: --before {entries[-1].id})")
        return 0

    return run_with_pool(body)


def run_dlq_show(args: argparse.Namespace) -> int:
    async def body(settings: Settings, pool: asyncpg.Pool) -> int:
        entry = await DeadLetterQueue(PostgresEventStore(pool)).get(args.id)
        if entry is None:
            return fail(f"no dead letter {args.id}; `kleer-sync dlq list --status all` lists them", 1)
        if args.json:
            print_json(render.dead_letter_json(entry))
        else:
            print(render.dead_letter_text(entry))
        return 0

    return run_with_pool(body)


def run_dlq_redrive(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.all):
        return fail("name entry ids, or --all (with --source/--record/--connection to narrow it)")

    async def body(settings: Settings, pool: asyncpg.Pool) -> int:
        dlq = DeadLetterQueue(PostgresEventStore(pool))
        if args.all:
            entries = await _filter(args, status="open", limit=1000).list(dlq)
        else:
            found = [await dlq.get(i) for i in args.ids]
            missing = [i for i, e in zip(args.ids, found, strict=True) if e is None]
            if missing:
                return fail(f"no dead letter {', '.join(map(str, missing))}", 1)
            entries = [e for e in found if e is not None]
        async with ServiceRedrivers(settings) as redrivers:
            outcomes = await redrive_entries(dlq, redrivers, entries, args.actor)
        if args.json:
            print_json([o.__dict__ for o in outcomes])
        else:
            for o in outcomes:
                print(f"{o.entry_id:>6}  {o.record:<28} {'redriven' if o.ok else 'FAILED: ' + o.message}")
            ok = sum(o.ok for o in outcomes)
            print(f"{ok} of {len(outcomes)} redriven" + ("" if ok == len(outcomes) else "; the rest stay open"))
        return 0 if all(o.ok for o in outcomes) else 1

    return run_with_pool(body)


def run_dlq_discard(args: argparse.Namespace) -> int:
    async def body(settings: Settings, pool: asyncpg.Pool) -> int:
        dlq = DeadLetterQueue(PostgresEventStore(pool))
        code = 0
        for entry_id in args.ids:
            try:
                entry = await dlq.discard(entry_id, args.actor, args.why)
            except LookupError as exc:
                print(f"{entry_id:>6}  not discarded: {exc}", file=sys.stderr)
                code = 1
                continue
            print(f"{entry.id:>6}  {entry.record:<28} discarded")
        return code

    return run_with_pool(body)


# --- replay -------------------------------------------------------------------------------------------------


def _print_dry_run(report: DryRunReport, args: argparse.Namespace) -> int:
    if args.json:
        print_json(report.to_json())
    else:
        print(render.dry_run_text(report, show=args.show))
    return 0


def _print_run(outcome: RunReport, args: argparse.Namespace) -> int:
    if args.json:
        print_json(outcome.to_json())
    else:
        print(render.run_text(outcome))
    return 0 if outcome.failed == 0 else 1


async def _inbound_replay(
    settings: Settings, pool: asyncpg.Pool, selector: InboundSelector, args: argparse.Namespace
) -> int:
    """``replay --direction inbound``: through the inbound handlers (Kleer and HubSpot clients of this process)."""
    from services.inbound.deps import bootstrap
    from services.inbound.handlers import InboundHandlers

    if selector.connection != settings.connection_id:
        return fail(f"this process writes to the Kleer company of connection {settings.connection_id!r} "
                    f"(CONNECTION_ID), not {selector.connection!r}; run it with that connection's settings")
    async with bootstrap(settings, clients=True, pool_size=4) as deps:
        handlers = InboundHandlers.from_deps(deps)
        bar = ProgressBar("dry run" if args.dry_run else "replay")
        try:
            if args.dry_run:
                report = await inbound_dry_run(pool, selector, handlers, progress=bar.update,
                                               batch_size=args.batch_size)
                bar.finish()
                return _print_dry_run(report, args)
            outcome = await run_inbound_replay(PostgresEventStore(pool), selector, handlers, actor=args.actor,
                                               progress=bar.update, batch_size=args.batch_size, on_start=announce)
        except ReplayError as exc:
            bar.finish()
            return fail(str(exc), 1)
        bar.finish()
    return _print_run(outcome, args)



def selector_from(args: argparse.Namespace, connection: str) -> ReplaySelector | InboundSelector:
    """The selection named by the command's options (``ReplayError`` for bad ones)."""
    if getattr(args, "direction", "outbound") == "inbound":
        if any(t != WEBHOOK_RECEIVED for t in args.event_types):
            raise ReplayError(f"inbound replay re-drives {WEBHOOK_RECEIVED} events; leave out --event-type")
        return InboundSelector(
            connection=connection,
            kinds=tuple(dict.fromkeys(inbound_kind(k) for k in args.kinds)),
            records=tuple(args.records),
            since=parse_moment(args.since) if args.since else None,
            until=parse_moment(args.until) if args.until else None,
            from_position=args.from_position,
            to_position=args.to_position,
        )
    return ReplaySelector(
        connection=connection,
        kinds=tuple(dict.fromkeys(object_kind(k) for k in args.kinds)),
        records=tuple(args.records),
        event_types=tuple(args.event_types),
        since=parse_moment(args.since) if args.since else None,
        until=parse_moment(args.until) if args.until else None,
        from_position=args.from_position,
        to_position=args.to_position,
    )


def announce(run_id: str, resumed: bool) -> None:
    verb = "resumed" if resumed else "started"
    print(f"replay {run_id} {verb}; if it is interrupted: kleer-sync replay --resume {run_id}", file=sys.stderr)


def run_replay_command(args: argparse.Namespace) -> int:
    async def body(settings: Settings, pool: asyncpg.Pool) -> int:
        if args.runs:
            runs = await recent_runs(pool)
            if args.json:
                print_json([render.run_json(r) for r in runs])
            else:
                print(render.runs_table(runs))
            return 0
        try:
            if args.resume:
                run = await get_run(pool, args.resume)
                if run is None or run.status != "running":
                    state = "no such run" if run is None else f"it is {run.status}"
                    return fail(f"cannot resume replay {args.resume}: {state} (`kleer-sync replay --runs`)", 1)
                selector: ReplaySelector | InboundSelector = (
                    InboundSelector.from_json(run.selector) if is_inbound(run.selector)
                    else ReplaySelector.from_json(run.selector)
                )
            else:
                selector = selector_from(args, args.connection or settings.connection_id)
        except (ReplayError, ValueError) as exc:
            return fail(str(exc))
        if isinstance(selector, InboundSelector):
            return await _inbound_replay(settings, pool, selector, args)
        async with replay_tools(settings) as tools:
            tools.check(selector)
            bar = ProgressBar("dry run" if args.dry_run else "replay")
            try:
                if args.dry_run:
                    report = await dry_run(
                        pool, selector, tools.reader, progress=bar.update, batch_size=args.batch_size
                    )
                    bar.finish()
                    return _print_dry_run(report, args)
                store = PostgresEventStore(pool)
                outcome = await run_replay(
                    store,
                    selector,
                    tools.make_pusher(args.actor),
                    actor=args.actor,
                    progress=bar.update,
                    batch_size=args.batch_size,
                    on_start=announce,
                )
            except ReplayError as exc:
                bar.finish()
                return fail(str(exc), 1)
            bar.finish()
        return _print_run(outcome, args)

    if args.dry_run and args.runs:
        return fail("--runs lists runs; leave out --dry-run")
    if args.resume and args.direction != "outbound":
        return fail("--resume goes on with the run's own selection and direction; leave out --direction")
    selecting = args.kinds or args.records or args.event_types or args.since or args.until
    if args.resume and (selecting or args.dry_run or args.from_position or args.to_position):
        return fail("--resume goes on with the run's own selection; leave out the selection options")
    if not 1 <= args.batch_size <= 1000:
        return fail("--batch-size must be between 1 and 1000")
    return run_with_pool(body)
