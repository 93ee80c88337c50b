"""Two pushers in one consumer group, as deploy/k8s runs them (the HPA's minReplicas is 2)."""

from __future__ import annotations

import asyncio
import time

from services.outbound.app import pusher_consumer
from services.outbound.pusher import Pusher
from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim
from tests.integration.outbound.conftest import (
    CONNECTION,
    Outbound,
    assert_hubspot_matches,
    expected_snapshots,
    wait_until_pushed,
)


async def _no_association_waits(outbound: Outbound, timeout: float) -> None:
    """A child can wait for a parent the other pusher is writing: a later batch or idle sweep writes it."""
    deadline = time.monotonic() + timeout
    while await outbound.pool.fetchval("SELECT count(*) FROM pending_associations"):
        assert time.monotonic() < deadline, "associations still wait for parents the other pusher wrote"
        await asyncio.sleep(0.2)


async def test_two_pushers_share_the_partitions_and_leave_hubspot_whole_without_duplicates(
    kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim, outbound_without_pusher: Outbound
) -> None:
    outbound = outbound_without_pusher
    kleer_sim.seed(n_clients=60, seed=23)
    expected = expected_snapshots(kleer_sim)
    pushers = [outbound.pusher, Pusher(outbound.store, {CONNECTION: outbound.hubspot})]
    consumers = [
        pusher_consumer(
            outbound.store,
            pusher,
            bootstrap_servers=outbound.broker.bootstrap_servers,
            topic_prefix=outbound.prefix,
            group=outbound.group,
            max_events=50,  # small batches, so both members are busy while the other writes parents
            linger=0.05,
        )
        for pusher in pushers
    ]
    tasks = [asyncio.create_task(consumer.run()) for consumer in consumers]
    try:
        report = await outbound.poller.poll_once()
        await wait_until_pushed(outbound.pool, outbound.prefix, 60, outbound.group)
        await _no_association_waits(outbound, 30)
    finally:
        await asyncio.gather(*(consumer.stop() for consumer in consumers))
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)

    assert report.ok and report.changed == len(expected)
    assert all(consumer.handled > 0 for consumer in consumers), [c.handled for c in consumers]
    assert sum(consumer.handled for consumer in consumers) == len(expected)  # each change handled once
    assert_hubspot_matches(hubspot_sim, expected)  # every record once, with every association
    assert await outbound.pool.fetchval("SELECT count(*) FROM dead_letters") == 0
