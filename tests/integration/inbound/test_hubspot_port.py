"""The handlers' HubSpot port over the simulator: which refusals are permanent."""

from __future__ import annotations

import pytest

from services.inbound.hubspot_port import ClientHubSpotPort, HubSpotPortError
from tests.fixtures.hubspot_sim import HubSpotSim
from tests.integration.inbound.conftest import setup_hubspot_properties


async def test_a_kleer_id_another_company_holds_is_a_permanent_refusal(hubspot_sim: HubSpotSim) -> None:
    """HubSpot answers 207 with the input refused (CONFLICT): retrying cannot help, so the record is parked
    on its own instead of the whole batch being retried and then parked."""
    setup_hubspot_properties(hubspot_sim)
    first = hubspot_sim.seed("companies", {"name": "Ett AB"})
    second = hubspot_sim.seed("companies", {"name": "Två AB"})
    async with hubspot_sim.client() as client:
        port = ClientHubSpotPort(client)
        await port.set_properties("companies", str(first.id), {"kleer_id": "77"})
        with pytest.raises(HubSpotPortError) as refused:
            await port.set_properties("companies", str(second.id), {"kleer_id": "77"})
    assert refused.value.category == "CONFLICT" and refused.value.permanent, refused.value.status
