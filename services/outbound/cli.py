"""``kleer-sync outbound [poller|pusher]`` and ``kleer-sync hubspot setup``.

- ``kleer-sync outbound``: poller, relay and pusher in one process.
- ``kleer-sync outbound poller [--once] [--types clients,invoices]``: the poller alone
  (``--once``: one pass now, print what changed, exit).
- ``kleer-sync outbound pusher``: the pusher alone (consumer group ``outbound-pusher``).
- ``kleer-sync outbound pause [--reason TEXT]`` / ``resume``: every pusher stops taking changes from Kafka
  (the batch in flight is written and committed first) / takes them again; changes queue meanwhile.
- ``kleer-sync hubspot setup``: create our property group and custom properties (safe to run twice).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import asyncpg

from libs.config import ConfigError, Settings, load_settings
from libs.events.pauses import PAUSE_CHECK_SECONDS
from libs.events.store import EventStoreError, create_pool
from libs.hubspot.errors import HubSpotError
from libs.kleer import KleerError
from libs.mapping.errors import MappingsFileError
from libs.mapping.loader import load_mappings
from libs.observability.logging import configure_logging
from libs.runtime import run_event_loop
from services.cli import command_group
from services.outbound.settings import POLL_TYPES, parse_poll_types

_KAFKA = ["KAFKA_BOOTSTRAP_SERVERS"]
_KLEER = ["KLEER_TOKEN", "KLEER_COMPANY_ID"]
_HUBSPOT = ["HUBSPOT_ACCESS_TOKEN"]


def register(subparsers: Any) -> None:
    outbound = subparsers.add_parser(
        "outbound",
        help="Kleer -> HubSpot: poller, relay and pusher (all three without a sub-command)",
        description="Run the outbound flow. Without a sub-command: poller, relay and pusher in one process.",
    )
    outbound.add_argument("--types", help=f"object types to poll, comma separated: {', '.join(POLL_TYPES)}")
    outbound.set_defaults(func=run_all)
    parts = outbound.add_subparsers(dest="outbound_command", metavar="PART")
    poller = parts.add_parser("poller", help="poll Kleer and record changes in the event log")
    poller.add_argument("--once", action="store_true", help="poll once now, print what changed, and exit")
    poller.add_argument("--types", help=f"object types to poll, comma separated: {', '.join(POLL_TYPES)}")
    poller.set_defaults(func=run_poller)
    pusher = parts.add_parser("pusher", help="push recorded changes to HubSpot (consumer outbound-pusher)")
    pusher.set_defaults(func=run_pusher)
    pause = parts.add_parser(
        "pause", help="stop every pusher writing to HubSpot: changes queue in Kafka until `resume`"
    )
    pause.add_argument("--reason", default="", help="why (shown by the pushers' log and by `resume`)")
    pause.add_argument("--actor", default=None, help="who pauses (default: user:<login>)")
    pause.set_defaults(func=run_pause)
    resume = parts.add_parser("resume", help="let the pushers take the queued changes again")
    resume.set_defaults(func=run_resume)

    hubspot = command_group(subparsers, "hubspot", help="HubSpot portal tasks")
    setup = hubspot.add_parser(
        "setup", help="create the kleer property group and custom properties (idempotent)"
    )
    setup.set_defaults(func=run_setup)


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def _settings(required: list[str], role: str) -> Settings:
    settings = load_settings(required=["DATABASE_URL", *required])
    configure_logging(settings.get("LOG_LEVEL") or "info", role=role)
    return settings


def _run(args: argparse.Namespace, *, poller: bool, pusher: bool, relay: bool, role: str) -> int:
    from services.outbound.app import run_outbound

    required = (
        (_KAFKA if (pusher or relay) else []) + (_KLEER if poller else []) + (_HUBSPOT if pusher else [])
    )
    try:
        settings = _settings(required, role)
        kinds = parse_poll_types(getattr(args, "types", None))
        load_mappings(settings.get("MAPPINGS_FILE"))  # fail now, not in the first poll
        run_event_loop(run_outbound(settings, poller=poller, pusher=pusher, relay=relay, kinds=kinds))
    except (ConfigError, MappingsFileError, EventStoreError) as exc:
        return _fail(str(exc))
    return 0


def run_all(args: argparse.Namespace) -> int:
    return _run(args, poller=True, pusher=True, relay=True, role="outbound")


def run_pusher(args: argparse.Namespace) -> int:
    return _run(args, poller=False, pusher=True, relay=False, role="pusher")


def run_poller(args: argparse.Namespace) -> int:
    if not args.once:
        return _run(args, poller=True, pusher=False, relay=False, role="poller")
    try:
        settings = _settings(_KLEER, "poller")
        kinds = parse_poll_types(args.types)
        report = run_event_loop(_poll_once(settings, kinds))
    except (ConfigError, MappingsFileError, EventStoreError, KleerError) as exc:
        return _fail(str(exc))
    for kind, line in report.kinds.items():
        status = f"FAILED: {line.error}" if line.error else "ok"
        print(
            f"{kind:10} seen {line.seen:>7}  changed {line.changed:>6}  removed {line.removed:>5}  "
            f"unmappable {line.failed:>4}  {line.seconds:6.2f}s  {status}"
        )
    return 0 if report.ok else 1


async def _poll_once(settings: Settings, kinds: tuple[str, ...]) -> Any:
    from services.outbound.app import outbound_runtime
    from services.outbound.poller import PollerBusy

    async with outbound_runtime(settings, kleer=True, hubspot=False) as runtime:
        try:
            return await runtime.poller(kinds).poll_once(kinds)
        except PollerBusy as exc:
            raise ConfigError([str(exc)]) from None


def run_pause(args: argparse.Namespace) -> int:
    from libs.events.pauses import pause
    from services.operations.cli import default_actor
    from services.outbound.app import PUSHER_GROUP

    async def main(dsn: str) -> str:
        pool = await create_pool(dsn, min_size=1, max_size=1)
        try:
            found = await pause(pool, PUSHER_GROUP, reason=args.reason, by=args.actor or default_actor())
        finally:
            await pool.close()
        return (f"pushers paused since {found.paused_at:%Y-%m-%d %H:%M:%S %Z} by {found.paused_by}"
                + (f" ({found.reason})" if found.reason else "")
                + ": they finish the batch in hand, then take nothing from Kafka until "
                "`kleer-sync outbound resume`")

    return _with_database(main)


def run_resume(args: argparse.Namespace) -> int:
    from libs.events.pauses import resume
    from services.outbound.app import PUSHER_GROUP

    async def main(dsn: str) -> str:
        pool = await create_pool(dsn, min_size=1, max_size=1)
        try:
            ended = await resume(pool, PUSHER_GROUP)
        finally:
            await pool.close()
        if ended is None:
            return "the pushers were not paused"
        return (f"pushers resumed (paused since {ended.paused_at:%Y-%m-%d %H:%M:%S %Z} by {ended.paused_by}): "
                f"they take the queued changes within {PAUSE_CHECK_SECONDS:g} s")

    return _with_database(main)


def _with_database(main: Any) -> int:
    try:
        settings = load_settings(required=["DATABASE_URL"])
        print(asyncio.run(main(settings.require("DATABASE_URL"))))
    except (ConfigError, EventStoreError) as exc:
        return _fail(str(exc))
    except (OSError, asyncpg.PostgresError) as exc:
        return _fail(f"cannot reach Postgres at DATABASE_URL ({type(exc).__name__}: {exc}); "
                     "is it running, and has `kleer-sync db migrate` run?")
    return 0


def run_setup(args: argparse.Namespace) -> int:
    from services.outbound.setup import describe, setup_hubspot

    async def main(settings: Settings) -> str:
        from services.outbound.app import hubspot_client

        async with hubspot_client(settings, None) as client:
            return describe(await setup_hubspot(client, load_mappings(settings.get("MAPPINGS_FILE"))))

    try:
        settings = load_settings(required=_HUBSPOT)
        configure_logging(settings.get("LOG_LEVEL") or "info", role="setup")
        print(asyncio.run(main(settings)))
    except (ConfigError, MappingsFileError, HubSpotError) as exc:
        return _fail(f"HubSpot setup failed: {exc}")
    print("HubSpot is ready for kleer-sync (run this again any time: it only adds what is missing).")
    return 0
