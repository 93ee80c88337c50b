"""An update sends only what changed in Kleer, so an edit made meanwhile in HubSpot survives."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from libs.events.envelope import NewEvent, RecordedEvent
from libs.events.store import PostgresEventStore
from services.outbound.idmap import properties_of_upsert
from services.outbound.pusher import Pusher
from services.outbound.setup import setup_hubspot
from services.outbound.snapshots import Snapshot, changed_type, record_snapshot
from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim
from tests.integration.outbound.conftest import CONNECTION, hubspot_by_kleer_id

_positions = iter(range(1, 10**9))


async def _logged(store: PostgresEventStore, snapshot: Snapshot) -> RecordedEvent:
    """``snapshot``'s change event, recorded in the log as the poller records it (the pusher's events come
    from the log; an upsert may name its cause's snapshot rather than repeat it)."""
    stream = snapshot.stream(CONNECTION)
    (appended,) = await store.append(stream, [NewEvent(changed_type(snapshot.kind), snapshot.to_event_data(), {})])
    (event,) = await store.read_stream(stream, from_version=appended.version)
    return event


async def _push(store: PostgresEventStore, pusher: Pusher, snapshot: Snapshot) -> None:
    await _handle(store, pusher, [await _logged(store, snapshot)])


async def _handle(store: PostgresEventStore, pusher: Pusher, events: Sequence[RecordedEvent]) -> None:
    """The pusher's batch, committed as its consumer would."""
    await (await pusher.handle(events)).commit(store)


def _company(hubspot_sim: HubSpotSim, kleer_id: str) -> dict[str, Any]:
    (record,) = hubspot_by_kleer_id(hubspot_sim, "companies")[kleer_id]
    return {"id": record.id, **record.properties}


@asynccontextmanager
async def _pushed_client(
    store: PostgresEventStore, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim, seed: int
) -> AsyncIterator[tuple[Pusher, dict[str, Any], str, int]]:
    """A pusher and a Kleer client it has pushed: (pusher, client, kleer_id, HubSpot id)."""
    kleer_sim.seed(n_clients=2, seed=seed)
    client = dict(next(iter(kleer_sim.book.clients)))
    kleer_id = str(client["id"])
    async with hubspot_sim.client() as hubspot:
        await setup_hubspot(hubspot)
        pusher = Pusher(store, {CONNECTION: hubspot})
        await _push(store, pusher, record_snapshot("client", client))
        yield pusher, client, kleer_id, _company(hubspot_sim, kleer_id)["id"]


async def test_a_kleer_change_pushed_after_a_hubspot_edit_of_another_field_keeps_that_edit(
    store: PostgresEventStore, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    async with _pushed_client(store, kleer_sim, hubspot_sim, 91) as (pusher, client, kleer_id, hubspot_id):

        hubspot_sim.ui_edit("companies", hubspot_id, {"phone": "08-765 43 21"})  # someone edits the phone
        await _push(store, pusher, record_snapshot("client", {**client, "email": "ny@kleer.example.se"}))

        company = _company(hubspot_sim, kleer_id)
        assert (company["invoice_email"], company["phone"]) == ("ny@kleer.example.se", "08-765 43 21")
        upserted = [e for e in await store.read_all(0, 100) if e.type == "HubSpotCompanyUpserted"]
        assert upserted[-1].data["written"] == ["invoice_email"]
        # What HubSpot holds from us is the change event's snapshot: the upsert names it rather than repeat it.
        assert "properties" not in upserted[-1].data
        pushed = await properties_of_upsert(store.pool, upserted[-1].event_id)
        assert pushed is not None and pushed["invoice_email"] == "ny@kleer.example.se"
        assert pushed == record_snapshot("client", {**client, "email": "ny@kleer.example.se"}).properties

        # Deleted in HubSpot meanwhile: the next change creates it again, whole.
        hubspot_sim.sim.ui_delete("companies", str(hubspot_id))
        await _push(store, pusher, record_snapshot("client", {**client, "email": "tredje@kleer.example.se"}))

        again = _company(hubspot_sim, kleer_id)
        assert again["id"] != hubspot_id
        assert (again["invoice_email"], again["name"]) == ("tredje@kleer.example.se", client["name"])


async def test_a_restarted_pusher_sends_only_what_changed_since_the_push_the_log_names(
    store: PostgresEventStore, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    """A pusher without the last push in memory (restarted, another pod) reads it from the log, where the
    upsert names its change event's snapshot: only the changed property goes, a HubSpot edit stays."""
    async with _pushed_client(store, kleer_sim, hubspot_sim, 98) as (pusher, client, kleer_id, hubspot_id):
        hubspot_sim.ui_edit("companies", hubspot_id, {"phone": "08-765 43 21"})
        restarted = Pusher(store, pusher.portals)
        await _push(store, restarted, record_snapshot("client", {**client, "email": "ny@kleer.example.se"}))

        company = _company(hubspot_sim, kleer_id)
        assert (company["invoice_email"], company["phone"]) == ("ny@kleer.example.se", "08-765 43 21")
        upserted = [e for e in await store.read_all(0, 100) if e.type == "HubSpotCompanyUpserted"]
        assert [e.data.get("written") for e in upserted] == [None, ["invoice_email"]]  # the first sent all


async def test_a_hubspot_edit_of_the_same_trigger_property_not_yet_in_kleer_is_not_overwritten(
    store: PostgresEventStore, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    async with _pushed_client(store, kleer_sim, hubspot_sim, 92) as (pusher, client, kleer_id, hubspot_id):

        # Someone edits the phone in HubSpot; before the inbound sync brings it to Kleer, a Kleer change
        # of the phone (and the e-mail) made earlier reaches the pusher.
        hubspot_sim.ui_edit("companies", hubspot_id, {"phone": "08-765 43 21"})
        older = {**client, "phone": "031-11 22 33", "email": "ny@kleer.example.se"}
        await _push(store, pusher, record_snapshot("client", older))

        company = _company(hubspot_sim, kleer_id)
        assert (company["phone"], company["invoice_email"]) == ("08-765 43 21", "ny@kleer.example.se")
        held = [e for e in await store.read_all(0, 100) if e.type == "HubSpotCompanyUpserted"][-1]
        assert (held.data["written"], held.data["held"]) == (["invoice_email"], ["phone"])
        assert held.data["properties"]["phone"] == client["phone"]  # the merge base keeps what we last sent

        # The inbound sync brought HubSpot's phone to Kleer; the next poll's snapshot converges quietly.
        await _push(store, pusher, record_snapshot("client", {**older, "phone": "08-765 43 21"}))

        assert _company(hubspot_sim, kleer_id)["phone"] == "08-765 43 21"
        settled = [e for e in await store.read_all(0, 100) if e.type == "HubSpotCompanyUpserted"][-1]
        assert "held" not in settled.data
        assert (await properties_of_upsert(store.pool, settled.event_id) or {})["phone"] == "08-765 43 21"
        assert settled.data["fingerprint"] == record_snapshot("client", {**older, "phone": "08-765 43 21"}).fingerprint

        # A Kleer change of a trigger property HubSpot did not touch is written as before.
        await _push(store, pusher, record_snapshot("client", {**older, "phone": "08-765 43 21", "name": "Nytt AB"}))
        assert _company(hubspot_sim, kleer_id)["name"] == "Nytt AB"


async def test_a_record_back_in_kleer_after_a_removal_loses_its_deleted_flag(
    store: PostgresEventStore, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    from services.outbound.snapshots import removal_event_data, removed_type

    async with _pushed_client(store, kleer_sim, hubspot_sim, 93) as (pusher, client, kleer_id, _):
        removal = RecordedEvent(next(_positions), uuid.uuid4(), f"{CONNECTION}/kleer-client/{kleer_id}", 2,
                                removed_type("client"), removal_event_data("client", kleer_id), {}, datetime.now(UTC))
        await _handle(store, pusher, [removal])
        assert _company(hubspot_sim, kleer_id)["kleer_deleted"] == "true"

        await _push(store, pusher, record_snapshot("client", client))  # it is listed again

        company = _company(hubspot_sim, kleer_id)
        assert company["kleer_deleted"] == "false" and company["name"] == client["name"]


async def test_a_hubspot_edit_already_synced_into_kleer_is_overwritten_by_a_later_kleer_change(
    store: PostgresEventStore, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    """Found by the short soak: an edit the inbound handlers had written to Kleer was still held back."""
    from libs.events.envelope import NewEvent
    from services.inbound.handlers import CLIENT_CREATED, SYNC_SKIPPED, UPDATED
    from services.outbound.idmap import INBOUND_SYNC_TYPES

    assert set(INBOUND_SYNC_TYPES) == {*UPDATED.values(), CLIENT_CREATED, SYNC_SKIPPED}
    async with _pushed_client(store, kleer_sim, hubspot_sim, 94) as (pusher, client, kleer_id, hubspot_id):
        edited = hubspot_sim.ui_edit("companies", hubspot_id, {"invoice_email": "faktura@hubspot.example.se"})
        synced = {"kleer_id": kleer_id, "hubspot_properties": dict(edited.properties), "fields": {}}
        await store.append(f"{CONNECTION}/kleer-client/{kleer_id}", [NewEvent("KleerClientUpdated", synced, {})])

        # Later, someone changes the e-mail in Kleer: that newer value goes to HubSpot.
        await _push(store, pusher, record_snapshot("client", {**client, "email": "ekonomi@kleer.example.se"}))

        assert _company(hubspot_sim, kleer_id)["invoice_email"] == "ekonomi@kleer.example.se"
        last = [e for e in await store.read_all(0, 100) if e.type == "HubSpotCompanyUpserted"][-1]
        assert "held" not in last.data


async def test_a_hubspot_edit_of_a_company_created_in_hubspot_survives_the_first_push_of_its_client(
    store: PostgresEventStore, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    """Found by the short soak: the first push of a Kleer client the inbound handlers created
    from a HubSpot company sent every property and overwrote an edit made in HubSpot since."""
    from libs.events.envelope import NewEvent
    from services.inbound.handlers import CLIENT_CREATED

    kleer_sim.seed(n_clients=1, seed=95)
    client = dict(next(iter(kleer_sim.book.clients)))
    kleer_id = str(client["id"])
    created = record_snapshot("client", client).properties  # the company as the inbound creation synced it
    async with hubspot_sim.client() as hubspot:
        await setup_hubspot(hubspot)
        company = hubspot_sim.ui_create("companies", {**created, "kleer_id": kleer_id})
        synced = {"kleer_id": kleer_id, "hubspot_properties": {**company.properties}, "fields": {}}
        await store.append(f"{CONNECTION}/kleer-client/{kleer_id}", [NewEvent(CLIENT_CREATED, synced, {})])
        hubspot_sim.ui_edit("companies", company.id, {"phone": "08-765 43 21"})  # not yet in Kleer
        pusher = Pusher(store, {CONNECTION: hubspot})

        await _push(store, pusher, record_snapshot("client", {**client, "email": "ny@kleer.example.se"}))

        now = _company(hubspot_sim, kleer_id)
        assert (now["id"], now["phone"], now["invoice_email"]) == (company.id, "08-765 43 21", "ny@kleer.example.se")
        first = [e for e in await store.read_all(0, 100) if e.type == "HubSpotCompanyUpserted"][-1]
        assert first.data["held"] == ["phone"] and "phone" not in first.data["written"]
        assert first.data["properties"]["phone"] == created["phone"]  # the base: what the creation synced

        # The inbound sync brought the phone to Kleer: the next poll's snapshot converges with nothing held.
        await _push(store, pusher, record_snapshot("client", {**client, "email": "ny@kleer.example.se",
                                                             "phone": "08-765 43 21"}))
        settled = [e for e in await store.read_all(0, 100) if e.type == "HubSpotCompanyUpserted"][-1]
        assert "held" not in settled.data and _company(hubspot_sim, kleer_id)["phone"] == "08-765 43 21"


async def test_the_first_push_of_a_record_never_synced_from_hubspot_sends_everything(
    store: PostgresEventStore, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    kleer_sim.seed(n_clients=1, seed=96)
    client = dict(next(iter(kleer_sim.book.clients)))
    kleer_id = str(client["id"])
    async with hubspot_sim.client() as hubspot:
        await setup_hubspot(hubspot)
        # A company someone linked by hand (kleer_id typed in HubSpot), with another phone: Kleer's wins.
        hubspot_sim.ui_create("companies", {"name": "Hand AB", "kleer_id": kleer_id, "phone": "08-1"})
        await _push(store, Pusher(store, {CONNECTION: hubspot}), record_snapshot("client", client))

    company = _company(hubspot_sim, kleer_id)
    assert (company["name"], company["phone"]) == (client["name"], record_snapshot("client", client).properties["phone"])
    first = [e for e in await store.read_all(0, 100) if e.type == "HubSpotCompanyUpserted"][-1]
    assert "held" not in first.data


async def _queued_then_synced(
    store: PostgresEventStore, hubspot_sim: HubSpotSim, kleer_id: str, hubspot_id: int, queued: Snapshot,
    edit: dict[str, str],
) -> RecordedEvent:
    """Record ``queued`` as a Kleer change still waiting for the pusher; then ``edit`` is made in HubSpot and
    the handlers' commit syncs it into Kleer (the write event, and our last push marked no longer what HubSpot
    holds). Returns the queued change event, as the log recorded it."""
    from libs.events.envelope import NewEvent
    from services.inbound import bookkeeping
    from services.inbound.handlers import UPDATED

    stream = f"{CONNECTION}/kleer-client/{kleer_id}"
    await store.append(stream, [NewEvent(changed_type("client"), queued.to_event_data(), {})])
    *_, event = [e for e in await store.read_stream(stream) if e.type == changed_type("client")]
    edited = hubspot_sim.ui_edit("companies", hubspot_id, edit)
    synced = {"kleer_id": kleer_id, "hubspot_properties": dict(edited.properties), "fields": dict.fromkeys(edit, "x")}
    async with store.pool.acquire() as conn, conn.transaction():
        await store.append(stream, [NewEvent(UPDATED["client"], synced, {})], conn=conn)
        await bookkeeping.mark_hubspot_ahead(conn, CONNECTION, "client", kleer_id)
    return event


async def test_a_queued_snapshot_already_pushed_is_not_pushed_again_over_a_later_inbound_sync(
    store: PostgresEventStore, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    """Found by the short soak: a workflow action pushed its new project at once; someone renamed it in
    HubSpot and the handlers wrote the name to Kleer; then the pusher's consumer reached the action's
    change event, still queued, and wrote the old name back over the edit."""
    from libs.events.envelope import NewEvent

    async with _pushed_client(store, kleer_sim, hubspot_sim, 96) as (pusher, client, kleer_id, hubspot_id):
        stream = f"{CONNECTION}/kleer-client/{kleer_id}"
        snapshot = record_snapshot("client", client)  # what HubSpot just got, its change event still queued
        queued = await _queued_then_synced(store, hubspot_sim, kleer_id, hubspot_id, snapshot,
                                           {"name": "Omdöpt i HubSpot AB"})

        await _handle(store, pusher, [queued])
        assert _company(hubspot_sim, kleer_id)["name"] == "Omdöpt i HubSpot AB"

        # The same values recorded after the inbound sync are a real change (Kleer went back): pushed.
        await store.append(stream, [NewEvent(changed_type("client"), snapshot.to_event_data(), {})])
        again = [e for e in await store.read_stream(stream) if e.type == changed_type("client")][-1]
        await _handle(store, pusher, [again])
        assert _company(hubspot_sim, kleer_id)["name"] == client["name"]


async def test_a_kleer_change_recorded_before_an_inbound_sync_does_not_overwrite_what_that_sync_merged(
    store: PostgresEventStore, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    """Found by CI's short soak: the pusher handled a Kleer change after the handlers had merged a HubSpot
    edit of the same field into Kleer (HubSpot won), and wrote the older Kleer value over it."""
    async with _pushed_client(store, kleer_sim, hubspot_sim, 97) as (pusher, client, kleer_id, hubspot_id):
        # Kleer changes the phone and deactivates the client; the change waits for the pusher while the
        # phone is edited in HubSpot and the handlers merge it into Kleer (HubSpot wins).
        changed = record_snapshot("client", {**client, "phone": "08-111 11 11", "active": False})
        queued = await _queued_then_synced(store, hubspot_sim, kleer_id, hubspot_id, changed, {"phone": "08-222 22 22"})

        await _handle(store, pusher, [queued])

        company = _company(hubspot_sim, kleer_id)
        assert (company["phone"], company["kleer_active"]) == ("08-222 22 22", "false")
        last = [e for e in await store.read_all(0, 1000) if e.type == "HubSpotCompanyUpserted"][-1]
        assert last.data["held"] == ["phone"] and last.data["properties"]["phone"] == "08-222 22 22"
