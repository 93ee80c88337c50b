"""The inbound service's dependencies, built in one place (``bootstrap``) and handed in.

``InboundDeps`` holds the connection pool, the event store, the dead-letter
queue, the group committer, the mappings, the options and, for processes that
apply changes to Kleer, the Kleer and HubSpot clients. Tests build it the same
way, or construct it directly with their own parts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from libs.config import Settings
from libs.events.dlq import DeadLetterQueue
from libs.events.group_commit import GroupCommitter
from libs.events.store import PostgresEventStore, create_pool
from libs.mapping.loader import load_mappings
from libs.mapping.model import Mappings
from services.inbound.options import InboundOptions


@dataclass
class InboundDeps:
    settings: Settings
    options: InboundOptions
    pool: asyncpg.Pool
    store: PostgresEventStore
    dlq: DeadLetterQueue
    committer: GroupCommitter
    mappings: Mappings
    bootstrap_servers: str | None = None
    topic_prefix: str | None = None
    kleer: Any = None  # libs.kleer.KleerClient, started (handlers only)
    hubspot: Any = None  # services.inbound.hubspot_port.HubSpotPort (handlers only)
    extras: dict[str, Any] = field(default_factory=dict)  # for route installers' own parts


@contextlib.asynccontextmanager
async def bootstrap(
    settings: Settings,
    *,
    clients: bool = False,
    options: InboundOptions | None = None,
    pool_size: int = 10,
) -> AsyncIterator[InboundDeps]:
    """Build every dependency from the settings; closes them all on exit.

    ``clients=True`` also starts the Kleer and HubSpot clients (the handlers
    need them; the webhook intake does not).
    """
    options = options or InboundOptions.from_settings(settings)
    pool = await create_pool(settings.require("DATABASE_URL"), min_size=2, max_size=pool_size)
    store = PostgresEventStore(pool)
    committer = GroupCommitter(store, max_delay=options.group_commit_delay)
    await committer.start()
    stack = contextlib.AsyncExitStack()
    try:
        deps = InboundDeps(
            settings=settings,
            options=options,
            pool=pool,
            store=store,
            dlq=DeadLetterQueue(store),
            committer=committer,
            mappings=load_mappings(settings.get("MAPPINGS_FILE")),
            bootstrap_servers=settings.get("KAFKA_BOOTSTRAP_SERVERS"),
            topic_prefix=settings.get("KAFKA_TOPIC_PREFIX"),
        )
        if clients:
            from libs.kleer import KleerClient
            from services.inbound.hubspot_port import hubspot_port_from_settings

            deps.kleer = await stack.enter_async_context(KleerClient.from_settings(settings))
            deps.hubspot = await stack.enter_async_context(hubspot_port_from_settings(settings, pool))
        yield deps
    finally:
        await stack.aclose()
        await committer.stop()
        await pool.close()
