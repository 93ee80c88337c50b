"""HubSpot edits reach Kleer: simulator UI edit -> signed webhook -> log -> Kafka -> handlers -> Kleer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from libs.mapping.convert import fingerprint, to_hubspot
from libs.mapping.triggers import trigger_properties

from .conftest import CONNECTION, InboundStack

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


async def test_trigger_edit_writes_every_mapped_field_to_kleer_within_a_second(shared_stack: InboundStack) -> None:
    linked = await shared_stack.new_client()
    hubspot = shared_stack.hubspot
    company = linked["company_id"]
    # A one-way property changed earlier (no sync on its own) rides along with the next trigger.
    hubspot.ui_edit("companies", company, {"kleer_contact": "Anna Andersson", "zip": "452 30", "city": "Strömstad"})
    await shared_stack.settle(0.1)
    hubspot.ui_edit("companies", company, {"name": "Fjällbacka Bygg & Måleri AB"})

    async def applied() -> bool:
        return shared_stack.kleer_record(linked["kleer_id"])["name"] == "Fjällbacka Bygg & Måleri AB"

    elapsed = await shared_stack.wait_for(applied, 5.0)
    assert elapsed < 1.0
    record = shared_stack.kleer_record(linked["kleer_id"])
    assert record["contact"] == "Anna Andersson"
    assert record["address"]["zip-code"] == "452 30"
    assert record["address"]["state"] == "Strömstad"
    # The Kleer record now maps to exactly what HubSpot holds.
    current = {k: v or "" for k, v in hubspot.store.records[hubspot.sim.object_type("companies")][int(company)].properties.items()}
    mapped = to_hubspot("client", record)
    assert {k: v for k, v in mapped.items() if k in current and k != "kleer_active"} == {
        k: current[k] for k in mapped if k in current and k != "kleer_active"
    }
    # The outbound fingerprint is the new state: the next poll sends nothing back.
    await shared_stack.settle(0.0)
    assert await shared_stack.stored_fingerprint(str(linked["kleer_id"])) == fingerprint("client", mapped)
    updated = await shared_stack.stream_events("kleer", "client", linked["kleer_id"], "KleerClientUpdated")
    assert updated[-1].metadata["causation_id"]
    assert "name" in updated[-1].data["changed_properties"]


async def test_one_way_property_alone_writes_nothing_to_kleer(shared_stack: InboundStack) -> None:
    linked = await shared_stack.new_client()
    before = shared_stack.kleer_writes()
    assert "kleer_contact" not in trigger_properties("client")
    shared_stack.hubspot.ui_edit("companies", linked["company_id"], {"kleer_contact": "Bo Berg"})
    await shared_stack.settle()
    assert shared_stack.kleer_writes() == before
    assert shared_stack.kleer_record(linked["kleer_id"])["contact"] != "Bo Berg"
    skipped = await shared_stack.stream_events("hubspot", "company", linked["company_id"], "InboundSyncSkipped")
    assert [e.data["reason"] for e in skipped] == ["no_trigger"]


async def test_one_way_property_with_a_trigger_is_written(shared_stack: InboundStack) -> None:
    linked = await shared_stack.new_client()
    shared_stack.hubspot.ui_edit("companies", linked["company_id"], {"kleer_contact": "Bo Berg", "phone": "+46 31 555"})
    await shared_stack.wait_for(
        lambda: _value(shared_stack, linked["kleer_id"], "contact", "Bo Berg"), 15.0
    )
    assert shared_stack.kleer_record(linked["kleer_id"])["phone"] == "+46 31 555"


async def _value(stack: InboundStack, kleer_id: int, key: str, value: object) -> bool:
    return stack.kleer_record(kleer_id).get(key) == value


async def test_duplicated_and_shuffled_deliveries_write_kleer_once_with_the_latest_state(
    shared_stack: InboundStack,
) -> None:
    linked = await shared_stack.new_client()
    shared_stack.hubspot.configure_webhooks(
        shared_stack.webhook_url, duplicate_rate=1.0, shuffle=True, batch_size=2, batch_window_ms=30
    )
    before = shared_stack.kleer_writes()
    for name in ("Version 1 AB", "Version 2 AB", "Version 3 AB"):
        shared_stack.hubspot.ui_edit("companies", linked["company_id"], {"name": name, "phone": name[-4:]})
    await shared_stack.settle(0.3)
    record = shared_stack.kleer_record(linked["kleer_id"])
    assert (record["name"], record["phone"]) == ("Version 3 AB", "3 AB")
    assert shared_stack.kleer_writes() - before == 1


async def test_our_own_write_echoed_back_writes_nothing_and_does_not_ping_pong(shared_stack: InboundStack) -> None:
    linked = await shared_stack.new_client()
    hubspot = shared_stack.hubspot
    before = shared_stack.kleer_writes()
    # The pusher writes through the API (changeSource INTEGRATION, sourceId = our app id) ...
    async with hubspot.client() as client:
        from libs.hubspot.models import RecordInput
        from libs.hubspot.objects import ObjectType

        await client.batch_update(ObjectType.COMPANIES, [RecordInput({"name": "Pushed From Kleer AB"}, id=linked["company_id"])])
    # ... and an echo without that metadata, of a value the own-write log holds.
    from services.own_writes import record_own_writes

    async with shared_stack.deps.pool.acquire() as conn:
        await record_own_writes(conn, shared_stack.connection, "companies", [(linked["company_id"], {"phone": "+46 1 99"})])
    hubspot.ui_edit("companies", linked["company_id"], {"phone": "+46 1 99"}, changeSource="API")
    await shared_stack.settle(0.3)
    assert shared_stack.kleer_writes() == before
    echoes = await shared_stack.stream_events("hubspot", "company", linked["company_id"], "InboundEchoIgnored")
    assert len(echoes) >= 1
    assert await shared_stack.stream_events("kleer", "client", linked["kleer_id"], "KleerClientUpdated") == []


async def test_a_person_setting_a_value_we_once_wrote_is_no_echo(shared_stack: InboundStack) -> None:
    """Found by the 30-minute soak: a user set payment days back to a value we had pushed; the own-write log
    took it for our echo and the edit was lost. A change the metadata names a person's is never an echo."""
    from services.own_writes import record_own_writes

    linked = await shared_stack.new_client(**{"payment-days": 45})
    async with shared_stack.deps.pool.acquire() as conn:  # we pushed 45 (the pusher's own-write log)
        await record_own_writes(conn, shared_stack.connection, "companies",
                                [(linked["company_id"], {"kleer_payment_days": "45"})])
    shared_stack.hubspot.ui_edit("companies", linked["company_id"], {"kleer_payment_days": "20"})

    async def kleer_has(days: int) -> bool:
        return shared_stack.kleer_record(linked["kleer_id"])["payment-days"] == days

    await shared_stack.wait_for(lambda: kleer_has(20), 10.0)
    # Back to 45, the value of our own last write, by a person in HubSpot's UI (changeSource CRM_UI).
    shared_stack.hubspot.ui_edit("companies", linked["company_id"], {"kleer_payment_days": "45"})

    await shared_stack.wait_for(lambda: kleer_has(45), 10.0)


async def test_company_created_in_hubspot_gets_a_kleer_client_and_its_id(shared_stack: InboundStack) -> None:
    hubspot = shared_stack.hubspot
    company = hubspot.ui_create("companies", {"name": "Nyföretaget AB", "phone": "+46 8 111"})

    async def linked() -> bool:
        return bool(company.properties.get("kleer_id"))

    await shared_stack.wait_for(linked, 15.0)
    kleer_id = int(company.properties["kleer_id"])
    assert shared_stack.kleer_record(kleer_id)["name"] == "Nyföretaget AB"
    await shared_stack.settle(0.3)
    assert len([c for c in shared_stack.kleer_sim.book.clients if c["name"] == "Nyföretaget AB"]) == 1
    created = await shared_stack.stream_events("kleer", "client", kleer_id, "KleerClientCreated")
    assert [e.data["hubspot_id"] for e in created] == [str(company.id)]


async def test_kleer_validation_error_is_parked_with_kleers_message(shared_stack: InboundStack) -> None:
    linked = await shared_stack.new_client()
    shared_stack.hubspot.ui_edit("companies", linked["company_id"], {"name": "Ö" * 1500})  # Kleer takes 1000

    record = f"hubspot:company:{linked['company_id']}"

    async def parked() -> bool:
        return bool(await shared_stack.deps.dlq.list(source="inbound-handlers", record=record))

    await shared_stack.wait_for(parked, 15.0)
    [entry] = await shared_stack.deps.dlq.list(source="inbound-handlers", record=record)
    assert entry.record == f"hubspot:company:{linked['company_id']}"
    assert entry.detail["hubspot_id"] == linked["company_id"]
    assert entry.detail["kleer_message"] == "client.name is longer than 1000 characters"  # Kleer's own words
    assert "client.name is longer than 1000 characters" in entry.reason


async def test_conflicting_kleer_change_is_recorded_and_hubspot_wins(shared_stack: InboundStack) -> None:
    linked = await shared_stack.new_client()
    # Kleer changes after the last poll (the stored fingerprint no longer matches) ...
    await shared_stack.kleer.clients.update(linked["kleer_id"], {"name": "Changed In Kleer AB"})
    # ... and HubSpot changes the same record.
    shared_stack.hubspot.ui_edit("companies", linked["company_id"], {"name": "Changed In HubSpot AB"})

    async def conflicts() -> list[object]:
        return await shared_stack.stream_events("kleer", "client", linked["kleer_id"], "SyncConflict")

    async def conflicted() -> bool:
        return bool(await conflicts())

    await shared_stack.wait_for(conflicted, 15.0)
    [conflict] = await conflicts()
    assert conflict.data["winner"] == "hubspot"
    assert conflict.data["fields"]["name"] == {"kleer": "Changed In Kleer AB", "hubspot": "Changed In HubSpot AB"}
    await shared_stack.wait_for(lambda: _value(shared_stack, linked["kleer_id"], "name", "Changed In HubSpot AB"))
    rows = await shared_stack.deps.pool.fetchval(
        "SELECT count(*) FROM sync_conflicts WHERE kleer_id = $1", str(linked["kleer_id"])
    )
    assert rows == 1
    _ = asyncio


async def test_parked_change_is_redriven_after_the_data_is_fixed(shared_stack: InboundStack) -> None:
    from services.inbound.redrive import REDRIVE_SOURCE, make_redriver
    from sim.hubspot.store import Source

    linked = await shared_stack.new_client()
    record = f"hubspot:company:{linked['company_id']}"
    shared_stack.hubspot.ui_edit("companies", linked["company_id"], {"name": ""})

    async def parked() -> bool:
        return bool(await shared_stack.deps.dlq.list(source=REDRIVE_SOURCE, record=record))

    await shared_stack.wait_for(parked, 15.0)
    [entry] = await shared_stack.deps.dlq.list(source=REDRIVE_SOURCE, record=record)
    # Someone fixes the name in HubSpot; the fix itself is not what applies it here: the redrive is.
    kind = shared_stack.hubspot.sim.object_type("companies")
    shared_stack.hubspot.configure_webhooks(None)
    try:
        shared_stack.hubspot.store.update_one(kind, linked["company_id"], None, {"properties": {"name": "Fixed AB"}},
                                              Source("CRM_UI", "userId:9"))
    finally:
        shared_stack.hubspot.configure_webhooks(shared_stack.webhook_url, batch_window_ms=5)
    redrivers = {REDRIVE_SOURCE: make_redriver(shared_stack.handlers, shared_stack.deps.store)}
    resolved = await shared_stack.deps.dlq.redrive(entry.id, redrivers, actor="user:test")
    assert resolved.id == entry.id
    assert shared_stack.kleer_record(linked["kleer_id"])["name"] == "Fixed AB"
    assert await shared_stack.deps.dlq.list(source=REDRIVE_SOURCE, record=record) == []


async def test_company_deleted_in_hubspot_leaves_kleer_alone_and_is_recorded(shared_stack: InboundStack) -> None:
    linked = await shared_stack.new_client()
    before = shared_stack.kleer_record(linked["kleer_id"])
    shared_stack.hubspot.sim.ui_delete("companies", linked["company_id"])

    async def recorded() -> bool:
        return bool(await shared_stack.stream_events("hubspot", "company", linked["company_id"], "HubSpotCompanyDeleted"))

    await shared_stack.wait_for(recorded, 15.0)
    [deleted] = await shared_stack.stream_events("hubspot", "company", linked["company_id"], "HubSpotCompanyDeleted")
    assert deleted.data["policy"] == "leave"
    assert shared_stack.kleer_record(linked["kleer_id"]) == before


async def test_merged_companies_the_survivor_keeps_the_link(shared_stack: InboundStack) -> None:
    import time

    import aiohttp
    import orjson

    from libs.hubspot.signatures import v3_headers
    from sim.hubspot.store import Source

    kept = await shared_stack.new_client(name="Kept AB")
    gone = await shared_stack.new_client(name="Merged Away AB")
    # Establish the links the handlers know of (a trigger edit on each).
    for linked in (kept, gone):
        shared_stack.hubspot.ui_edit("companies", linked["company_id"], {"phone": f"+46 {linked['kleer_id']}"})
    await shared_stack.settle(0.1)
    # HubSpot merged "gone" into a new survivor record that lost the kleer_id.
    kind = shared_stack.hubspot.sim.object_type("companies")
    shared_stack.hubspot.configure_webhooks(None)
    try:
        for linked in (kept, gone):
            changes = shared_stack.hubspot.store._tracking()
            shared_stack.hubspot.store.archive(kind, linked["company_id"], Source("MERGE", "m"), changes)
        survivor = shared_stack.hubspot.store.create_one(kind, {"properties": {"name": "Kept AB"}}, Source("MERGE", "m"))
    finally:
        shared_stack.hubspot.configure_webhooks(shared_stack.webhook_url, batch_window_ms=5)
    body = orjson.dumps([{"eventId": 77_000_001, "subscriptionType": "company.merge",
                          "portalId": shared_stack.hubspot.portal_id, "objectId": survivor.id,
                          "primaryObjectId": int(kept["company_id"]), "mergedObjectIds": [int(gone["company_id"])],
                          "newObjectId": survivor.id, "occurredAt": int(time.time() * 1000)}])
    headers = {"Content-Type": "application/json", **v3_headers(shared_stack.hubspot.client_secret, "POST",
                                                                 shared_stack.webhook_url, body, int(time.time() * 1000))}
    async with aiohttp.ClientSession() as session, session.post(shared_stack.webhook_url, data=body,
                                                                 headers=headers) as response:
        assert response.status == 200

    async def merged() -> bool:
        return bool(await shared_stack.stream_events("hubspot", "company", survivor.id, "HubSpotCompaniesMerged"))

    await shared_stack.wait_for(merged, 15.0)
    [event] = await shared_stack.stream_events("hubspot", "company", survivor.id, "HubSpotCompaniesMerged")
    assert event.data["kleer_id"] == str(kept["kleer_id"])
    assert event.data["released_kleer_ids"] == [str(gone["kleer_id"])]
    assert survivor.properties.get("kleer_id") == str(kept["kleer_id"])


# --- a HubSpot edit while a Kleer change waits for the pusher: both survive, both sides converge -------------


class _Outbound:
    """The outbound side for one record, step by step: a poll of it, and the pusher's batches one event at a time
    (the worst order: a stale snapshot is pushed before the one that supersedes it)."""

    def __init__(self, stack: InboundStack, pusher: Any) -> None:
        self.stack, self.pusher = stack, pusher

    async def poll(self, kleer_id: int) -> bool:
        """Record the Kleer record's snapshot if its fingerprint changed, as the poller does; True if it did."""
        from libs.events.envelope import NewEvent
        from services.outbound.fingerprints import FingerprintRow, save
        from services.outbound.snapshots import changed_type, record_snapshot

        snapshot = record_snapshot("client", self.stack.kleer_record(kleer_id))
        if await self.stack.stored_fingerprint(str(kleer_id)) == snapshot.fingerprint:
            return False
        async with self.stack.deps.pool.acquire() as conn, conn.transaction():
            await save(conn, CONNECTION, "client", [FingerprintRow(str(kleer_id), snapshot.fingerprint, "p", None)])
            await self.stack.deps.store.append(snapshot.stream(CONNECTION), [
                NewEvent(changed_type("client"), snapshot.to_event_data(), {"actor": "poller", "source": "kleer"})
            ], conn=conn)
        return True

    async def push(self, kleer_id: int) -> int:
        """Hand the pusher every change recorded since it last handled one, one batch per event; returns how many."""
        events = await self.stack.stream_events("kleer", "client", kleer_id)
        handled = [i for i, e in enumerate(events) if e.type == "HubSpotCompanyUpserted"]
        waiting = [e for e in events[(max(handled) if handled else -1) + 1:] if e.type == "KleerClientChanged"]
        for event in waiting:
            await (await self.pusher.handle([event])).commit(self.stack.deps.store)
        return len(waiting)

    def hubspot(self, company_id: str) -> dict[str, Any]:
        kind = self.stack.hubspot.sim.object_type("companies")
        return dict(self.stack.hubspot.store.records[kind][int(company_id)].properties)


@contextlib.asynccontextmanager
async def _outbound(stack: InboundStack) -> AsyncIterator[_Outbound]:
    from libs.mapping.loader import default_mappings
    from services.outbound.pusher import Pusher

    async with stack.hubspot.client() as client:
        yield _Outbound(stack, Pusher(stack.deps.store, {CONNECTION: client}, mappings=default_mappings()))


async def _pushed_client(stack: InboundStack, outbound: _Outbound, **fields: Any) -> tuple[int, str]:
    """A Kleer client the outbound sync has polled and pushed (its creation's webhooks are our echoes)."""
    kleer_id = await stack.kleer.clients.create({"name": "Konvergens AB", "phone": "+46 8 100", "email": "a@k.se",
                                                  "payment-days": 30, "currency-type": "SEK", **fields})
    assert await outbound.poll(kleer_id) and await outbound.push(kleer_id) == 1
    [upserted] = await stack.stream_events("kleer", "client", kleer_id, "HubSpotCompanyUpserted")
    await stack.settle(0.1)
    return kleer_id, str(upserted.data["hubspot_id"])


async def _written(stack: InboundStack, kleer_id: int) -> Callable[[], Awaitable[bool]]:
    count = len(await stack.stream_events("kleer", "client", kleer_id, "KleerClientUpdated"))

    async def done() -> bool:
        return len(await stack.stream_events("kleer", "client", kleer_id, "KleerClientUpdated")) > count

    return done


async def test_hubspot_edit_while_a_kleer_change_waits_for_the_pusher_keeps_both_without_ping_pong(
    shared_stack: InboundStack,
) -> None:
    stack = shared_stack
    async with _outbound(stack) as outbound:
        kleer_id, company = await _pushed_client(stack, outbound)
        # Kleer's phone changes and is polled; the pusher has not pushed it yet ...
        await stack.kleer.clients.update(kleer_id, {"phone": "+46 8 200"})
        assert await outbound.poll(kleer_id)
        # ... when someone renames the company in HubSpot.
        writes = stack.kleer_writes()
        written = await _written(stack, kleer_id)
        stack.hubspot.ui_edit("companies", company, {"name": "Omdöpt AB"})
        await stack.wait_for(written, 15.0)
        record = stack.kleer_record(kleer_id)
        assert (record["name"], record["phone"]) == ("Omdöpt AB", "+46 8 200")
        # The pusher catches up: the stale snapshot first, then the merged one the handlers recorded.
        assert await outbound.push(kleer_id) == 2
        await stack.settle(0.3)
        hubspot = outbound.hubspot(company)
        assert (hubspot["name"], hubspot["phone"]) == ("Omdöpt AB", "+46 8 200")
        # Quiet from here on: the echoes wrote nothing, the next poll sees nothing new, nothing waits to be pushed.
        events = len(await stack.stream_events("kleer", "client", kleer_id))
        assert not await outbound.poll(kleer_id)
        assert await outbound.push(kleer_id) == 0
        await stack.settle(0.3)
        assert stack.kleer_writes() - writes == 1
        assert len(await stack.stream_events("kleer", "client", kleer_id)) == events
        assert len(await stack.stream_events("kleer", "client", kleer_id, "HubSpotCompanyUpserted")) == 3
        assert await stack.stream_events("kleer", "client", kleer_id, "SyncConflict") == []


async def test_conflicting_edit_while_kleers_change_waits_for_the_pusher_ends_with_the_winner_on_both_sides(
    shared_stack: InboundStack,
) -> None:
    stack = shared_stack
    async with _outbound(stack) as outbound:
        kleer_id, company = await _pushed_client(stack, outbound)
        await stack.kleer.clients.update(kleer_id, {"name": "Namn i Kleer AB"})
        assert await outbound.poll(kleer_id)
        written = await _written(stack, kleer_id)
        stack.hubspot.ui_edit("companies", company, {"name": "Namn i HubSpot AB"})
        await stack.wait_for(written, 15.0)
        [conflict] = await stack.stream_events("kleer", "client", kleer_id, "SyncConflict")
        assert conflict.data["winner"] == "hubspot" and list(conflict.data["fields"]) == ["name"]
        # Kleer's losing snapshot still waits for the pusher: the merged one is recorded after it.
        assert await outbound.push(kleer_id) == 2
        await stack.settle(0.3)
        assert stack.kleer_record(kleer_id)["name"] == outbound.hubspot(company)["name"] == "Namn i HubSpot AB"
        assert not await outbound.poll(kleer_id)
        assert await outbound.push(kleer_id) == 0


async def test_burst_of_10000_events_in_100_requests_is_answered_fast_and_all_applied(shared_stack: InboundStack) -> None:
    import time

    import aiohttp
    import orjson

    from libs.hubspot.signatures import v3_headers
    from sim.hubspot.store import Source

    hubspot = shared_stack.hubspot
    companies = 200
    kleer_ids = await asyncio.gather(
        *(shared_stack.kleer.clients.create({"name": f"Burst {i} AB"}) for i in range(companies))
    )
    kind = hubspot.sim.object_type("companies")
    hubspot.configure_webhooks(None)  # prepare HubSpot's current state quietly
    ids = []
    for i, kleer_id in enumerate(kleer_ids):
        record = hubspot.store.create_one(
            kind, {"properties": {"name": f"Burst {i} Renamed AB", "kleer_id": str(kleer_id)}}, Source("CRM_UI", "u")
        )
        ids.append(record.id)
    hubspot.configure_webhooks(shared_stack.webhook_url, batch_window_ms=5)
    secret = hubspot.client_secret
    bodies = []
    event_id = 9_000_000_000
    for request in range(100):
        events = []
        for j in range(100):
            event_id += 1
            n = (request * 100 + j) % companies
            events.append({"eventId": event_id, "subscriptionType": "company.propertyChange", "portalId": hubspot.portal_id,
                           "objectId": ids[n], "propertyName": "name", "propertyValue": f"Burst {n} Renamed AB",
                           "occurredAt": int(time.time() * 1000), "changeSource": "CRM_UI", "sourceId": "userId:7"})
        bodies.append(orjson.dumps(events))
    latencies: list[float] = []

    connections = asyncio.Semaphore(10)  # HubSpot delivers over a handful of concurrent connections

    async def post(session: aiohttp.ClientSession, body: bytes) -> int:
        async with connections:
            headers = {"Content-Type": "application/json",
                       **v3_headers(secret, "POST", shared_stack.webhook_url, body, int(time.time() * 1000))}
            started = time.perf_counter()
            async with session.post(shared_stack.webhook_url, data=body, headers=headers) as response:
                await response.read()
                latencies.append(time.perf_counter() - started)
                return response.status

    async with aiohttp.ClientSession() as session:
        statuses = await asyncio.gather(*(post(session, b) for b in bodies))
    assert set(statuses) == {200}
    assert max(latencies) < 5.0

    async def all_applied() -> bool:
        book = shared_stack.kleer_sim.book.clients
        return all(book.get(k)["name"] == f"Burst {i} Renamed AB" for i, k in enumerate(kleer_ids))

    await shared_stack.wait_for(all_applied, 60.0)

