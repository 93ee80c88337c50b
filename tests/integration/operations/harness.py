"""Harnesses of the operations tests: a whole sync driven step by step, the admin site, the CLI.

``SyncHarness`` runs the real poller, pusher and inbound handlers and commits
each handler's result exactly as the consumer base does (its writes and
appends in one transaction); only Kafka is left out, so each step happens when
the test says so. HubSpot's webhooks come from the simulator (delivered to a
sink) and are recorded as the intake records them (``WebhookReceived``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web

from libs.config import Secret, Settings
from libs.events.consumer import HandlerResult
from libs.events.dlq import DeadLetterQueue
from libs.events.envelope import RecordedEvent
from libs.events.group_commit import GroupCommitter
from libs.events.store import AppendRequest, PostgresEventStore
from libs.hubspot.client import HubSpotClient
from libs.kleer import KleerClient
from libs.mapping.loader import default_mappings
from services.inbound.admin import install_routes
from services.inbound.app import app_runner, create_app
from services.inbound.deps import InboundDeps
from services.inbound.handlers import InboundHandlers
from services.inbound.hubspot_port import ClientHubSpotPort
from services.inbound.options import InboundOptions
from services.inbound.webhook_events import WEBHOOK_RECEIVED, parse_webhook_body
from services.operations.replay import REPLAY_SOURCE, ClientReader, ReplayTools
from services.outbound.poller import Poller, PollerConfig, PollReport
from services.outbound.pusher import Pusher
from services.outbound.setup import setup_hubspot
from services.outbound.snapshots import parse_event_type
from sim.broker import free_port
from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim, WebhookSink

CONNECTION = "acme"


async def commit(store: PostgresEventStore, result: HandlerResult) -> None:
    """Commit a handler's result as ``EventConsumer`` does: its writes and appends in one transaction."""
    await result.commit(store)


@dataclass
class SyncHarness:
    store: PostgresEventStore
    kleer_sim: KleerSimServer
    kleer: KleerClient
    hubspot_sim: HubSpotSim
    hubspot: HubSpotClient
    sink: WebhookSink
    poller: Poller = field(init=False)
    pusher: Pusher = field(init=False)
    handlers: InboundHandlers = field(init=False)
    pushed_up_to: int = 0
    webhooks_seen: int = 0

    def __post_init__(self) -> None:
        self.poller = Poller(self.pool, self.store, self.kleer, PollerConfig(connection=CONNECTION))
        self.pusher = Pusher(self.store, {CONNECTION: self.hubspot})
        options = InboundOptions(
            client_secret=Secret(self.hubspot_sim.client_secret),
            public_base_url="http://127.0.0.1",
            portals={self.hubspot_sim.portal_id: CONNECTION},
            app_id=self.hubspot_sim.app_id,
        )
        self.handlers = InboundHandlers(
            options=options,
            mappings=default_mappings(),
            pool=self.pool,
            dlq=DeadLetterQueue(self.store),
            kleer=self.kleer,
            hubspot=ClientHubSpotPort(self.hubspot),
        )

    @property
    def pool(self) -> asyncpg.Pool:
        return self.store.pool

    async def poll(self, kinds: Sequence[str] | None = None) -> PollReport:
        return await self.poller.poll_once(kinds)

    async def push(self) -> None:
        """What the pusher consumer would do with every outbound change not handled yet."""
        events = await self.store.read_all(self.pushed_up_to, 100_000)
        if not events:
            return
        self.pushed_up_to = events[-1].position
        changes = [e for e in events if parse_event_type(e.type) is not None]
        if changes:
            await commit(self.store, await self.pusher.handle(changes))

    async def sync(self, kinds: Sequence[str] | None = None) -> None:
        await self.poll(kinds)
        await self.push()

    async def record_webhooks(self) -> list[RecordedEvent]:
        """Record what HubSpot delivered since last time, as the intake does; return the recorded events."""
        await self.hubspot_sim.drain_webhooks()
        requests = self.sink.received[self.webhooks_seen :]
        self.webhooks_seen = len(self.sink.received)
        appends = []
        for request in requests:
            for event in parse_webhook_body(request.body):
                appends.append(AppendRequest(event.stream(CONNECTION), [event.to_new_event(int(time.time() * 1000))]))
        if not appends:
            return []
        results = await self.store.append_batch(appends)
        return [e for r in results if (e := await self.store.get(r.event_id)) is not None]

    async def handle_webhooks(self) -> None:
        """Record the delivered webhooks and run the inbound handlers on them."""
        recorded = [e for e in await self.record_webhooks() if e.type == WEBHOOK_RECEIVED]
        if recorded:
            await commit(self.store, await self.handlers.handle(recorded))

    def company_of(self, kleer_id: int | str) -> Any:
        kind = self.hubspot_sim.sim.object_type("companies")
        matches = [r for r in self.hubspot_sim.store.records[kind].values() if r.properties.get("kleer_id") == str(kleer_id)]
        assert len(matches) == 1, f"{len(matches)} companies carry kleer_id {kleer_id}"
        return matches[0]

    def replay_tools(self) -> ReplayTools:
        def make_pusher(actor: str) -> Pusher:
            return Pusher(self.store, {CONNECTION: self.hubspot}, actor=actor, source=REPLAY_SOURCE)

        return ReplayTools(CONNECTION, ClientReader(self.hubspot), make_pusher)

    async def events(self, *types: str) -> list[RecordedEvent]:
        return await self.store.read_all(0, 100_000, types=list(types) or None)


@contextlib.asynccontextmanager
async def sync_harness(
    store: PostgresEventStore,
    kleer_sim: KleerSimServer,
    kleer_client: KleerClient,
    hubspot_sim: HubSpotSim,
    sink: WebhookSink,
) -> AsyncIterator[SyncHarness]:
    """A ``SyncHarness`` over the simulator fixtures, HubSpot set up as ``kleer-sync hubspot setup`` does."""
    hubspot_sim.set_rate_limit(max_requests=0)  # no limit: these tests are about the log, not the budget
    hubspot_sim.configure_webhooks(sink.url, batch_window_ms=0)
    async with hubspot_sim.client() as hubspot:
        await setup_hubspot(hubspot)
        yield SyncHarness(store, kleer_sim, kleer_client, hubspot_sim, hubspot, sink)


@pytest.fixture
async def sync(
    store: PostgresEventStore,
    kleer_sim: KleerSimServer,
    kleer_client: KleerClient,
    hubspot_sim: HubSpotSim,
    hubspot_webhook_sink: WebhookSink,
) -> AsyncIterator[SyncHarness]:
    """The fixture: a ``SyncHarness`` over this test's simulators (conftests import it)."""
    async with sync_harness(store, kleer_sim, kleer_client, hubspot_sim, hubspot_webhook_sink) as harness:
        yield harness


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: bytes
    stderr: bytes

    def json(self) -> Any:
        return orjson.loads(self.stdout)


async def run_cli(*args: str, env: dict[str, str], timeout: float = 60.0) -> CliResult:
    """``kleer-sync ARGS`` in a child process (the command as an operator runs it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return CliResult(process.returncode, stdout, stderr)


ADMIN_TOKEN = "admin-token-for-tests-3f9c"


@dataclass
class AdminSite:
    base_url: str
    deps: InboundDeps
    token: str = ADMIN_TOKEN


@contextlib.asynccontextmanager
async def admin_site(
    store: PostgresEventStore,
    database_url: str,
    *,
    token: str | None = ADMIN_TOKEN,
    extras: Mapping[str, Any] | None = None,
) -> AsyncIterator[AdminSite]:
    """The inbound app with only the admin pages installed, on a free port (``token=None``: admin off)."""
    values = {"DATABASE_URL": database_url, "CONNECTION_ID": CONNECTION}
    if token is not None:
        values["ADMIN_TOKEN"] = token
    async with GroupCommitter(store) as committer:
        deps = InboundDeps(
            settings=Settings(values),
            options=InboundOptions(
                client_secret=Secret("unused-here"), public_base_url="http://127.0.0.1", portals={1: CONNECTION}
            ),
            pool=store.pool,
            store=store,
            dlq=DeadLetterQueue(store),
            committer=committer,
            mappings=default_mappings(),
            extras=dict(extras or {}),
        )
        runner = app_runner(create_app(deps, routes=[install_routes]))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield AdminSite(f"http://127.0.0.1:{port}", deps, token or "")
        finally:
            await runner.cleanup()


def fixed_redriver(redriver: Any) -> Any:
    """A redriver factory (``ServiceRedrivers``' shape) handing out a redriver the test built."""

    @contextlib.asynccontextmanager
    async def factory(_settings: Settings) -> AsyncIterator[Any]:
        yield redriver

    return factory
