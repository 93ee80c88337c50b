"""HubSpot projects (0-970) reach Kleer projects: edits, echoes, one-way fields and deletions."""

from __future__ import annotations

from typing import Any

import pytest

from libs.mapping.convert import fingerprint, to_hubspot

from .conftest import CONNECTION, InboundStack

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


async def _linked_project(stack: InboundStack, **fields: Any) -> dict[str, Any]:
    """A Kleer project as the outbound sync would have it: in HubSpot with kleer_id, its fingerprint stored."""
    from services.outbound.fingerprints import FingerprintRow, save
    from sim.hubspot.store import Source

    client_id = await stack.kleer.clients.create({"name": "Projektägare AB", "currency-type": "SEK"})
    body = {"name": "Takbyte Solna", "client": {"id": client_id}, "status": "Open", "currency-type": "SEK",
            "payment-days": 30, "comment": "", **fields}
    kleer_id = await stack.kleer.projects.create(body)
    mapped = to_hubspot("project", await stack.kleer.projects.get(kleer_id))
    kind = stack.hubspot.sim.object_type("projects")
    project = stack.hubspot.store.create_one(kind, {"properties": mapped}, Source("INTEGRATION", str(stack.hubspot.app_id)))
    async with stack.deps.pool.acquire() as conn:
        await save(conn, CONNECTION, "project", [FingerprintRow(str(kleer_id), fingerprint("project", mapped), "x", None)])
        await conn.execute(  # the pusher's id map
            "INSERT INTO hubspot_ids (connection, kind, kleer_id, hubspot_object, hubspot_id, pushed_fingerprint) "
            "VALUES ($1, 'project', $2, 'projects', $3, $4)",
            CONNECTION, str(kleer_id), str(project.id), fingerprint("project", mapped))
    return {"kleer_id": kleer_id, "project_id": str(project.id), "mapped": mapped}


def _kleer_project(stack: InboundStack, kleer_id: int) -> dict[str, Any]:
    return dict(stack.kleer_sim.book.projects.get(kleer_id))


async def _updated(stack: InboundStack, kleer_id: int) -> list[Any]:
    return await stack.stream_events("kleer", "project", kleer_id, "KleerProjectUpdated")


async def test_a_project_edit_in_hubspot_writes_every_mapped_field_to_the_kleer_project(
    shared_stack: InboundStack,
) -> None:
    linked = await _linked_project(shared_stack)
    # Fields changed in HubSpot while webhooks were off (the sync must send all of them, not only the trigger).
    kind = shared_stack.hubspot.sim.object_type("projects")
    shared_stack.hubspot.store.records[kind][int(linked["project_id"])].properties.update(
        {"kleer_your_reference": "Karin Ek", "kleer_payment_days": "20"})

    shared_stack.hubspot.ui_edit("projects", linked["project_id"],
                                 {"hs_name": "Takbyte Solna etapp 2", "kleer_comment": "Ställning vecka 12"})

    async def written() -> bool:
        return bool(await _updated(shared_stack, linked["kleer_id"]))

    await shared_stack.wait_for(written, 15.0)
    kleer = _kleer_project(shared_stack, linked["kleer_id"])
    assert (kleer["name"], kleer["comment"]) == ("Takbyte Solna etapp 2", "Ställning vecka 12")
    assert (kleer["your-reference"], kleer["payment-days"]) == ("Karin Ek", 20)
    [event] = await _updated(shared_stack, linked["kleer_id"])
    assert event.data["hubspot_id"] == linked["project_id"]
    assert set(event.data["changed_properties"]) >= {"hs_name", "kleer_comment"}


async def test_a_one_way_project_property_alone_writes_nothing(shared_stack: InboundStack) -> None:
    linked = await _linked_project(shared_stack)
    before = _kleer_project(shared_stack, linked["kleer_id"])
    writes = shared_stack.kleer_writes()

    # kleer_client_id is outbound only (Kleer -> HubSpot): editing it in HubSpot is not a change for Kleer.
    shared_stack.hubspot.ui_edit("projects", linked["project_id"], {"kleer_client_id": "999"})
    await shared_stack.settle(0.3)

    assert shared_stack.kleer_writes() == writes
    assert _kleer_project(shared_stack, linked["kleer_id"]) == before
    assert await _updated(shared_stack, linked["kleer_id"]) == []


async def test_our_own_project_write_echoed_back_writes_nothing(shared_stack: InboundStack) -> None:
    from sim.hubspot.store import Source

    linked = await _linked_project(shared_stack)
    writes = shared_stack.kleer_writes()
    kind = shared_stack.hubspot.sim.object_type("projects")

    shared_stack.hubspot.store.update_one(kind, linked["project_id"], None, {"properties": {"kleer_comment": "x"}},
                                          Source("INTEGRATION", str(shared_stack.hubspot.app_id)))
    await shared_stack.settle(0.3)

    assert shared_stack.kleer_writes() == writes
    assert await _updated(shared_stack, linked["kleer_id"]) == []


async def test_a_project_deleted_in_hubspot_leaves_kleer_alone_and_is_recorded(shared_stack: InboundStack) -> None:
    linked = await _linked_project(shared_stack)
    before = _kleer_project(shared_stack, linked["kleer_id"])

    shared_stack.hubspot.sim.ui_delete("projects", linked["project_id"])

    async def recorded() -> bool:
        return bool(await shared_stack.stream_events("hubspot", "project", linked["project_id"], "HubSpotProjectDeleted"))

    await shared_stack.wait_for(recorded, 15.0)
    [deleted] = await shared_stack.stream_events("hubspot", "project", linked["project_id"], "HubSpotProjectDeleted")
    assert deleted.data["policy"] == "leave" and deleted.data["kleer_type"] == "project"
    assert deleted.data["kleer_id"] == str(linked["kleer_id"])
    assert _kleer_project(shared_stack, linked["kleer_id"]) == before
