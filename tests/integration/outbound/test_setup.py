"""``kleer-sync hubspot setup``: our group and properties, created once, safe to run again."""

from __future__ import annotations

from services.outbound.setup import required_properties, setup_hubspot
from tests.fixtures.hubspot_sim import HubSpotSim


async def test_setup_creates_every_property_once_and_a_second_run_only_reads(hubspot_sim: HubSpotSim) -> None:
    async with hubspot_sim.client() as hubspot:
        first = await setup_hubspot(hubspot)
        requests = hubspot_sim.request_counts()["total"]
        second = await setup_hubspot(hubspot)

    wanted = required_properties()
    assert {name: set(r.created) for name, r in first.items()} == {
        name: {s.name for s in specs} for name, specs in wanted.items()
    }
    assert all(not r.created and not r.mismatched and not r.group_created for r in second.values())
    reads = hubspot_sim.request_counts()["total"] - requests
    assert reads == 2 * len(wanted)  # one read of the groups and one of the properties per object
    for name in ("companies", "products", "invoices", "subscriptions", "projects", "line_items"):
        kleer_id = hubspot_sim.store.properties[hubspot_sim.sim.object_type(name)]["kleer_id"]
        assert kleer_id.has_unique_value and kleer_id.group_name == "kleer"
        assert "kleer_deleted" in hubspot_sim.store.properties[hubspot_sim.sim.object_type(name)]
    deals = hubspot_sim.store.properties[hubspot_sim.sim.object_type("deals")]
    assert {"kleer_invoice_id", "kleer_agreement_id", "kleer_project_id"} <= set(deals)
