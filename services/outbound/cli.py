"""``kleer-sync outbound [poller|pusher]`` and ``kleer-sync hubspot setup``.

- ``kleer-sync outbound``: poller, relay and pusher in one process.
- ``kleer-sync outbound poller [--once] [--types clients,invoices]``: the poller alone
  (``--once``: one pass now, print what changed, exit).
- ``kleer-sync outbound pusher``: the pusher alone (consumer group ``outbound-pusher``).
- ``kleer-sync hubspot setup``: create our property group and custom properties (safe to run twice).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from libs.config import ConfigError, Settings, load_settings
from libs.events.store import EventStoreError
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
