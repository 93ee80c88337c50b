"""A Kleer change that returns a field to the value we last pushed, after HubSpot's edit of it was synced
to Kleer, still reaches HubSpot (found by the 30-minute soak: kleer_payment_days 60 -> HubSpot edit 30,
synced to Kleer -> Kleer back to 60; the pusher compared with its last push, 60, and sent nothing, so
HubSpot kept 30 for good)."""

from __future__ import annotations

from tests.integration.operations.harness import SyncHarness
from tests.integration.operations.harness import sync as sync  # the fixture


async def test_a_kleer_change_back_to_the_last_pushed_value_after_an_inbound_sync_reaches_hubspot(
    sync: SyncHarness,
) -> None:
    kleer_id = await sync.kleer.clients.create(
        {"name": "Smögen Räkor AB", "currency-type": "SEK", "payment-days": 60})
    await sync.sync(["client"])
    company = sync.company_of(kleer_id)
    assert company.properties["kleer_payment_days"] == "60"

    sync.hubspot_sim.ui_edit("companies", company.id, {"kleer_payment_days": "30"})  # a trigger property
    await sync.handle_webhooks()
    assert (await sync.kleer.clients.get(kleer_id))["payment-days"] == 30  # the edit reached Kleer

    await sync.kleer.clients.update(kleer_id, {"payment-days": 60})  # a later change in Kleer
    await sync.sync(["client"])

    assert sync.company_of(kleer_id).properties["kleer_payment_days"] == "60"
    assert (await sync.kleer.clients.get(kleer_id))["payment-days"] == 60
