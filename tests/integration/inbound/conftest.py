"""Fixtures of the inbound tests: the real app on a free port over a fresh database."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from libs.config import Secret, Settings
from libs.events.dlq import DeadLetterQueue
from libs.events.group_commit import GroupCommitter
from libs.events.store import PostgresEventStore
from libs.hubspot.signatures import HEADER_SIGNATURE, HEADER_SIGNATURE_VERSION, sign_v1, sign_v2, v3_headers
from libs.mapping.loader import default_mappings
from services.inbound.app import app_runner, create_app
from services.inbound.deps import InboundDeps
from services.inbound.options import InboundOptions
from sim.broker import free_port

SECRET = "test-client-secret-0000"
PORTAL = 62515
APP_ID = 1_234_567
CONNECTION = "acme"

_event_ids = itertools.count(1_000_000)


def company_change(object_id: int, prop: str, value: str, **extra: Any) -> dict[str, Any]:
    """A HubSpot company.propertyChange event as HubSpot sends it."""
    return {
        "eventId": next(_event_ids),
        "subscriptionId": 11,
        "portalId": PORTAL,
        "appId": APP_ID,
        "occurredAt": int(time.time() * 1000),
        "subscriptionType": "company.propertyChange",
        "attemptNumber": 0,
        "objectId": object_id,
        "propertyName": prop,
        "propertyValue": value,
        "changeSource": "CRM_UI",
        "sourceId": "userId:1",
        **extra,
    }


def signed_headers(url: str, body: bytes, version: str = "v3", secret: str = SECRET, method: str = "POST",
                   timestamp_ms: int | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if version == "v3":
        headers.update(v3_headers(secret, method, url, body, timestamp_ms or int(time.time() * 1000)))
    elif version == "v2":
        headers.update({HEADER_SIGNATURE: sign_v2(secret, method, url, body), HEADER_SIGNATURE_VERSION: "v2"})
    elif version == "v1":
        headers.update({HEADER_SIGNATURE: sign_v1(secret, body), HEADER_SIGNATURE_VERSION: "v1"})
    return headers


@dataclass
class InboundServer:
    base_url: str
    deps: InboundDeps
    session: aiohttp.ClientSession

    @property
    def webhook_url(self) -> str:
        return self.base_url + "/webhooks/hubspot"

    async def post_events(self, events: Sequence[dict[str, Any]], version: str = "v3") -> aiohttp.ClientResponse:
        body = orjson.dumps(list(events))
        headers = signed_headers(self.webhook_url, body, version)
        async with self.session.post(self.webhook_url, data=body, headers=headers) as response:
            await response.read()
            return response


def inbound_options(base_url: str, **overrides: Any) -> InboundOptions:
    return InboundOptions(
        client_secret=Secret(SECRET),
        public_base_url=base_url,
        app_id=APP_ID,
        **{"portals": {PORTAL: CONNECTION}, **overrides},
    )


def inbound_settings(database_url: str, **values: str) -> Settings:
    return Settings({"DATABASE_URL": database_url, "CONNECTION_ID": CONNECTION, **values})


@contextlib.asynccontextmanager
async def serve_inbound(
    pool: asyncpg.Pool, store: PostgresEventStore, database_url: str,
    portals: dict[int, str] | None = None,
) -> AsyncIterator[InboundServer]:
    """The intake app (no optional routes) on a free port; ``portals`` served besides PORTAL."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    options = inbound_options(base_url, portals={PORTAL: CONNECTION, **(portals or {})})
    async with GroupCommitter(store) as committer:
        deps = InboundDeps(
            settings=inbound_settings(database_url),
            options=options,
            pool=pool,
            store=store,
            dlq=DeadLetterQueue(store),
            committer=committer,
            mappings=default_mappings(),
        )
        runner = app_runner(create_app(deps, routes=()))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with aiohttp.ClientSession() as session:
                yield InboundServer(base_url, deps, session)
        finally:
            await runner.cleanup()


@pytest.fixture
async def inbound_server(
    pool: asyncpg.Pool, store: PostgresEventStore, database_url: str
) -> AsyncIterator[InboundServer]:
    async with serve_inbound(pool, store, database_url) as server:
        yield server


# --- the whole inbound path: HubSpot simulator -> intake -> log -> relay -> Kafka -> handlers -> Kleer simulator ---

import asyncio  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402

from libs.events.consumer import ConsumerConfig, EventConsumer  # noqa: E402
from libs.events.kafka import ensure_topics  # noqa: E402
from libs.events.relay import Relay, RelayConfig  # noqa: E402
from libs.kleer import KleerClient  # noqa: E402
from libs.mapping.convert import fingerprint, to_hubspot  # noqa: E402
from libs.mapping.properties import custom_properties  # noqa: E402
from services.inbound.handlers import CONSUMER_NAME, InboundHandlers  # noqa: E402
from services.inbound.hubspot_port import ClientHubSpotPort  # noqa: E402
from services.topics import INBOUND_WEBHOOKS, all_topic_names, make_router, topic_name  # noqa: E402
from sim.broker import TansuBroker  # noqa: E402
from tests.fixtures.hubspot_sim import HubSpotSim  # noqa: E402


@dataclass
class InboundStack:
    hubspot: HubSpotSim
    kleer_sim: Any
    kleer: KleerClient
    deps: InboundDeps
    handlers: InboundHandlers
    consumer: EventConsumer
    webhook_url: str

    @property
    def connection(self) -> str:
        return CONNECTION

    async def new_client(self, **fields: Any) -> dict[str, Any]:
        """A Kleer client, as the outbound sync would have it: in HubSpot with kleer_id, fingerprint stored."""
        body = {"name": "Fjällbacka Bygg AB", "email": "info@fjallbacka.se", "phone": "+46 8 1234", "payment-days": 30,
                "currency-type": "SEK", **fields}
        kleer_id = await self.kleer.clients.create(body)
        record = await self.kleer.clients.get(kleer_id)
        mapped = to_hubspot("client", record)
        # Pushed by the outbound sync: our own write (its webhooks are echoes).
        from sim.hubspot.store import Source

        kind = self.hubspot.sim.object_type("companies")
        company = self.hubspot.store.create_one(
            kind, {"properties": mapped}, Source("INTEGRATION", str(self.hubspot.app_id))
        )
        await self.remember_fingerprint(str(kleer_id), fingerprint("client", mapped))
        return {"kleer_id": kleer_id, "company_id": str(company.id), "mapped": mapped}

    async def remember_fingerprint(self, kleer_id: str, value: str) -> None:
        from services.outbound.fingerprints import FingerprintRow, save

        async with self.deps.pool.acquire() as conn:
            await save(conn, CONNECTION, "client", [FingerprintRow(kleer_id, value, "x", None)])

    async def stored_fingerprint(self, kleer_id: str) -> str | None:
        value = await self.deps.pool.fetchval(
            "SELECT fingerprint FROM outbound_fingerprints WHERE connection = $1 AND kind = 'client' AND kleer_id = $2",
            CONNECTION, kleer_id)
        return value if value is None else str(value)

    def kleer_record(self, kleer_id: int) -> dict[str, Any]:
        return dict(self.kleer_sim.book.clients.get(kleer_id))

    def kleer_writes(self) -> int:
        return int(self.kleer_sim.request_count(method="POST"))

    async def events_of(self, *types: str) -> list[Any]:
        return await self.deps.store.read_all(0, 100_000, types=list(types))

    async def stream_events(self, system: str, kind: str, record_id: object, *types: str) -> list[Any]:
        events = await self.deps.store.read_stream(f"{CONNECTION}/{system}-{kind}/{record_id}")
        return [e for e in events if not types or e.type in types]

    async def wait_for(self, condition: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> float:
        started = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - started < timeout:
            if await condition():
                return asyncio.get_running_loop().time() - started
            await asyncio.sleep(0.01)
        raise AssertionError(f"condition not met within {timeout}s")

    async def settle(self, seconds: float = 0.5) -> None:
        """Let deliveries and handling finish (for asserting that nothing more happens)."""
        await self.hubspot.drain_webhooks(5.0)
        head = await self.deps.store.head()
        await self.wait_for(lambda: _handled_up_to(self, head), 10.0)
        await asyncio.sleep(seconds)


async def _handled_up_to(stack: InboundStack, head: int) -> bool:
    published = await stack.deps.pool.fetchval("SELECT COALESCE(max(position), 0) FROM relay_state")
    return int(published) >= head and await _all_partitions_done(stack, head)


async def _all_partitions_done(stack: InboundStack, head: int) -> bool:
    """The handlers have checkpointed every partition of their topic up to what the relay published there.

    A partition the handlers have no checkpoint for yet (its first events are still on their way) is not done.
    """
    pending = await stack.deps.pool.fetchval(
        "SELECT count(*) FROM relay_partitions r LEFT JOIN consumer_checkpoints c ON c.topic = r.topic "
        "AND c.partition = r.partition AND c.consumer = $1 "
        "WHERE r.topic = $2 AND COALESCE(c.position, 0) < r.last_position",
        CONSUMER_NAME, topic_name(INBOUND_WEBHOOKS, stack.deps.topic_prefix))
    return int(pending) == 0


def setup_hubspot_properties(hubspot: HubSpotSim) -> None:
    for object_name, definitions in custom_properties().items():
        for definition in definitions:
            hubspot.create_property(object_name, definition.name, unique=definition.has_unique_value)


@contextlib.asynccontextmanager
async def running_stack(
    pool: asyncpg.Pool,
    store: PostgresEventStore,
    database_url: str,
    broker: TansuBroker,
    hubspot: HubSpotSim,
    kleer_sim: Any,
    kleer: KleerClient,
    **option_overrides: Any,
) -> AsyncIterator[InboundStack]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    setup_hubspot_properties(hubspot)
    options = InboundOptions(
        client_secret=Secret(hubspot.client_secret),
        public_base_url=base_url,
        portals={hubspot.portal_id: CONNECTION},
        app_id=hubspot.app_id,
        **option_overrides,
    )
    async with GroupCommitter(store) as committer, hubspot.client() as hubspot_client:
        deps = InboundDeps(
            settings=inbound_settings(database_url),
            options=options,
            pool=pool,
            store=store,
            dlq=DeadLetterQueue(store),
            committer=committer,
            mappings=default_mappings(),
            bootstrap_servers=broker.bootstrap_servers,
            topic_prefix=prefix,
            kleer=kleer,
            hubspot=ClientHubSpotPort(hubspot_client),
        )
        handlers = InboundHandlers.from_deps(deps)
        consumer = EventConsumer(
            store,
            handlers.handle,
            ConsumerConfig(
                name=CONSUMER_NAME,
                topics=[topic_name(INBOUND_WEBHOOKS, prefix)],
                bootstrap_servers=broker.bootstrap_servers,
                router=make_router(prefix),  # type: ignore[arg-type]
                poll_timeout_ms=20,
                max_attempts=2,
                retry_base=0.01,
            ),
            deps.dlq,
        )
        relay = Relay(store, make_router(prefix), RelayConfig(broker.bootstrap_servers, all_topic_names(prefix),  # type: ignore[arg-type]
                                                               idle_sleep=0.005))
        runner = app_runner(create_app(deps, routes=()))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await ensure_topics(broker.bootstrap_servers, all_topic_names(prefix))
        tasks = [asyncio.create_task(relay.run()), asyncio.create_task(consumer.run())]
        hubspot.configure_webhooks(base_url + "/webhooks/hubspot", batch_window_ms=5)
        stack = InboundStack(hubspot, kleer_sim, kleer, deps, handlers, consumer, base_url + "/webhooks/hubspot")
        try:
            # Latency is measured from a joined consumer, as in a running deployment.
            await stack.wait_for(lambda: _assigned(pool), 30.0)
            yield stack
        finally:
            hubspot.configure_webhooks(None)
            await consumer.stop()
            await asyncio.wait(tasks[1:], timeout=20)
            await relay.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runner.cleanup()


async def _assigned(pool: asyncpg.Pool) -> bool:
    count = await pool.fetchval("SELECT count(*) FROM consumer_checkpoints WHERE consumer = $1", CONSUMER_NAME)
    return bool(count)


@pytest.fixture
async def inbound_stack(
    pool: asyncpg.Pool,
    store: PostgresEventStore,
    database_url: str,
    broker: TansuBroker,
    hubspot_sim: HubSpotSim,
    kleer_sim: Any,
    kleer_client: KleerClient,
) -> AsyncIterator[InboundStack]:
    async with running_stack(pool, store, database_url, broker, hubspot_sim, kleer_sim, kleer_client) as stack:
        yield stack


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_stack(pg_server_dsn: str, template_database: str, broker: TansuBroker) -> AsyncIterator[InboundStack]:
    """One running inbound path for a whole module (the consumer group joins once: seconds saved per test).

    Tests using it work on records of their own and assert on those records' streams.
    """
    from libs.events.store import create_pool
    from sim.hubspot.app import create_app as create_hubspot_app
    from sim.hubspot.config import SimConfig
    from sim.hubspot.simulator import HubSpotSimulator
    from sim.kleer import KleerSimServer
    from tests.fixtures.hubspot_sim import _serve
    from tests.fixtures.kleer_sim import FAST_RETRY
    from tests.fixtures.postgres import _admin, _with_database

    name = f"kstest_{uuid.uuid4().hex[:12]}"
    await _admin(pg_server_dsn, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    dsn = _with_database(pg_server_dsn, name)
    pool = await create_pool(dsn, min_size=1, max_size=12)
    simulator = HubSpotSimulator(SimConfig(time_scale=10.0))
    hubspot_runner, port = await _serve(create_hubspot_app(simulator))
    hubspot = HubSpotSim(simulator, f"http://127.0.0.1:{port}")
    try:
        async with KleerSimServer() as kleer_sim:
            kleer = KleerClient(company_id=kleer_sim.company_id, token=Secret(kleer_sim.token),
                                base_url=kleer_sim.base_url, retry=FAST_RETRY, timeout=5.0)
            async with kleer, running_stack(pool, PostgresEventStore(pool), dsn, broker, hubspot, kleer_sim, kleer) as stack:
                yield stack
    finally:
        await hubspot_runner.cleanup()
        await pool.close()
        await _admin(pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class ThreadedInbound:
    """The inbound app on its own event loop in a thread, for synchronous clients (hypothesis, schemathesis)."""

    base_url: str
    secret: str = SECRET
    dsn: str = ""  # the database it records into

    @property
    def webhook_url(self) -> str:
        return self.base_url + "/webhooks/hubspot"


@pytest.fixture(scope="module")
def threaded_inbound(pg_server_dsn: str, template_database: str) -> Iterator[ThreadedInbound]:
    import threading

    from libs.events.store import create_pool
    from tests.fixtures.postgres import _admin, _with_database

    name = f"kstest_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(pg_server_dsn, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    dsn = _with_database(pg_server_dsn, name)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        pool = await create_pool(dsn, min_size=1, max_size=4)
        store = PostgresEventStore(pool)
        async with GroupCommitter(store) as committer:
            deps = InboundDeps(inbound_settings(dsn), inbound_options(base_url), pool, store, DeadLetterQueue(store),
                               committer, default_mappings())
            runner = app_runner(create_app(deps, routes=()))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            ready.set()
            await stop.wait()
            await runner.cleanup()
        await pool.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(20), "the threaded inbound app did not start"
    try:
        yield ThreadedInbound(base_url, dsn=dsn)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)
        asyncio.run(_admin(pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
