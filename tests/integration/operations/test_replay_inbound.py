"""``kleer-sync replay --direction inbound``: recorded HubSpot webhooks re-driven through the inbound handlers.

The operator story: client creation was off and a one-way property was edited
alone, so the handlers (rightly, then) wrote nothing to Kleer. After turning
creation on, a replay of the window syncs those records through the normal
path: the dry run shows what Kleer would get and writes nothing, the run
writes it once, and a second run finds nothing left to do.
"""

from __future__ import annotations

import dataclasses

from libs.events.dlq import DeadLetterQueue
from libs.mapping.loader import default_mappings
from services.inbound.handlers import InboundHandlers
from services.inbound.hubspot_port import ClientHubSpotPort
from services.inbound.webhook_events import WEBHOOK_RECEIVED
from services.operations.replay import REPLAY_COMPLETED, REPLAY_STARTED, get_run, replay_stream
from services.operations.replay_inbound import InboundSelector, inbound_dry_run, run_inbound_replay

from .harness import CONNECTION, SyncHarness, commit, run_cli


def _handlers(sync: SyncHarness, *, create_clients: bool) -> InboundHandlers:
    return InboundHandlers(
        options=dataclasses.replace(sync.handlers.options, create_clients=create_clients),
        mappings=default_mappings(),
        pool=sync.pool,
        dlq=DeadLetterQueue(sync.store),
        kleer=sync.kleer,
        hubspot=ClientHubSpotPort(sync.hubspot),
    )


async def _kleer_clients(sync: SyncHarness) -> dict[str, dict[str, object]]:
    return {str(c["name"]): dict(c) for c in await sync.kleer.clients.list_all()}


async def test_inbound_replay_dry_runs_then_applies_what_the_handlers_skipped_once(sync: SyncHarness) -> None:
    kleer_id = await sync.kleer.clients.create({"name": "Tanum Sten AB", "contact": "Anna", "currency-type": "SEK"})
    await sync.sync(["client"])
    linked = sync.company_of(kleer_id)
    sync.hubspot_sim.ui_edit("companies", linked.id, {"kleer_contact": "Lisa"})  # one-way: no sync on its own
    created = sync.hubspot_sim.ui_create("companies", {"name": "Kville Granit AB", "phone": "+46 525 100"})
    recorded = [e for e in await sync.record_webhooks() if e.type == WEBHOOK_RECEIVED]
    await commit(sync.store, await _handlers(sync, create_clients=False).handle(recorded))
    before = await _kleer_clients(sync)
    assert before["Tanum Sten AB"]["contact"] == "Anna" and "Kville Granit AB" not in before

    selector = InboundSelector(CONNECTION, kinds=("company",))
    head = await sync.store.head()
    preview = await inbound_dry_run(sync.pool, selector, _handlers(sync, create_clients=True))
    diffs = {d.record: d for d in preview.diffs}
    assert diffs[f"hubspot:company:{linked.id}"].action == "update"
    assert [(c.field, c.old, c.new) for c in diffs[f"hubspot:company:{linked.id}"].changes] == [
        ("contact", "Anna", "Lisa")]
    assert diffs[f"hubspot:company:{created.id}"].action == "create", diffs[f"hubspot:company:{created.id}"]
    assert await _kleer_clients(sync) == before and await sync.store.head() == head  # wrote nothing anywhere
    assert await sync.pool.fetchval("SELECT count(*) FROM inbound_creations") == 0

    handlers = _handlers(sync, create_clients=True)
    report = await run_inbound_replay(sync.store, selector, handlers, actor="user:ops")
    assert (report.status, report.records, report.pushed, report.unchanged, report.failed) == (
        "completed", 2, 2, 0, 0)
    after = await _kleer_clients(sync)
    assert after["Tanum Sten AB"]["contact"] == "Lisa"
    new_client = after["Kville Granit AB"]
    [company] = [c for c in sync.hubspot_sim.records("companies") if c.get("hs_object_id") == str(created.id)]
    assert company["kleer_id"] == str(new_client["id"])  # linked back
    run = await get_run(sync.pool, report.run_id)
    assert run is not None and run.status == "completed" and run.actor == "user:ops"
    types = [e.type for e in await sync.store.read_stream(replay_stream(CONNECTION, report.run_id))]
    assert types == [REPLAY_STARTED, REPLAY_COMPLETED]

    again = await run_inbound_replay(sync.store, selector, handlers, actor="user:ops")
    assert (again.pushed, again.unchanged, again.failed) == (0, 2, 0)  # nothing left to do, nothing twice
    assert len(await _kleer_clients(sync)) == len(after)


async def test_inbound_replay_cli_selects_hubspot_records_and_refuses_kleer_ones(
    sync: SyncHarness, database_url: str
) -> None:
    kleer_id = await sync.kleer.clients.create({"name": "Fjällbacka Is AB", "contact": "Per", "currency-type": "SEK"})
    await sync.sync(["client"])
    company = sync.company_of(kleer_id)
    sync.hubspot_sim.ui_edit("companies", company.id, {"kleer_contact": "Eva"})
    await sync.handle_webhooks()  # one-way alone: skipped
    env = {
        "DATABASE_URL": database_url,
        "CONNECTION_ID": CONNECTION,
        "KLEER_API_BASE": sync.kleer_sim.base_url,
        "KLEER_TOKEN": sync.kleer_sim.token,
        "KLEER_COMPANY_ID": str(sync.kleer_sim.company_id),
        "HUBSPOT_API_BASE": sync.hubspot_sim.base_url,
        "HUBSPOT_ACCESS_TOKEN": sync.hubspot_sim.token,
        "HUBSPOT_PORTAL_ID": str(sync.hubspot_sim.portal_id),
        "HUBSPOT_CLIENT_SECRET": sync.hubspot_sim.client_secret,
        "HUBSPOT_APP_ID": str(sync.hubspot_sim.app_id),
        "PUBLIC_BASE_URL": "http://127.0.0.1",
    }
    refused = await run_cli("replay", "--direction", "inbound", "--record", f"kleer:client:{kleer_id}", env=env)
    assert refused.code == 2 and b"HubSpot records" in refused.stderr

    record = f"hubspot:company:{company.id}"
    dry = await run_cli("replay", "--direction", "inbound", "--record", record, "--dry-run", env=env)
    assert dry.code == 0, dry.stderr.decode()
    assert f"{record}: would update Kleer client {kleer_id}".encode() in dry.stdout and b"Per" in dry.stdout
    assert (await sync.kleer.clients.get(kleer_id))["contact"] == "Per"

    ran = await run_cli("replay", "--direction", "inbound", "--record", record, "--json", env=env)
    assert ran.code == 0, ran.stderr.decode()
    assert ran.json()["pushed"] == 1 and ran.json()["selector"]["direction"] == "inbound"
    assert (await sync.kleer.clients.get(kleer_id))["contact"] == "Eva"
