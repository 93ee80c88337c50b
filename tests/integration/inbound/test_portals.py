"""One intake serving two connections (two HubSpot portals): each event lands in its own connection's streams."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from libs.events.store import PostgresEventStore
from services.inbound.webhook_events import WEBHOOK_RECEIVED, webhook_event_id

from .conftest import CONNECTION, PORTAL, InboundServer, company_change, serve_inbound

OTHER_PORTAL = PORTAL + 1000
OTHER_CONNECTION = "beta"


@pytest.fixture
async def two_portal_server(
    pool: asyncpg.Pool, store: PostgresEventStore, database_url: str
) -> AsyncIterator[InboundServer]:
    async with serve_inbound(pool, store, database_url, {OTHER_PORTAL: OTHER_CONNECTION}) as server:
        yield server


async def _received(server: InboundServer) -> dict[str, list[str]]:
    rows = await server.deps.pool.fetch(
        "SELECT stream, event_id FROM events WHERE type = $1 ORDER BY position", WEBHOOK_RECEIVED)
    return {r["stream"]: [str(r["event_id"])] for r in rows}


async def test_events_of_two_served_portals_land_in_their_own_connections(two_portal_server: InboundServer) -> None:
    ours = company_change(501, "name", "Acme AB")
    theirs = company_change(501, "name", "Beta AB", portalId=OTHER_PORTAL, eventId=ours["eventId"])
    stranger = company_change(502, "name", "Nobody AB", portalId=OTHER_PORTAL + 1)

    response = await two_portal_server.post_events([ours, theirs, stranger])

    assert response.status == 200
    received = await _received(two_portal_server)
    # The same HubSpot eventId in two portals is two events; the same object id is two records.
    assert received == {
        f"{CONNECTION}/hubspot-company/501": [str(webhook_event_id(PORTAL, ours["eventId"]))],
        f"{OTHER_CONNECTION}/hubspot-company/501": [str(webhook_event_id(OTHER_PORTAL, ours["eventId"]))],
    }
    [beta] = await two_portal_server.deps.store.read_stream(f"{OTHER_CONNECTION}/hubspot-company/501")
    assert beta.data["propertyValue"] == "Beta AB"


async def test_a_redelivery_to_the_other_portal_is_still_deduplicated_per_portal(
    two_portal_server: InboundServer,
) -> None:
    theirs = company_change(900, "phone", "+46 8 1", portalId=OTHER_PORTAL)

    first = await two_portal_server.post_events([theirs])
    again = await two_portal_server.post_events([theirs])

    assert (first.status, again.status) == (200, 200)
    assert await _received(two_portal_server) == {
        f"{OTHER_CONNECTION}/hubspot-company/900": [str(webhook_event_id(OTHER_PORTAL, theirs["eventId"]))]}
