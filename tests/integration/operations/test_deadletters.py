"""``kleer-sync dlq``: list and show what was parked, redrive through the pusher once the cause is fixed, discard."""

from __future__ import annotations

import pytest

from libs.config import Settings
from libs.events.dlq import DeadLetterQueue
from services.operations.deadletters import ServiceRedrivers, redrive_entries
from services.outbound.setup import setup_hubspot

from .harness import CONNECTION, SyncHarness, run_cli

pytestmark = pytest.mark.asyncio


async def test_redrive_after_fixing_the_cause_succeeds_and_empties_the_entry(
    sync: SyncHarness, database_url: str
) -> None:
    env = {
        "DATABASE_URL": database_url,
        "CONNECTION_ID": CONNECTION,
        "HUBSPOT_API_BASE": sync.hubspot_sim.base_url,
        "HUBSPOT_ACCESS_TOKEN": sync.hubspot_sim.token,
        "HUBSPOT_PORTAL_ID": str(sync.hubspot_sim.portal_id),
    }
    # Someone deleted one of our custom properties in HubSpot: every company write is refused.
    companies = sync.hubspot_sim.sim.object_type("companies")
    sync.hubspot_sim.store.properties[companies].pop("kleer_contact")
    first = await sync.kleer.clients.create({"name": "Lysekil Hamn AB", "contact": "Anna", "currency-type": "SEK"})
    second = await sync.kleer.clients.create({"name": "Smögen Bad AB", "contact": "Bo", "currency-type": "SEK"})
    await sync.sync(["client"])

    listed = await run_cli("dlq", "list", "--source", "outbound-pusher", "--json", env=env)
    assert listed.code == 0, listed.stderr.decode()
    entries = {e["record"]: e for e in listed.json()}
    assert set(entries) == {f"kleer:client:{first}", f"kleer:client:{second}"}
    entry_id = entries[f"kleer:client:{first}"]["id"]
    assert "kleer_contact" in entries[f"kleer:client:{first}"]["reason"]
    assert entries[f"kleer:client:{first}"]["payload"]["data"]["properties"]["name"] == "Lysekil Hamn AB"

    # Redriven before the fix (in this process, through the same redrivers the CLI opens): still refused,
    # recorded, still open.
    dlq = DeadLetterQueue(sync.store)
    entry = await dlq.get(entry_id)
    assert entry is not None
    async with ServiceRedrivers(Settings(env)) as redrivers:
        [early] = await redrive_entries(dlq, redrivers, [entry], "user:ops")
    assert not early.ok and "kleer_contact" in early.message
    entry = await dlq.get(entry_id)
    assert entry is not None and entry.status == "open" and entry.attempts == 2

    await setup_hubspot(sync.hubspot)  # the fix: the property is back
    fixed = await run_cli("dlq", "redrive", str(entry_id), "--actor", "user:ops", env=env)
    assert fixed.code == 0, fixed.stdout.decode() + fixed.stderr.decode()
    assert b"1 of 1 redriven" in fixed.stdout
    entry = await dlq.get(entry_id)
    assert entry is not None and entry.status == "redriven"
    assert sync.company_of(first).properties["kleer_contact"] == "Anna"
    assert await dlq.list(record=f"kleer:client:{first}") == []

    discarded = await run_cli("dlq", "discard", str(entries[f"kleer:client:{second}"]["id"]), "--why", "test", env=env)
    assert discarded.code == 0 and b"discarded" in discarded.stdout
    assert await dlq.list() == []
    assert [e.status for e in await dlq.list(status=None)] == ["discarded", "redriven"]

    # Every step is in the record's timeline.
    types = [e.type for e in await sync.store.read_stream(f"{CONNECTION}/kleer-client/{first}")]
    assert types == [
        "KleerClientChanged",
        "DeadLettered",
        "DeadLetterRedriveFailed",
        "HubSpotCompanyUpserted",
        "DeadLetterRedriven",
    ]
    redriven = (await sync.store.read_stream(f"{CONNECTION}/kleer-client/{first}"))[-1]
    assert redriven.metadata["actor"] == "user:ops"
