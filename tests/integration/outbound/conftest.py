"""The outbound flow against the simulators over HTTP, real Postgres and a real broker.

``outbound`` is a harness: the poller (called directly, one pass per
``sync()``), the relay and the pusher consumer running in the test's event
loop, each test with its own Kafka topic prefix. ``expected_state`` computes
what HubSpot must hold from the Kleer simulator's book, with ``libs.mapping``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import pytest

from libs.events.consumer import Router
from libs.events.kafka import DEFAULT_PARTITIONS, ensure_topics, partition_for
from libs.events.relay import Relay, RelayConfig
from libs.events.store import PostgresEventStore
from libs.hubspot.client import HubSpotClient
from libs.hubspot.rate_budget import RateBudget
from libs.kleer import KleerClient
from libs.mapping.invoices import should_sync_invoice
from services.outbound.app import PUSHER_GROUP, pusher_consumer
from services.outbound.consumer import BatchingConsumer
from services.outbound.poller import Poller, PollerConfig, PollReport
from services.outbound.pusher import Pusher
from services.outbound.setup import setup_hubspot
from services.outbound.snapshots import Snapshot, line_item_snapshots, record_snapshot
from services.topics import OUTBOUND_CHANGES, all_topic_names, make_router, topic_name
from sim.broker import TansuBroker
from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim

CONNECTION = "acme"
_OUTBOUND_EVENTS = r"^Kleer[A-Za-z]+(Changed|Removed|PushRequested)$"


async def wait_until_pushed(
    pool: asyncpg.Pool, prefix: str, timeout: float = 30.0, group: str = PUSHER_GROUP
) -> None:
    """Wait until the pusher's checkpoints cover every outbound event in the log."""
    topic = topic_name(OUTBOUND_CHANGES, prefix)
    deadline = time.monotonic() + timeout
    while True:
        rows = await pool.fetch(
            "SELECT stream, max(position) FROM events WHERE type ~ $1 GROUP BY stream", _OUTBOUND_EVENTS
        )
        needed: dict[int, int] = {}
        for stream, position in rows:
            partition = partition_for(stream, DEFAULT_PARTITIONS)
            needed[partition] = max(needed.get(partition, 0), position)
        done = {
            r[0]: r[1]
            for r in await pool.fetch(
                "SELECT partition, position FROM consumer_checkpoints WHERE consumer = $1 AND topic = $2",
                group,
                topic,
            )
        }
        behind = {p: pos for p, pos in needed.items() if done.get(p, 0) < pos}
        if not behind:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the pusher did not catch up within {timeout}s: behind on {behind}")
        await asyncio.sleep(0.05)


def expected_snapshots(kleer_sim: KleerSimServer) -> dict[tuple[str, str], Snapshot]:
    """(kind, kleer_id) -> snapshot of everything HubSpot should hold, mapped straight from the book."""
    book = kleer_sim.book
    found: dict[tuple[str, str], Snapshot] = {}

    def add(snapshot: Snapshot) -> None:
        found[(snapshot.kind, snapshot.kleer_id)] = snapshot

    for kind, table in (("client", book.clients), ("product", book.products), ("project", book.projects)):
        for record in table:
            add(record_snapshot(kind, record))
    for record in book.agreements:
        add(record_snapshot("agreement", record))
        for item in line_item_snapshots("agreement", record):
            add(item)
    for record in book.invoices:
        if should_sync_invoice(record):
            add(record_snapshot("invoice", record))
            for item in line_item_snapshots("invoice", record):
                add(item)
    return found


def hubspot_by_kleer_id(hubspot_sim: HubSpotSim, hubspot_object: str) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    kind = hubspot_sim.sim.object_type(hubspot_object)
    for record in hubspot_sim.store.records[kind].values():
        found.setdefault(record.properties.get("kleer_id", ""), []).append(record)
    return found


def assert_hubspot_matches(hubspot_sim: HubSpotSim, expected: Mapping[tuple[str, str], Snapshot]) -> None:
    """Every expected record exactly once by kleer_id, with exactly the mapped values and its associations."""
    by_object: dict[str, dict[str, list[Any]]] = {}
    problems: list[str] = []
    for (kind, kleer_id), snapshot in expected.items():
        records = by_object.setdefault(
            snapshot.hubspot_object, hubspot_by_kleer_id(hubspot_sim, snapshot.hubspot_object)
        ).get(kleer_id, [])
        if len(records) != 1:
            problems.append(f"{kind}:{kleer_id} is in HubSpot {len(records)} times")
            continue
        props = records[0].properties
        for name, value in snapshot.properties.items():
            if props.get(name, "") != value:
                problems.append(f"{kind}:{kleer_id}.{name} = {props.get(name)!r}, expected {value!r}")
    for hubspot_object, present in by_object.items():
        expected_ids = {k for (kind, k), s in expected.items() if s.hubspot_object == hubspot_object}
        extra = set(present) - expected_ids
        if extra:
            problems.append(f"{hubspot_object} has records Kleer does not: {sorted(extra)[:5]}")
    problems.extend(_association_problems(hubspot_sim, expected, by_object))
    assert not problems, f"{len(problems)} differences, e.g.:\n" + "\n".join(problems[:15])


def _association_problems(
    hubspot_sim: HubSpotSim,
    expected: Mapping[tuple[str, str], Snapshot],
    by_object: Mapping[str, Mapping[str, list[Any]]],
) -> list[str]:
    problems = []
    associations = hubspot_sim.store.associations
    for (kind, kleer_id), snapshot in expected.items():
        child = by_object[snapshot.hubspot_object].get(kleer_id)
        for parent in snapshot.parents:
            if parent.kleer_id is None:
                continue  # a HubSpot-only parent (a deal): the test checks it itself
            parent_snapshot = expected.get((parent.kind, parent.kleer_id))
            if child is None or parent_snapshot is None:
                continue
            parent_record = by_object[parent_snapshot.hubspot_object].get(parent.kleer_id)
            if parent_record is None:
                continue
            from_type = hubspot_sim.sim.object_type(snapshot.hubspot_object)
            to_type = hubspot_sim.sim.object_type(parent_snapshot.hubspot_object)
            if parent_record[0].id not in associations.targets(from_type, child[0].id, to_type):
                problems.append(f"{kind}:{kleer_id} is not associated with {parent.key}")
    return problems


def write_requests(hubspot_sim: HubSpotSim) -> int:
    """HubSpot requests that can change data (everything but reads)."""
    counts = hubspot_sim.request_counts()["endpoints"]
    return sum(
        sum(statuses.values())
        for endpoint, statuses in counts.items()
        if not endpoint.startswith("GET") and not endpoint.endswith("/batch/read")
    )


@dataclass
class Outbound:
    """Poller + relay + pusher for one test, against the simulators."""

    store: PostgresEventStore
    kleer: KleerClient
    hubspot: HubSpotClient
    broker: TansuBroker
    prefix: str = field(default_factory=lambda: f"ob{uuid.uuid4().hex[:10]}")
    group: str = field(init=False)
    poller: Poller = field(init=False)
    pusher: Pusher = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _components: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.group = f"{PUSHER_GROUP}-{self.prefix}"  # one group per test: no rebalance with an earlier one
        self.poller = Poller(self.store.pool, self.store, self.kleer, PollerConfig(connection=CONNECTION))
        self.pusher = Pusher(self.store, {CONNECTION: self.hubspot})

    @property
    def pool(self) -> asyncpg.Pool:
        return self.store.pool

    def relay(self) -> Relay:
        return Relay(
            self.store,
            cast(Router, make_router(self.prefix)),
            RelayConfig(bootstrap_servers=self.broker.bootstrap_servers, topics=all_topic_names(self.prefix)),
        )

    def consumer(self) -> BatchingConsumer:
        return pusher_consumer(
            self.store,
            self.pusher,
            bootstrap_servers=self.broker.bootstrap_servers,
            topic_prefix=self.prefix,
            group=self.group,
        )

    async def start(self, *, pusher: bool = True) -> None:
        # Topics first: a consumer subscribed to a topic that does not exist yet waits for a metadata refresh.
        await ensure_topics(self.broker.bootstrap_servers, all_topic_names(self.prefix))
        components: list[Any] = [self.relay()]
        if pusher:
            components.append(self.consumer())
        for component in components:
            self._components.append(component)
            self._tasks.append(asyncio.create_task(component.run()))

    async def stop(self) -> None:
        await asyncio.gather(*(component.stop() for component in self._components))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 30)
        self._tasks.clear()
        self._components.clear()

    async def sync(self, timeout: float = 30.0) -> PollReport:
        """One poll of everything, then wait until the pusher has handled all of it."""
        report = await self.poller.poll_once()
        await wait_until_pushed(self.pool, self.prefix, timeout, self.group)
        return report


@contextlib.asynccontextmanager
async def running_outbound(
    store: PostgresEventStore,
    kleer_client: KleerClient,
    hubspot_sim: HubSpotSim,
    broker: TansuBroker,
    *,
    budget: RateBudget | None = None,
    pusher: bool = True,
) -> AsyncIterator[Outbound]:
    async with hubspot_sim.client() as unlimited:
        await setup_hubspot(unlimited)
    async with hubspot_sim.client(budget=budget) as hubspot:
        harness = Outbound(store, kleer_client, hubspot, broker)
        await harness.start(pusher=pusher)
        try:
            yield harness
        finally:
            await harness.stop()


@pytest.fixture
async def outbound(
    store: PostgresEventStore, kleer_client: KleerClient, hubspot_sim: HubSpotSim, broker: TansuBroker
) -> AsyncIterator[Outbound]:
    async with running_outbound(store, kleer_client, hubspot_sim, broker) as harness:
        yield harness


@pytest.fixture
async def outbound_without_pusher(
    store: PostgresEventStore, kleer_client: KleerClient, hubspot_sim: HubSpotSim, broker: TansuBroker
) -> AsyncIterator[Outbound]:
    """The harness with the relay only: the test runs its own pusher consumers (``outbound.group``)."""
    async with running_outbound(store, kleer_client, hubspot_sim, broker, pusher=False) as harness:
        yield harness
