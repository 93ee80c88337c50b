"""With HubSpot's rate limit on, a full sync keeps inside it: the shared budget, not 429s, paces it."""

from __future__ import annotations

from libs.events.store import PostgresEventStore
from libs.hubspot.rate_budget import PostgresRateBudget
from libs.kleer import KleerClient
from sim.broker import TansuBroker
from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim
from tests.integration.outbound.conftest import assert_hubspot_matches, expected_snapshots, running_outbound

LIMIT = 10  # requests per HubSpot window; the 10 s window runs ten times faster


async def test_a_full_sync_under_the_rate_limit_gets_no_429s(
    store: PostgresEventStore,
    broker: TansuBroker,
    kleer_sim: KleerSimServer,
    kleer_client: KleerClient,
    hubspot_sim: HubSpotSim,
) -> None:
    kleer_sim.seed(n_clients=150, seed=41)
    expected = expected_snapshots(kleer_sim)
    # The portal's shared budget, as the pusher process builds it (it learns the window from HubSpot's headers).
    budget = PostgresRateBudget(store.pool, hubspot_sim.portal_id, max_requests=LIMIT, interval_ms=10_000)

    async with running_outbound(store, kleer_client, hubspot_sim, broker, budget=budget) as outbound:
        hubspot_sim.set_rate_limit(max_requests=LIMIT, interval_ms=10_000, time_scale=10)  # after the setup
        await outbound.sync(timeout=60)

    counts = hubspot_sim.request_counts()
    assert counts["by_status"].get("429", 0) == 0
    assert counts["total"] > 2 * LIMIT, "the sync must span several rate windows to prove anything"
    assert_hubspot_matches(hubspot_sim, expected)
