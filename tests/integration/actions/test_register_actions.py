"""``kleer-sync hubspot register-actions``: definitions from the repo, created once, updated when they differ."""

from __future__ import annotations

import argparse
import asyncio

import pytest

from services.inbound.actions import catalog
from services.inbound.actions.cli import register, register_actions
from tests.fixtures.hubspot_sim import HubSpotSim

BASE = "https://sync.example.com"


async def test_registering_twice_creates_once_then_changes_nothing(hubspot_sim: HubSpotSim) -> None:
    async with hubspot_sim.client() as client:
        first = await register_actions(client, hubspot_sim.app_id, BASE)
        second = await register_actions(client, hubspot_sim.app_id, BASE)
        stored = await client.list_action_definitions(hubspot_sim.app_id)

    assert [r.status for r in first] == ["created"] * 5
    assert [r.status for r in second] == ["unchanged"] * 5
    assert sorted(d["actionUrl"] for d in stored) == sorted(f"{BASE}/actions/{name}" for name in catalog.ACTION_NAMES)
    invoice = next(d for d in stored if d["actionUrl"].endswith("/create-invoice"))
    assert invoice["objectTypes"] == ["DEAL"] and invoice["labels"]["en"]["actionName"] == "Create Kleer Invoice"
    assert "x-rules" not in str(invoice)


async def test_a_definition_that_differs_is_updated_in_place(hubspot_sim: HubSpotSim) -> None:
    async with hubspot_sim.client() as client:
        await register_actions(client, hubspot_sim.app_id, BASE)
        stored = await client.list_action_definitions(hubspot_sim.app_id)
        target = next(d for d in stored if d["actionUrl"].endswith("/create-project"))
        await client.update_action_definition(hubspot_sim.app_id, target["id"], {"labels": {"en": {"actionName": "Old"}}})
        dry = await register_actions(client, hubspot_sim.app_id, BASE, dry_run=True)
        again = await register_actions(client, hubspot_sim.app_id, BASE)
        after = await client.list_action_definitions(hubspot_sim.app_id)

    assert {r.action: r.status for r in dry}["create-project"] == "would update"
    statuses = {r.action: r.status for r in again}
    assert statuses.pop("create-project") == "updated" and set(statuses.values()) == {"unchanged"}
    assert len(after) == 5
    project = next(d for d in after if d["id"] == target["id"])
    assert project["labels"]["en"]["actionName"] == "Create Kleer Project"


async def test_the_command_registers_from_the_environment(
    hubspot_sim: HubSpotSim, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {"HUBSPOT_APP_ID": str(hubspot_sim.app_id), "PUBLIC_BASE_URL": BASE,
                        "HUBSPOT_ACCESS_TOKEN": hubspot_sim.token, "HUBSPOT_API_BASE": hubspot_sim.base_url}.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser(prog="kleer-sync")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["hubspot", "register-actions"])

    assert await asyncio.to_thread(args.func, args) == 0
    assert await asyncio.to_thread(args.func, args) == 0

    out = capsys.readouterr().out
    assert out.count("created") == 5 and out.count("unchanged") == 5
    assert "Create Kleer Agreement" in out
