"""``kleer-sync replay``: dry run diff, restoring a wiped portal, resuming a killed run without duplicates."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sys
from typing import Any

import pytest

from libs.mapping.objects import KLEER_ID
from services.operations.replay import (
    REPLAY_COMPLETED,
    REPLAY_STARTED,
    ReplaySelector,
    dry_run,
    load,
    run_replay,
    select,
)
from services.operations.timeline import FieldChange

from .harness import CONNECTION, SyncHarness, run_cli

pytestmark = pytest.mark.asyncio

_SYSTEM_PROPERTIES = ("hs_", "createdate", "lastmodifieddate", "hubspot_owner")


def hubspot_state(sync: SyncHarness) -> dict[str, Any]:
    """What the portal holds, by Kleer id: each record's properties and associations (ids-free, comparable)."""
    store = sync.hubspot_sim.store
    kleer_ids: dict[tuple[str, int], str] = {}
    records: dict[str, dict[str, dict[str, str]]] = {}
    for kind, table in store.records.items():
        for record in table.values():
            kleer_id = record.properties.get(KLEER_ID)
            if not kleer_id:
                continue
            kleer_ids[(kind.value, record.id)] = kleer_id
            props = {k: v for k, v in record.properties.items() if v is not None and not k.startswith(_SYSTEM_PROPERTIES)}
            assert kleer_id not in records.setdefault(kind.value, {}), f"{kind.value} {kleer_id} twice"
            records[kind.value][kleer_id] = props
    links = set()
    for (kind_name, record_id), kleer_id in kleer_ids.items():
        for (other_name, other_id), other_kleer in kleer_ids.items():
            if other_name == kind_name:
                continue
            from_type = sync.hubspot_sim.sim.object_type(kind_name)
            to_type = sync.hubspot_sim.sim.object_type(other_name)
            if other_id in store.associations.targets(from_type, record_id, to_type):
                links.add((kind_name, kleer_id, other_name, other_kleer))
    return {"records": records, "associations": sorted(links)}


async def test_replay_of_a_time_window_after_a_wipe_restores_the_exact_state(sync: SyncHarness) -> None:
    sync.kleer_sim.seed(n_clients=5, seed=7)
    before_window = dt.datetime.now(dt.UTC)
    await sync.sync()
    after_window = dt.datetime.now(dt.UTC)
    expected = hubspot_state(sync)
    assert len(expected["records"]["companies"]) == 5 and expected["associations"]
    sync.hubspot_sim.wipe()
    assert hubspot_state(sync)["records"] == {}

    selector = ReplaySelector(CONNECTION, since=before_window, until=after_window)
    tools = sync.replay_tools()
    seen: list[tuple[int, int]] = []
    report = await run_replay(
        sync.store, selector, tools.make_pusher("user:test"), actor="user:test", progress=lambda d, t: seen.append((d, t))
    )

    assert report.status == "completed" and report.failed == 0
    assert report.pushed == report.records == sum(len(r) for r in expected["records"].values())
    assert hubspot_state(sync) == expected
    assert seen[-1] == (report.records, report.records)
    # The run is in the log, and every push it made says so.
    [started] = await sync.events(REPLAY_STARTED)
    [completed] = await sync.events(REPLAY_COMPLETED)
    assert completed.data["pushed"] == report.pushed
    pushes = [e for e in await sync.events("HubSpotCompanyUpserted") if e.position > started.position]
    assert len(pushes) == 5
    assert {e.metadata["source"] for e in pushes} == {"replay"}
    assert {e.metadata["causation_id"] for e in pushes} == {str(started.event_id)}
    assert {e.metadata["actor"] for e in pushes} == {"user:test"}
    run = await sync.pool.fetchrow("SELECT status, total, pushed FROM replay_runs WHERE id = $1", report.run_id)
    assert tuple(run) == ("completed", report.records, report.pushed)


async def test_dry_run_shows_the_field_diff_and_writes_nothing(sync: SyncHarness) -> None:
    first = await sync.kleer.clients.create({"name": "Tanum Trä AB", "phone": "+46 525 100", "currency-type": "SEK"})
    second = await sync.kleer.clients.create({"name": "Kville Kök AB", "currency-type": "SEK"})
    await sync.sync(["client"])
    edited = sync.company_of(first)
    sync.hubspot_sim.ui_edit("companies", edited.id, {"phone": "+46 525 999"})  # someone edits HubSpot
    sync.hubspot_sim.sim.ui_delete("companies", str(sync.company_of(second).id))  # and deletes a company
    head = await sync.store.head()
    writes_before = _write_requests(sync)

    report = await dry_run(sync.pool, ReplaySelector(CONNECTION, kinds=("client",)), sync.replay_tools().reader)

    by_record = {d.record: d for d in report.diffs}
    assert by_record[f"kleer:client:{first}"].action == "update"
    assert by_record[f"kleer:client:{first}"].changes == (FieldChange("phone", "+46 525 999", "+46 525 100"),)
    assert by_record[f"kleer:client:{second}"].action == "create"
    assert FieldChange("name", None, "Kville Kök AB") in by_record[f"kleer:client:{second}"].changes
    assert report.counts() == {"update": 1, "create": 1}
    assert await sync.store.head() == head  # no event
    assert await sync.pool.fetchval("SELECT count(*) FROM replay_runs") == 0
    assert _write_requests(sync) == writes_before  # only batch reads went to HubSpot
    assert sync.company_of(first).properties["phone"] == "+46 525 999"


def _write_requests(sync: SyncHarness) -> int:
    counts = sync.hubspot_sim.request_counts()["endpoints"]
    return sum(
        sum(statuses.values())
        for endpoint, statuses in counts.items()
        if not endpoint.startswith("GET") and not endpoint.endswith("/batch/read")
    )


async def test_replay_killed_halfway_and_rerun_finishes_without_duplicates(sync: SyncHarness, database_url: str) -> None:
    ids = [await sync.kleer.clients.create({"name": f"Strömstad Fiske {n} AB", "currency-type": "SEK"}) for n in range(24)]
    await sync.sync(["client"])
    sync.hubspot_sim.wipe()
    sync.hubspot_sim.set_faults(latency={"ms": 100})  # each HubSpot request takes a while: time to kill
    env = {
        "DATABASE_URL": database_url,
        "CONNECTION_ID": CONNECTION,
        "HUBSPOT_API_BASE": sync.hubspot_sim.base_url,
        "HUBSPOT_ACCESS_TOKEN": sync.hubspot_sim.token,
        "HUBSPOT_PORTAL_ID": str(sync.hubspot_sim.portal_id),
    }
    command = ["replay", "--type", "clients", "--batch-size", "4", "--actor", "user:ops"]
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *command, env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(6000):  # the child needs a few seconds to start on a busy machine
            pushed = await sync.pool.fetchval("SELECT max(pushed) FROM replay_runs")
            if pushed and pushed >= 8:
                break
            await asyncio.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        await child.wait()
    run = await sync.pool.fetchrow("SELECT id, status, pushed, total FROM replay_runs")
    assert run["status"] == "running" and 8 <= run["pushed"] < 24, dict(run)
    sync.hubspot_sim.clear_faults()

    rerun = await run_cli(*command, "--json", env=env)

    assert rerun.code == 0, rerun.stderr.decode()
    outcome = rerun.json()
    assert outcome["run_id"] == run["id"] and outcome["resumed"] and outcome["status"] == "completed"
    assert outcome["pushed"] == outcome["records"] == 24
    companies = hubspot_state(sync)["records"]["companies"]
    assert sorted(companies) == sorted(str(i) for i in ids)  # each exactly once (hubspot_state checks)
    correlation = await sync.pool.fetchval("SELECT correlation_id FROM replay_runs WHERE id = $1", run["id"])
    pushes = await sync.pool.fetch(
        "SELECT stream, count(*) FROM events WHERE type = 'HubSpotCompanyUpserted' "
        "AND metadata->>'correlation_id' = $1 GROUP BY stream",
        correlation,
    )
    assert len(pushes) == 24 and {r[1] for r in pushes} == {1}  # one recorded push per record, none twice


async def test_selectors_pick_the_latest_change_per_record_within_window_positions_records_and_types(
    sync: SyncHarness,
) -> None:
    ids = [await sync.kleer.clients.create({"name": f"Tjörn {n} AB", "currency-type": "SEK"}) for n in range(3)]
    t0 = dt.datetime.now(dt.UTC)
    await sync.sync(["client"])
    t1 = dt.datetime.now(dt.UTC)
    await sync.kleer.clients.update(ids[0], {"name": "Tjörn 0 Nya AB"})
    await sync.sync(["client"])
    changes = await sync.events("KleerClientChanged")
    assert len(changes) == 4

    async def names(**filters: Any) -> list[str]:
        selection = await select(sync.pool, ReplaySelector(CONNECTION, **filters))
        return [i.snapshot.properties["name"] for i in await load(sync.pool, selection.positions) if i.snapshot]

    assert await names() == ["Tjörn 1 AB", "Tjörn 2 AB", "Tjörn 0 Nya AB"]  # latest per record, in log order
    assert await names(since=t0, until=t1) == ["Tjörn 0 AB", "Tjörn 1 AB", "Tjörn 2 AB"]
    assert await names(since=t1) == ["Tjörn 0 Nya AB"]
    assert await names(records=(f"kleer:client:{ids[1]}",)) == ["Tjörn 1 AB"]
    assert await names(to_position=changes[1].position) == ["Tjörn 0 AB", "Tjörn 1 AB"]
    assert await names(from_position=changes[2].position) == ["Tjörn 2 AB", "Tjörn 0 Nya AB"]
    assert await names(kinds=("invoice",)) == []
    assert await names(event_types=("KleerClientRemoved",)) == []


async def test_a_removal_is_replayed_through_the_pushers_own_removal_path(sync: SyncHarness) -> None:
    kept = await sync.kleer.clients.create({"name": "Hamburgsund Kvarn AB", "currency-type": "SEK"})
    gone = await sync.kleer.clients.create({"name": "Fjällbacka Färg AB", "currency-type": "SEK"})
    await sync.sync(["client"])
    await sync.kleer.clients.delete(gone)
    await sync.sync(["client"])
    assert sync.company_of(gone).properties["kleer_deleted"] == "true"  # flagged, as the policy says

    tools = sync.replay_tools()
    preview = await dry_run(sync.pool, ReplaySelector(CONNECTION, kinds=("client",)), tools.reader)
    assert {d.record: d.action for d in preview.diffs} == {f"kleer:client:{kept}": "same",
                                                           f"kleer:client:{gone}": "remove"}
    report = await run_replay(sync.store, ReplaySelector(CONNECTION, kinds=("client",)), tools.make_pusher("user:t"),
                              actor="user:t")
    assert (report.status, report.records, report.pushed, report.failed) == ("completed", 2, 2, 0)
    assert sync.company_of(gone).properties["kleer_deleted"] == "true"
    assert await sync.handlers.dlq.list() == []
