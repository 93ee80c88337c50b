"""What the log says of a record's last sync: the merge base, the last push, a change still waiting for the pusher."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from libs.events.envelope import NewEvent
from libs.events.store import PostgresEventStore
from services.inbound import bookkeeping
from services.inbound.kleer_write import SyncBase

STREAM = "acme/kleer-client/7"
TYPES: dict[str, Any] = {
    "upserted": "HubSpotCompanyUpserted",
    "inbound_types": ["KleerClientUpdated", "KleerClientCreated"],
    "removed_types": ["HubSpotCompanyArchived"],
    "change_types": ["KleerClientChanged", "KleerClientPushRequested"],
}


async def _record(store: PostgresEventStore, event_type: str, **data: Any) -> None:
    await store.append(STREAM, [NewEvent(event_type, data, {"actor": "test"})])


async def _base(pool: asyncpg.Pool, before: dt.datetime | None = None) -> SyncBase:
    before = before or await bookkeeping.database_now(pool)
    return (await bookkeeping.last_syncs(pool, [STREAM], before=before, **TYPES))[STREAM]


async def test_the_base_is_the_latest_push_or_inbound_write_and_a_later_change_waits(
    pool: asyncpg.Pool, store: PostgresEventStore
) -> None:
    assert await _base(pool) == SyncBase()
    await _record(store, "KleerClientChanged", properties={"kleer_id": "7", "name": "A"}, fingerprint="fa")
    assert (await _base(pool)).pending_fingerprint == "fa"
    await _record(store, "HubSpotCompanyUpserted", properties={"kleer_id": "7", "name": "A"}, fingerprint="fa")
    base = await _base(pool)
    assert (base.properties, base.pushed_fingerprint, base.pending_fingerprint) == ({"kleer_id": "7", "name": "A"},
                                                                                   "fa", None)
    # HubSpot's values at an inbound write replace it; a removal flag (no kleer_id) does not.
    await _record(store, "KleerClientUpdated", hubspot_properties={"name": "B"}, changed_properties=["name"])
    await _record(store, "HubSpotCompanyUpserted", properties={"kleer_deleted": "true"})
    await _record(store, "KleerClientUpdated", fields={"name": "old events carry no HubSpot values"})
    await _record(store, "KleerClientChanged", properties={"kleer_id": "7", "name": "C"}, fingerprint="fc")
    base = await _base(pool)
    assert (base.properties, base.changed) == ({"name": "B"}, ("name",))
    assert (base.pushed_fingerprint, base.pending_fingerprint) == (None, "fc")


async def test_a_push_recorded_after_hubspot_was_read_is_not_the_base(pool: asyncpg.Pool, store: PostgresEventStore) -> None:
    await _record(store, "HubSpotCompanyUpserted", properties={"kleer_id": "7", "name": "A"}, fingerprint="fa")
    read_at = await bookkeeping.database_now(pool)
    await _record(store, "HubSpotCompanyUpserted", properties={"kleer_id": "7", "name": "B"}, fingerprint="fb")
    base = await _base(pool, read_at)
    assert base.properties == {"kleer_id": "7", "name": "A"}
    assert base.pushed_fingerprint == "fb"  # what waits for the pusher is judged on every push


async def test_a_push_that_names_its_change_events_snapshot_has_that_snapshot_as_the_base(
    pool: asyncpg.Pool, store: PostgresEventStore
) -> None:
    """The pusher's upsert names the change event whose snapshot HubSpot now holds (``properties_from``)."""
    (change,) = await store.append(
        STREAM, [NewEvent("KleerClientChanged", {"properties": {"kleer_id": "7", "name": "A"}, "fingerprint": "fa"})]
    )
    await _record(store, "HubSpotCompanyUpserted", properties_from=str(change.event_id), fingerprint="fa")
    base = await _base(pool)
    assert (base.properties, base.pushed_fingerprint, base.pending_fingerprint) == ({"kleer_id": "7", "name": "A"},
                                                                                   "fa", None)
    # Naming an event the log does not hold (never written by the pusher) gives no base rather than a wrong one.
    await _record(store, "HubSpotCompanyUpserted", properties_from="01a24fbc-b6a8-72a0-be0d-4233d884c3b8",
                  fingerprint="fb")
    assert (await _base(pool)).properties is None
