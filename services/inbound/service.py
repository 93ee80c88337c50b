"""Running the inbound service: the web server, the handlers and (optionally) the relay as components.

``run_inbound(settings, web=..., handlers=..., relay=...)`` builds the
dependencies once (``bootstrap``), starts the chosen components side by side
under ``libs.runtime.serve`` (SIGTERM: stop taking requests / batches, finish
what is in flight) with the health server on ``METRICS_PORT``.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from libs.config import Settings
from libs.events.consumer import ConsumerConfig, EventConsumer
from libs.events.kafka import DEFAULT_PARTITIONS
from libs.events.relay import Relay, RelayConfig
from libs.observability.health import HealthServer
from libs.observability.logging import get_logger
from libs.runtime import Component, serve
from services.inbound.app import app_runner, create_app, readiness_checks
from services.inbound.deps import InboundDeps, bootstrap
from services.inbound.handlers import CONSUMER_NAME, InboundHandlers
from services.inbound.options import InboundOptions
from services.topics import INBOUND_WEBHOOKS, all_topic_names, make_router, topic_name

log = get_logger(__name__)

#: The handlers' longest fetch wait: the dev broker delivers a new webhook about a quarter of this late at
#: p50 (500 ms, aiokafka's default, made it ~130 ms); idle, each member fetches 20 times a second.
INBOUND_FETCH_MAX_WAIT_MS = 50


class WebServer:
    """The aiohttp app as a component: serves until ``stop``, then closes the listener."""

    def __init__(self, app: web.Application, port: int, host: str = "0.0.0.0") -> None:
        self.app, self.port, self.host = app, port, host
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        runner = app_runner(self.app)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
            log.info("inbound web server listening", port=self.port)
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    async def stop(self) -> None:
        self._stopping.set()


def handlers_consumers(deps: InboundDeps, count: int = 1) -> list[EventConsumer]:
    """``count`` members of the ``inbound-handlers`` group: partitions are handled in parallel, each by one."""
    handlers = InboundHandlers.from_deps(deps)
    return [handlers_consumer(deps, handlers) for _ in range(max(1, count))]


def handlers_consumer(deps: InboundDeps, handlers: InboundHandlers | None = None) -> EventConsumer:
    prefix = deps.topic_prefix
    assert deps.bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS is required for the handlers"
    handlers = handlers or InboundHandlers.from_deps(deps)
    return EventConsumer(
        deps.store,
        handlers.handle,
        ConsumerConfig(
            name=CONSUMER_NAME,
            topics=[topic_name(INBOUND_WEBHOOKS, prefix)],
            bootstrap_servers=deps.bootstrap_servers,
            router=make_router(prefix),  # type: ignore[arg-type]
            partitions=deps.settings.get_int("KAFKA_PARTITIONS") or DEFAULT_PARTITIONS,
            poll_timeout_ms=50,
            # Webhook-to-Kleer latency: a fetch waits at most this long (see ConsumerConfig.fetch_max_wait_ms).
            fetch_max_wait_ms=INBOUND_FETCH_MAX_WAIT_MS,
        ),
        deps.dlq,
    )


def relay_component(deps: InboundDeps) -> Relay:
    assert deps.bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS is required for the relay"
    return Relay(
        deps.store,
        make_router(deps.topic_prefix),  # type: ignore[arg-type]
        RelayConfig(
            bootstrap_servers=deps.bootstrap_servers,
            topics=all_topic_names(deps.topic_prefix),
            partitions=deps.settings.get_int("KAFKA_PARTITIONS") or DEFAULT_PARTITIONS,
            idle_sleep=0.01,
        ),
    )


async def run_inbound(
    settings: Settings,
    *,
    web_server: bool = True,
    handlers: bool = False,
    relay: bool = False,
    consumers: int | None = None,
    stop_event: asyncio.Event | None = None,
) -> None:
    """Run the chosen components; ``consumers`` handler group members (default: one per partition)."""
    options = InboundOptions.from_settings(settings, intake=web_server)
    async with bootstrap(settings, clients=handlers, options=options) as deps:
        components: list[Component] = []
        if web_server:
            components.append(WebServer(create_app(deps), settings.get_int("PORT") or 8080))
        if handlers:
            partitions = settings.get_int("KAFKA_PARTITIONS") or DEFAULT_PARTITIONS
            components.extend(handlers_consumers(deps, consumers or partitions))
        if relay:
            components.append(relay_component(deps))
        health = HealthServer(settings.get_int("METRICS_PORT") or 9102, readiness_checks(deps), pool=deps.pool)
        log.info("inbound starting", web=web_server, handlers=handlers, relay=relay)
        await serve(components, health, stop_event=stop_event)
