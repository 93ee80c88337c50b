"""A company created in HubSpot gets exactly one Kleer client, whatever races its creation.

Kleer has no idempotency keys: a create whose fate is unknown (its answer was
lost, or the process that sent it died) can only be found afterwards by the
``foreign-id`` we give the client. These tests hold a create "in flight" at a
gate they control, so the interleavings the reliability suite hit by chance
(a handler restarted, or a second handler instance, while the first one's
create was still on its way to Kleer) happen every time.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from libs.config import Secret
from libs.events.dlq import DeadLetterQueue
from libs.events.envelope import RecordedEvent
from libs.events.store import PostgresEventStore
from libs.hubspot.client import HubSpotClient
from libs.kleer import KleerClient
from libs.mapping.loader import default_mappings
from services.inbound.actions.workflows import CREATE_CLIENT_PATIENCE_S
from services.inbound.client_creation import CreationBusy, CreationTiming, create_client_once
from services.inbound.handlers import InboundHandlers
from services.inbound.hubspot_port import ClientHubSpotPort, HubSpotPortError
from services.inbound.options import InboundOptions
from services.inbound.webhook_events import WEBHOOK_RECEIVED, WebhookEvent
from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim
from tests.integration.inbound.conftest import CONNECTION, setup_hubspot_properties
from tests.integration.operations.harness import SyncHarness, commit
from tests.integration.operations.harness import sync as sync  # the fixture

_event_ids = itertools.count(7_000_000)
LIST_CLIENTS = "/v1/company/{company-id}/client"


class HeldCreates:
    """Stands in for ``kleer.clients`` of one handler: every create waits at a gate (a slow request).

    ``entered`` is set once a create is waiting. ``open()`` lets the waiting create through;
    a create whose caller was cancelled meanwhile (the process died) is still delivered by
    ``deliver_orphans()``, as Kleer still stores a request it had received.
    """

    def __init__(self, real: Any) -> None:
        self.real = real
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.orphans: list[Mapping[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def create(self, body: Mapping[str, Any]) -> int:
        self.entered.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.orphans.append(body)
            raise
        return int(await self.real.create(body))

    async def deliver_orphans(self) -> None:
        for body in self.orphans:
            await self.real.create(body)
        self.orphans.clear()


@dataclass
class KleerWithHeldCreates:
    real: KleerClient
    clients: HeldCreates = field(init=False)

    def __post_init__(self) -> None:
        self.clients = HeldCreates(self.real.clients)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@dataclass
class Creation:
    store: PostgresEventStore
    kleer_sim: KleerSimServer
    kleer: KleerClient
    hubspot: HubSpotClient
    hubspot_sim: HubSpotSim
    options: InboundOptions
    timing: CreationTiming

    def handlers(self, kleer: Any = None, timing: CreationTiming | None = None) -> InboundHandlers:
        """A handler instance (a process) of its own; ``kleer`` may hold its creates."""
        return InboundHandlers(options=self.options, mappings=default_mappings(), pool=self.store.pool,
                               dlq=DeadLetterQueue(self.store), kleer=kleer or self.kleer,
                               hubspot=ClientHubSpotPort(self.hubspot), creation=timing or self.timing)

    async def company_created(self, name: str) -> tuple[str, list[RecordedEvent]]:
        """A company created in HubSpot and its recorded creation webhook (as the intake records it)."""
        company = self.hubspot_sim.ui_create("companies", {"name": name, "phone": "+46 8 222"})
        raw = {"eventId": next(_event_ids), "subscriptionId": 1, "portalId": self.hubspot_sim.portal_id,
               "appId": self.hubspot_sim.app_id, "occurredAt": int(time.time() * 1000),
               "subscriptionType": "company.creation", "attemptNumber": 0, "objectId": int(company.id),
               "changeSource": "CRM_UI", "sourceId": "userId:1"}
        event = WebhookEvent.from_data(raw)
        await self.store.append(event.stream(CONNECTION), [event.to_new_event(int(time.time() * 1000))])
        recorded = await self.store.read_stream(event.stream(CONNECTION))
        return str(company.id), recorded

    async def apply(self, handlers: InboundHandlers, events: list[RecordedEvent]) -> None:
        """One handling of the batch, committed as the consumer commits it."""
        await commit(self.store, await handlers.handle(events))

    async def killed_mid_create(self, events: list[RecordedEvent], timing: CreationTiming) -> HeldCreates:
        """A handler that dies (SIGKILL) while its create is on its way to Kleer; its held creates.

        ``timing``: its create may land until ``timing.unsettled_seconds`` after it was sent.
        """
        doomed = KleerWithHeldCreates(self.kleer)
        killed = asyncio.create_task(self.apply(self.handlers(doomed, timing), events))
        await asyncio.wait_for(doomed.clients.entered.wait(), 10)
        killed.cancel()  # nothing is recorded after the request left
        await asyncio.gather(killed, return_exceptions=True)
        return doomed.clients

    def assert_one_client(self, name: str, company_id: str) -> None:
        clients = self.clients_named(name)
        assert len(clients) == 1, f"Kleer holds {len(clients)} clients for one HubSpot company: {clients}"
        assert self.kleer_id_in_hubspot(company_id) == str(clients[0])

    def clients_named(self, name: str) -> list[int]:
        return [int(c["id"]) for c in self.kleer_sim.book.clients if c.get("name") == name]

    def kleer_id_in_hubspot(self, company_id: str) -> str | None:
        record = self.hubspot_sim.store.records[self.hubspot_sim.sim.object_type("companies")][int(company_id)]
        value = record.properties.get("kleer_id")
        return str(value) if value else None


@pytest.fixture
async def creation(
    store: PostgresEventStore, kleer_sim: KleerSimServer, kleer_client: KleerClient, hubspot_sim: HubSpotSim
) -> AsyncIterator[Creation]:
    setup_hubspot_properties(hubspot_sim)
    options = InboundOptions(client_secret=Secret(hubspot_sim.client_secret), public_base_url="http://127.0.0.1",
                             portals={hubspot_sim.portal_id: CONNECTION}, app_id=hubspot_sim.app_id)
    async with hubspot_sim.client() as hubspot:
        # Held creates wait for the test (a loaded machine may take seconds): never cut off by the call limit.
        yield Creation(store, kleer_sim, kleer_client, hubspot, hubspot_sim, options,
                       CreationTiming(call_seconds=30.0, land_seconds=1.0))


async def _when(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)


async def test_a_second_handler_while_the_first_ones_create_is_in_flight_makes_no_second_client(
    creation: Creation,
) -> None:
    """A redelivered creation webhook (rebalance, second instance) while the first create is on its way."""
    company_id, events = await creation.company_created("Parallellen AB")
    slow = KleerWithHeldCreates(creation.kleer)
    first = asyncio.create_task(creation.apply(creation.handlers(slow), events))
    await asyncio.wait_for(slow.clients.entered.wait(), 10)
    second = asyncio.create_task(creation.apply(creation.handlers(), events))

    async def second_decided() -> bool:
        """It looked for the client in Kleer, waits for the first one, or is done."""
        waiting = await creation.store.pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return bool(waiting) or creation.kleer_sim.request_count("GET", LIST_CLIENTS) > 0 or second.done()

    await _when(second_decided)
    slow.clients.gate.set()
    await asyncio.gather(first, second)
    creation.assert_one_client("Parallellen AB", company_id)


async def test_a_create_of_a_killed_handler_that_lands_late_is_not_made_twice(creation: Creation) -> None:
    """The handler dies while its create is in flight; Kleer stores it only after the restarted one looked."""
    company_id, events = await creation.company_created("Sent Före Döden AB")
    # Its create may land up to 5 s after it was sent: the restarted handler waits that long before creating.
    in_flight = await creation.killed_mid_create(events, CreationTiming(call_seconds=2.0, land_seconds=3.0))
    restarted = asyncio.create_task(creation.apply(creation.handlers(), events))

    async def restarted_looked() -> bool:
        return creation.kleer_sim.request_count("GET", LIST_CLIENTS) > 0 or restarted.done()

    await _when(restarted_looked)
    await in_flight.deliver_orphans()  # Kleer stores the dead handler's client now
    await restarted
    creation.assert_one_client("Sent Före Döden AB", company_id)


async def test_a_create_that_never_reached_kleer_is_made_once_its_time_is_up(creation: Creation) -> None:
    """The dead handler's request never arrived: the restarted one creates the client, after the wait."""
    company_id, events = await creation.company_created("Aldrig Framme AB")
    # Its request is never delivered; it could have landed up to 2 s after it was sent.
    await creation.killed_mid_create(events, CreationTiming(call_seconds=1.0, land_seconds=1.0))
    started = time.monotonic()
    await creation.apply(creation.handlers(), events)
    creation.assert_one_client("Aldrig Framme AB", company_id)
    assert 1.0 < time.monotonic() - started < 10  # waited for the lost request's time, not for ever


async def test_a_lost_answer_is_found_by_the_retry_instead_of_creating_again(
    creation: Creation, pool: asyncpg.Pool
) -> None:
    """Kleer stored the client, the answer never came: the retry finds it by its foreign-id."""
    company_id, events = await creation.company_created("Borttappat Svar AB")
    client_path = f"/company/{creation.kleer_sim.company_id}/client"
    creation.kleer_sim.set_faults({"drop-after-rate": 1.0, "path-prefix": client_path})
    handlers = creation.handlers()
    with pytest.raises(Exception, match="may or may not have been stored"):
        await creation.apply(handlers, events)
    creation.kleer_sim.clear_faults()
    await creation.apply(handlers, events)
    creation.assert_one_client("Borttappat Svar AB", company_id)
    clients = creation.clients_named("Borttappat Svar AB")
    row = await pool.fetchrow("SELECT kleer_id, unsettled_until FROM inbound_creations WHERE hubspot_id = $1",
                              company_id)
    assert row["kleer_id"] == str(clients[0]) and row["unsettled_until"] is None


async def test_a_workflow_action_while_the_handlers_create_is_in_flight_backs_off(creation: Creation) -> None:
    """Create Kleer Client called while the handler creates the same company's client: no second client."""
    company_id, events = await creation.company_created("Åtgärd Samtidigt AB")
    slow = KleerWithHeldCreates(creation.kleer)
    handler = asyncio.create_task(creation.apply(creation.handlers(slow), events))
    await asyncio.wait_for(slow.clients.entered.wait(), 10)
    with pytest.raises(CreationBusy, match="another worker is creating"):
        await create_client_once(creation.store.pool, creation.kleer.clients, connection=CONNECTION,
                                 company_id=company_id, body={"name": "Åtgärd Samtidigt AB"},
                                 timing=creation.timing, patience=CREATE_CLIENT_PATIENCE_S)
    slow.clients.gate.set()
    await handler
    creation.assert_one_client("Åtgärd Samtidigt AB", company_id)
    again = await create_client_once(creation.store.pool, creation.kleer.clients, connection=CONNECTION,
                                     company_id=company_id, body={"name": "Åtgärd Samtidigt AB"},
                                     timing=creation.timing, patience=CREATE_CLIENT_PATIENCE_S)
    assert again.kleer_id == creation.kleer_id_in_hubspot(company_id) and not again.created


class FailingFirstKleerIdWrite:
    """The handlers' HubSpot port, whose first kleer_id write fails as in a 429 storm the client gave up on."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.failed = False

    async def read(self, *args: Any) -> Any:
        return await self.real.read(*args)

    async def set_properties(self, object_name: str, hubspot_id: str, properties: Mapping[str, str]) -> None:
        if not self.failed:
            self.failed = True
            raise HubSpotPortError("HubSpot answered 429 five times", status=429, category="RATE_LIMITS")
        await self.real.set_properties(object_name, hubspot_id, properties)


async def test_a_poll_before_the_kleer_id_reaches_hubspot_makes_no_second_company(sync: SyncHarness) -> None:
    """The client is created, HubSpot refuses its kleer_id for a while, the poller and pusher run meanwhile:
    they must not push the new client as a company of its own (HubSpot would then hold two companies and
    refuse the kleer_id on the one created in HubSpot: a conflict nobody resolves)."""
    company = sync.hubspot_sim.ui_create("companies", {"name": "Snabbpollad AB", "phone": "+46 8 333"})
    events = [e for e in await sync.record_webhooks() if e.type == WEBHOOK_RECEIVED]
    sync.handlers.hubspot = FailingFirstKleerIdWrite(sync.handlers.hubspot)
    with pytest.raises(HubSpotPortError):
        await sync.handlers.handle(events)
    report = await sync.poll(["client"])  # the poller reads the new client; a change would make a company
    assert report.kinds["client"].seen == 1
    await sync.push()
    await commit(sync.store, await sync.handlers.handle(events))
    await sync.sync(["client"])
    named = [r for r in sync.hubspot_sim.records("companies") if r.get("name") == "Snabbpollad AB"]
    assert len(named) == 1, f"HubSpot holds {len(named)} companies for one: {named}"
    kleer_id = sync.kleer_sim.book.clients.ids()[0]
    assert named[0]["hs_object_id"] == str(company.id) and named[0].get("kleer_id") == str(kleer_id)
    # Kleer's record, with the values Kleer filled in itself, reached the company.
    kleer = sync.kleer_sim.book.clients.get(kleer_id)
    assert named[0].get("kleer_payment_days") == str(kleer["payment-days"]), named[0]
