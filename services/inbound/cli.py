"""``kleer-sync inbound`` (webhook server) and ``kleer-sync inbound handlers`` (apply to Kleer)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from libs.config import ConfigError, load_settings
from libs.events.store import EventStoreError
from libs.observability.logging import configure_logging
from libs.runtime import run_event_loop

SERVER_NEEDS = ("DATABASE_URL", "HUBSPOT_CLIENT_SECRET", "PUBLIC_BASE_URL", "HUBSPOT_PORTAL_ID")
HANDLERS_NEEDS = (
    "DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "KLEER_TOKEN",
    "KLEER_COMPANY_ID",
    "HUBSPOT_ACCESS_TOKEN",
    "HUBSPOT_PORTAL_ID",
)


_CONSUMERS_HELP = "handler consumers in this process (default: KAFKA_PARTITIONS, one per partition)"


def register(subparsers: Any) -> None:
    inbound = subparsers.add_parser(
        "inbound",
        help="HubSpot -> Kleer: the webhook server (and, with options, the handlers and the relay)",
        description="Serve POST /webhooks/hubspot, /healthz, /readyz, /metrics and /openapi.json on PORT.",
    )
    inbound.add_argument("--with-handlers", action="store_true", help="also apply webhooks to Kleer here")
    inbound.add_argument("--with-relay", action="store_true", help="also publish the event log to Kafka here")
    inbound.add_argument("--consumers", type=int, default=None, help=_CONSUMERS_HELP)
    inbound.set_defaults(func=run_server)
    commands = inbound.add_subparsers(dest="inbound_command", metavar="PART")
    handlers = commands.add_parser(
        "handlers", help="apply recorded HubSpot webhooks to Kleer (consumer group inbound-handlers)"
    )
    handlers.add_argument("--with-relay", action="store_true", help="also publish the event log to Kafka here")
    handlers.add_argument("--consumers", type=int, default=None, help=_CONSUMERS_HELP)
    handlers.set_defaults(func=run_handlers)


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def _run(
    needs: tuple[str, ...], *, web_server: bool, handlers: bool, relay: bool, role: str, consumers: int | None
) -> int:
    from services.inbound.service import run_inbound

    try:
        settings = load_settings(required=needs)
    except ConfigError as exc:
        return _fail(str(exc))
    configure_logging(settings.get("LOG_LEVEL") or "info", role=role)
    try:
        run_event_loop(
            run_inbound(settings, web_server=web_server, handlers=handlers, relay=relay, consumers=consumers)
        )
    except (ConfigError, EventStoreError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    return 0


def run_server(args: argparse.Namespace) -> int:
    needs = SERVER_NEEDS + (HANDLERS_NEEDS if args.with_handlers else ())
    if args.with_relay and "KAFKA_BOOTSTRAP_SERVERS" not in needs:
        needs += ("KAFKA_BOOTSTRAP_SERVERS",)
    return _run(tuple(dict.fromkeys(needs)), web_server=True, handlers=args.with_handlers,
                relay=args.with_relay, role="inbound", consumers=args.consumers)


def run_handlers(args: argparse.Namespace) -> int:
    return _run(HANDLERS_NEEDS, web_server=False, handlers=True, relay=args.with_relay, role="inbound-handlers",
                consumers=args.consumers)
