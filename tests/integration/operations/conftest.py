"""Fixtures of the operations tests (the harnesses are in ``harness.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from libs.events.store import PostgresEventStore
from libs.kleer import KleerClient
from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim, WebhookSink

from .harness import SyncHarness, sync_harness


@pytest.fixture
async def sync(
    store: PostgresEventStore,
    kleer_sim: KleerSimServer,
    kleer_client: KleerClient,
    hubspot_sim: HubSpotSim,
    hubspot_webhook_sink: WebhookSink,
) -> AsyncIterator[SyncHarness]:
    async with sync_harness(store, kleer_sim, kleer_client, hubspot_sim, hubspot_webhook_sink) as harness:
        yield harness
