"""Wiring of the outbound processes: settings in, running poller / relay / pusher out.

``outbound_runtime(settings)`` opens what the processes share (the Postgres
pool, the Kleer client, the HubSpot client with the portal's Postgres-backed
rate budget) and closes it again; ``run_outbound`` runs the chosen components
under ``libs.runtime.serve`` with the health server on ``METRICS_PORT``. On
SIGTERM each component finishes the batch in flight, commits, and the process
exits.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import asyncpg

from libs.config import Settings
from libs.events.consumer import ConsumerConfig, Router
from libs.events.dlq import DeadLetterQueue
from libs.events.kafka import DEFAULT_PARTITIONS
from libs.events.relay import Relay, RelayConfig
from libs.events.store import PostgresEventStore, create_pool
from libs.hubspot.client import HubSpotClient
from libs.hubspot.rate_budget import DEFAULT_MAX_REQUESTS, PostgresRateBudget, UnlimitedBudget
from libs.kleer import KleerClient
from libs.mapping.loader import load_mappings
from libs.mapping.model import Mappings
from libs.observability.health import HealthServer, kafka_check, migrations_check, postgres_check
from libs.observability.logging import get_logger
from libs.runtime import Component, serve
from services.outbound.consumer import PUSH_BATCH_EVENTS, PUSH_LINGER_S, BatchingConsumer
from services.outbound.poller import Poller, PollerConfig
from services.outbound.pusher import Pusher
from services.outbound.settings import OutboundSettings
from services.outbound.snapshots import KINDS
from services.topics import OUTBOUND_CHANGES, all_topic_names, make_router, topic_name

log = get_logger(__name__)

PUSHER_GROUP = "outbound-pusher"
# Batch requests in flight per batch call: enough to keep the portal's rate budget spent while answers
# take their time (the budget, not this, paces the requests).
PUSH_CONCURRENCY = 8
# Garbage-collector thresholds of the outbound processes (the defaults are 700, 10, 10). A young
# collection walks every young object still alive, and a batch keeps hundreds of thousands alive for
# its whole second: at 100,000 the pusher collected several times per batch and spent 3.1 of its 21 s of
# CPU there (bench_outbound --scale 0.5 --only limited, timed with gc.callbacks); at 1,000,000, 0.1 s.
GC_THRESHOLDS = (1_000_000, 20, 100)


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for processes that handle batches of thousands of records.

    The poller and the pusher hold tens of thousands of live objects per batch; with Python's default
    thresholds every batch promotes them to the oldest generation and triggers full collections that
    walk the whole heap again and again (measured: half of the pusher's CPU time). Collecting the young
    generation every 1,000,000 allocations instead (at most about once per batch), and freezing what
    exists at start-up (modules, settings), leaves the collector under 1 %. Reference counting still
    frees everything acyclic at once; only cyclic garbage waits for the next collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def pusher_consumer(
    store: PostgresEventStore,
    pusher: Pusher,
    *,
    bootstrap_servers: str,
    topic_prefix: str | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    max_events: int = PUSH_BATCH_EVENTS,
    linger: float = PUSH_LINGER_S,
    group: str = PUSHER_GROUP,
) -> BatchingConsumer:
    """The ``outbound-pusher`` consumer of ``outbound.changes`` feeding ``pusher.handle``."""
    config = ConsumerConfig(
        name=group,
        topics=[topic_name(OUTBOUND_CHANGES, topic_prefix)],
        bootstrap_servers=bootstrap_servers,
        max_batch=min(max_events, 2_000),
        router=cast(Router, make_router(topic_prefix)),
        partitions=partitions,
    )
    return BatchingConsumer(
        store,
        pusher.handle,
        config,
        DeadLetterQueue(store),
        max_events=max_events,
        linger=linger,
        on_idle=pusher.sweep,
        on_discard=pusher.forget_recent,
        prepare=pusher.prepare,
    )


def relay(store: PostgresEventStore, settings: Settings) -> Relay:
    prefix = settings.get("KAFKA_TOPIC_PREFIX")
    return Relay(
        store,
        cast(Router, make_router(prefix)),
        RelayConfig(
            bootstrap_servers=settings.require("KAFKA_BOOTSTRAP_SERVERS"),
            topics=all_topic_names(prefix),
            partitions=settings.get_int("KAFKA_PARTITIONS") or DEFAULT_PARTITIONS,
            create_topics=(settings.get("KAFKA_CREATE_TOPICS") or "true").lower() != "false",
        ),
    )


def hubspot_client(settings: Settings, pool: asyncpg.Pool | None) -> HubSpotClient:
    """The portal's client. With ``pool`` its rate budget (``HUBSPOT_RATE_LIMIT`` per 10 s) is shared through
    Postgres by every process of the portal; ``HUBSPOT_RATE_LIMIT=0`` turns the budget off."""
    options: dict[str, Any] = {"concurrency": PUSH_CONCURRENCY}
    limit = settings.get_int("HUBSPOT_RATE_LIMIT")
    if limit == 0:
        options["budget"] = UnlimitedBudget()
    elif pool is not None:
        portal = settings.get("HUBSPOT_PORTAL_ID") or settings.connection_id
        options["budget"] = PostgresRateBudget(pool, portal, max_requests=limit or DEFAULT_MAX_REQUESTS)
    return HubSpotClient.from_settings(settings, **options)


@dataclass
class Runtime:
    settings: Settings
    outbound: OutboundSettings
    pool: asyncpg.Pool
    store: PostgresEventStore
    kleer: KleerClient | None
    hubspot: HubSpotClient | None

    @property
    def mappings(self) -> Mappings:
        return load_mappings(self.settings.get("MAPPINGS_FILE"))

    def poller(self, kinds: Sequence[str] = KINDS) -> Poller:
        assert self.kleer is not None, "the poller needs the Kleer client"
        config = PollerConfig(
            connection=self.outbound.connection,
            intervals=self.outbound.intervals,
            include_credit_invoices=self.outbound.include_credit_invoices,
            invoice_history_days=self.outbound.invoice_history_days,
            mappings=self.mappings,
        )
        return Poller(self.pool, self.store, self.kleer, config, kinds)

    def pusher(self) -> Pusher:
        assert self.hubspot is not None, "the pusher needs the HubSpot client"
        return Pusher(
            self.store,
            {self.outbound.connection: self.hubspot},
            removal=self.outbound.removal,
            mappings=self.mappings,
        )

    def consumer(self, pusher: Pusher) -> BatchingConsumer:
        return pusher_consumer(
            self.store,
            pusher,
            bootstrap_servers=self.settings.require("KAFKA_BOOTSTRAP_SERVERS"),
            topic_prefix=self.settings.get("KAFKA_TOPIC_PREFIX"),
            partitions=self.settings.get_int("KAFKA_PARTITIONS") or DEFAULT_PARTITIONS,
        )

    def relay(self) -> Relay:
        return relay(self.store, self.settings)

    def health(self, *, kafka: bool) -> HealthServer:
        checks = {"postgres": postgres_check(self.pool), "migrations": migrations_check(self.pool)}
        if kafka:
            checks["kafka"] = kafka_check(self.settings.require("KAFKA_BOOTSTRAP_SERVERS"))
        return HealthServer(self.settings.get_int("METRICS_PORT") or 9102, checks, pool=self.pool)


@contextlib.asynccontextmanager
async def outbound_runtime(settings: Settings, *, kleer: bool, hubspot: bool) -> AsyncIterator[Runtime]:
    """Open the shared resources of an outbound process; everything is closed on exit."""
    outbound = OutboundSettings.from_settings(settings)
    pool = await create_pool(settings.require("DATABASE_URL"), min_size=2, max_size=10)
    try:
        async with contextlib.AsyncExitStack() as stack:
            kleer_client = (
                await stack.enter_async_context(KleerClient.from_settings(settings)) if kleer else None
            )
            hubspot_client_ = (
                await stack.enter_async_context(hubspot_client(settings, pool)) if hubspot else None
            )
            yield Runtime(settings, outbound, pool, PostgresEventStore(pool), kleer_client, hubspot_client_)
    finally:
        await pool.close()


async def run_outbound(
    settings: Settings, *, poller: bool, pusher: bool, relay: bool, kinds: Sequence[str]
) -> None:
    """Run the chosen components until SIGTERM/SIGINT."""
    tune_gc()
    async with outbound_runtime(settings, kleer=poller, hubspot=pusher) as runtime:
        components: list[Component] = []
        if poller:
            components.append(runtime.poller(kinds))
        if relay:
            components.append(runtime.relay())
        if pusher:
            components.append(runtime.consumer(runtime.pusher()))
        log.info(
            "outbound starting",
            connection=runtime.outbound.connection,
            poller=poller,
            relay=relay,
            pusher=pusher,
        )
        await serve(components, runtime.health(kafka=relay or pusher))
