"""HubSpot failing for a while (5xx, dropped connections): nothing is parked, everything lands afterwards."""

from __future__ import annotations

import asyncio

from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim
from tests.integration.outbound.conftest import (
    Outbound,
    assert_hubspot_matches,
    expected_snapshots,
    wait_until_pushed,
)


async def test_a_hubspot_outage_longer_than_the_clients_retries_delays_the_push_but_loses_nothing(
    outbound: Outbound, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    kleer_sim.seed(n_clients=20, seed=95)
    hubspot_sim.set_faults(
        error_rates={503: 1.0}
    )  # every request fails: the client gives up, the consumer retries
    await outbound.poller.poll_once()
    # Wait until the pusher has failed through the client's retries (6 attempts) at least twice over.
    for _ in range(600):
        if hubspot_sim.request_counts()["by_status"].get("503", 0) >= 12:
            break
        await asyncio.sleep(0.05)
    assert hubspot_sim.request_counts()["by_status"].get("503", 0) >= 12
    assert sum(hubspot_sim.store.counts().values()) == 0
    hubspot_sim.set_faults(error_rates={503: 0.2}, drop_rate=0.05)  # flaky: the client's retries absorb it

    await wait_until_pushed(outbound.pool, outbound.prefix, 60, outbound.group)

    assert_hubspot_matches(hubspot_sim, expected_snapshots(kleer_sim))
    assert await outbound.pool.fetchval("SELECT count(*) FROM dead_letters") == 0
