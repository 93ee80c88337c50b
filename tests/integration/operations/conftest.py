"""Fixtures of the operations tests (the harnesses are in ``harness.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from libs.events.store import PostgresEventStore
from libs.kleer import KleerClient
from services.outbound.setup import setup_hubspot
from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim, WebhookSink

from .harness import SyncHarness


@pytest.fixture
async def sync(
    store: PostgresEventStore,
    kleer_sim: KleerSimServer,
    kleer_client: KleerClient,
    hubspot_sim: HubSpotSim,
    hubspot_webhook_sink: WebhookSink,
) -> AsyncIterator[SyncHarness]:
    hubspot_sim.set_rate_limit(max_requests=0)  # no limit: these tests are about the log, not the budget
    hubspot_sim.configure_webhooks(hubspot_webhook_sink.url, batch_window_ms=0)
    async with hubspot_sim.client() as hubspot:
        await setup_hubspot(hubspot)
        yield SyncHarness(store, kleer_sim, kleer_client, hubspot_sim, hubspot, hubspot_webhook_sink)
