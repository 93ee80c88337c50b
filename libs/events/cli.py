"""``kleer-sync db migrate`` and ``kleer-sync relay``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from typing import Any

import asyncpg

from libs.config import ConfigError, load_settings
from libs.events.grants import GrantError, apply_grants, planned_grants, user_of
from libs.events.kafka import DEFAULT_PARTITIONS
from libs.events.migrate import MigrationError, migrate
from libs.events.relay import Relay, RelayConfig
from libs.events.store import EventStoreError, PostgresEventStore, create_pool
from libs.observability.health import HealthServer, kafka_check, migrations_check, postgres_check
from libs.observability.logging import configure_logging, get_logger
from libs.runtime import run_event_loop, serve

DEFAULT_ROUTER = "services.topics:make_router"


def register(subparsers: Any) -> None:
    db = subparsers.add_parser("db", help="database tasks")
    db_commands = db.add_subparsers(dest="db_command", metavar="TASK")
    db_commands.required = True
    mig = db_commands.add_parser(
        "migrate",
        help="apply pending migrations (safe to run twice); as DATABASE_OWNER_URL when set, then grant "
        "DATABASE_URL's user what the services need",
    )
    mig.set_defaults(func=run_migrate)
    grants = db_commands.add_parser(
        "grants", help="print the GRANT statements the services' role needs (for a DBA to review or apply)"
    )
    grants.add_argument("--role", help="the services' role (default: the user of DATABASE_URL)")
    grants.set_defaults(func=run_grants)

    relay = subparsers.add_parser("relay", help="publish the event log to Kafka (outbox relay)")
    relay.add_argument("--batch-size", type=int, default=2000)
    relay.add_argument("--router", default=DEFAULT_ROUTER, help="module:function building the event router")
    relay.set_defaults(func=run_relay)


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def _service_and_owner_dsns() -> tuple[str, str]:
    """``DATABASE_URL`` (the services' role) and the schema owner's DSN (``DATABASE_OWNER_URL``, else the same)."""
    settings = load_settings(required=["DATABASE_URL"])
    service_dsn = settings.require("DATABASE_URL")
    return service_dsn, settings.get("DATABASE_OWNER_URL") or service_dsn


def run_migrate(args: argparse.Namespace) -> int:
    try:
        service_dsn, owner_dsn = _service_and_owner_dsns()
        applied = asyncio.run(migrate(owner_dsn))
        print(f"database is up to date ({len(applied)} migration(s) applied now)")
        service_role = user_of(service_dsn)
        if owner_dsn != service_dsn and service_role and service_role != user_of(owner_dsn):
            statements = asyncio.run(apply_grants(owner_dsn, service_role))
            print(f"granted role {service_role!r} what the services need ({len(statements)} statements; "
                  "`kleer-sync db grants` prints them)")
    except (ConfigError, MigrationError, GrantError) as exc:
        return _fail(str(exc))
    except (OSError, asyncpg.PostgresError) as exc:
        return _fail(f"cannot grant the services' role: {exc}. Check DATABASE_OWNER_URL.")
    return 0


def run_grants(args: argparse.Namespace) -> int:
    try:
        service_dsn, owner_dsn = _service_and_owner_dsns()
    except ConfigError as exc:
        return _fail(str(exc))
    role = args.role or user_of(service_dsn)
    if not role:
        return _fail("DATABASE_URL names no user: say which role the services run as with --role")
    try:
        for statement in asyncio.run(planned_grants(owner_dsn, role)):
            print(f"{statement};")
    except (OSError, asyncpg.PostgresError) as exc:
        return _fail(f"cannot read the schema: {exc}. Check DATABASE_URL (or DATABASE_OWNER_URL).")
    return 0


def load_router(dotted: str, topic_prefix: str | None) -> Any:
    module_name, _, attr = dotted.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(topic_prefix)


def run_relay(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(required=["DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"])
    except ConfigError as exc:
        return _fail(str(exc))
    configure_logging(settings.get("LOG_LEVEL") or "info", role="relay")
    try:
        run_event_loop(_relay_main(settings, args))
    except EventStoreError as exc:
        return _fail(str(exc))
    return 0


async def _relay_main(settings: Any, args: argparse.Namespace) -> None:
    log = get_logger("relay")
    pool = await create_pool(settings.require("DATABASE_URL"), min_size=2, max_size=4)
    try:
        topic_prefix = settings.get("KAFKA_TOPIC_PREFIX")
        module = importlib.import_module(args.router.partition(":")[0])
        topics = module.all_topic_names(topic_prefix) if hasattr(module, "all_topic_names") else []
        bootstrap = settings.require("KAFKA_BOOTSTRAP_SERVERS")
        relay = Relay(
            PostgresEventStore(pool),
            load_router(args.router, topic_prefix),
            RelayConfig(
                bootstrap_servers=bootstrap,
                topics=topics,
                batch_size=args.batch_size,
                partitions=settings.get_int("KAFKA_PARTITIONS") or DEFAULT_PARTITIONS,
                create_topics=(settings.get("KAFKA_CREATE_TOPICS") or "true").lower() != "false",
            ),
        )
        health = HealthServer(
            settings.get_int("METRICS_PORT") or 9102,
            {
                "postgres": postgres_check(pool),
                "migrations": migrations_check(pool),
                "kafka": kafka_check(bootstrap),
            },
            pool=pool,
        )
        log.info("relay starting", topics=topics)
        await serve([relay], health)
    finally:
        await pool.close()
