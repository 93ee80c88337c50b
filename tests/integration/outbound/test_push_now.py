"""``Pusher.push_now``: what a workflow action calls to put a new Kleer record into HubSpot at once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from libs.events.envelope import RecordedEvent
from libs.events.store import PostgresEventStore
from services.outbound.pusher import Pusher
from services.outbound.setup import setup_hubspot
from services.outbound.snapshots import snapshots_for_push
from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim
from tests.integration.outbound.conftest import (
    CONNECTION,
    assert_hubspot_matches,
    hubspot_by_kleer_id,
    write_requests,
)


async def test_push_now_writes_an_invoice_its_rows_and_links_to_company_and_deal_once(
    store: PostgresEventStore, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    kleer_sim.seed(n_clients=3, seed=81)
    invoice = next(i for i in kleer_sim.book.invoices if i["certified"] and len(i["rows"]) >= 2)
    client = kleer_sim.book.clients.get(invoice["client-ref"]["id"])
    assert client is not None
    deal = hubspot_sim.seed("deals", {"dealname": "Upsell", "pipeline": "default", "dealstage": "closedwon"})
    command = RecordedEvent(
        1,
        uuid.uuid4(),
        f"{CONNECTION}/kleer-invoice/{invoice['id']}",
        1,
        "CreateKleerInvoice",
        {},
        {},
        datetime.now(UTC),
    )
    async with hubspot_sim.client() as hubspot:
        await setup_hubspot(hubspot)
        pusher = Pusher(store, {CONNECTION: hubspot})
        (company,) = await pusher.push_now(CONNECTION, snapshots_for_push("client", client))
        snapshots = snapshots_for_push("invoice", invoice, deal_id=str(deal.id))

        results = await pusher.push_now(CONNECTION, snapshots, cause=command)

        assert [(r.kind, r.outcome) for r in results] == [("invoice", "created")] + [
            ("line_item", "created")
        ] * len(invoice["rows"])
        writes = write_requests(hubspot_sim)
        again = await pusher.push_now(CONNECTION, snapshots, cause=command)
        assert {r.outcome for r in again} == {"unchanged"}
        assert write_requests(hubspot_sim) == writes, "pushing the same snapshots again must not call HubSpot"

    expected = {(s.kind, s.kleer_id): s for s in snapshots}
    expected[("client", str(client["id"]))] = snapshots_for_push("client", client)[0]
    assert_hubspot_matches(hubspot_sim, expected)  # values, and invoice -> company, rows -> invoice
    invoice_record = hubspot_by_kleer_id(hubspot_sim, "invoices")[str(invoice["id"])][0]
    deals = hubspot_sim.store.associations.targets(
        hubspot_sim.sim.object_type("invoices"), invoice_record.id, hubspot_sim.sim.object_type("deals")
    )
    assert deals == {deal.id: {175}}
    assert company.hubspot_id is not None
    upserted = [e for e in await store.read_all(0, 1000) if e.type == "HubSpotInvoiceUpserted"]
    assert len(upserted) == 1 and upserted[0].metadata["causation_id"] == str(command.event_id)
    assert upserted[0].data["hubspot_id"] == str(invoice_record.id)
