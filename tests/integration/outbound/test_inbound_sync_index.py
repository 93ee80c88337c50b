"""The pusher finds a record's latest inbound sync through the small partial index of migration 017, not by
reading every event of the record's stream; and finds the right one."""

from __future__ import annotations

import json

import asyncpg

from libs.events.envelope import NewEvent
from libs.events.store import AppendRequest, PostgresEventStore
from libs.records import RecordRef
from services.outbound import idmap
from services.outbound.idmap import _LAST_PUSHED_SQL, INBOUND_SYNC_TYPES
from services.outbound.pusher import _INBOUND_SYNCED_SQL

CLIENTS = 2_000


async def _book(store: PostgresEventStore) -> list[str]:
    """Streams of clients, each changed and pushed; every 100th also synced from HubSpot (twice, the
    later sync last), and one has a sync without HubSpot's properties."""
    streams = [RecordRef("kleer", "client", str(i)).stream("c") for i in range(CLIENTS)]
    await store.append_batch([
        AppendRequest(s, [
            NewEvent("KleerClientChanged", {"properties": {"kleer_id": str(i), "name": f"n{i}"}}),
            NewEvent("HubSpotCompanyUpserted", {"properties": {"kleer_id": str(i), "name": f"n{i}"}}),
        ]) for i, s in enumerate(streams)
    ])
    synced = [
        AppendRequest(streams[i], [
            NewEvent(INBOUND_SYNC_TYPES[0], {"hubspot_properties": {"name": f"first {i}"}}),
            NewEvent(INBOUND_SYNC_TYPES[-1], {"hubspot_properties": {"name": f"latest {i}"}}),
        ]) for i in range(0, CLIENTS, 100)
    ]
    synced.append(AppendRequest(streams[1], [NewEvent(INBOUND_SYNC_TYPES[0], {"no": "properties"})]))
    await store.append_batch(synced)
    return streams


async def _plan(pool: asyncpg.Pool, sql: str, streams: list[str]) -> str:
    async with pool.acquire() as conn:
        await conn.execute("ANALYZE events")
        return json.dumps(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", streams))


async def test_the_latest_inbound_sync_is_found_through_the_partial_index(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    streams = await _book(store)

    assert "events_inbound_sync_idx" in await _plan(pool, _INBOUND_SYNCED_SQL, streams)
    assert "events_inbound_sync_idx" in await _plan(pool, _LAST_PUSHED_SQL, streams)

    rows = await pool.fetch(_INBOUND_SYNCED_SQL, streams)
    found = {r["stream"]: json.loads(r["props"]) for r in rows}
    assert found == {streams[i]: {"name": f"latest {i}"} for i in range(0, CLIENTS, 100)}

    pushed = await idmap.last_pushed_properties(pool, [("c", "client", str(i)) for i in (0, 1, 100, 150)])
    assert pushed[("c", "client", "0")] == ({"kleer_id": "0", "name": "n0"}, {"name": "latest 0"})
    assert pushed[("c", "client", "1")] == ({"kleer_id": "1", "name": "n1"}, None)
    assert pushed[("c", "client", "100")] == ({"kleer_id": "100", "name": "n100"}, {"name": "latest 100"})
    assert pushed[("c", "client", "150")] == ({"kleer_id": "150", "name": "n150"}, None)
