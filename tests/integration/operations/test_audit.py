"""``kleer-sync audit``: a record's whole story, both sides, with changed fields and causation chains."""

from __future__ import annotations

import pytest

from libs.records import RecordRef
from services.cli import main
from services.operations.audit import load_audit, load_correlation
from services.operations.render import audit_text
from services.operations.timeline import Entry, FieldChange, Step

from .harness import CONNECTION, SyncHarness, run_cli

pytestmark = pytest.mark.asyncio


def steps_in_order(entries: list[Entry], wanted: list[tuple[Step, str]]) -> list[Entry]:
    """The first entries matching ``wanted`` (step, type) as a subsequence of ``entries``; fails if absent."""
    found: list[Entry] = []
    rest = iter(entries)
    for step, event_type in wanted:
        for entry in rest:
            if entry.step is step and entry.type == event_type:
                found.append(entry)
                break
        else:
            raise AssertionError(
                f"no {step.value} {event_type} after {[e.type for e in found]} in "
                f"{[(e.position, e.type) for e in entries]}"
            )
    return found


async def test_audit_shows_sync_edit_and_conflict_in_order_with_the_causation_chain(sync: SyncHarness) -> None:
    kleer_id = await sync.kleer.clients.create(
        {"name": "Fjällbacka Bygg AB", "phone": "+46 8 1234", "email": "info@fjallbacka.se", "currency-type": "SEK"}
    )
    await sync.sync(["client"])
    company = sync.company_of(kleer_id)
    await sync.handle_webhooks()  # the push's own echoes: ignored
    # Both sides change the name before the next poll: HubSpot's edit meets a Kleer that moved on.
    await sync.kleer.clients.update(kleer_id, {"name": "Fjällbacka Bygg & Kakel AB"})
    sync.hubspot_sim.ui_edit("companies", company.id, {"name": "Fjällbacka Måleri AB"})
    await sync.handle_webhooks()

    audit = await load_audit(sync.pool, RecordRef("kleer", "client", str(kleer_id)), CONNECTION)
    assert [str(link.record) for link in audit.linked] == [f"hubspot:company:{company.id}"]
    poll, push, conflict, wrote = steps_in_order(
        audit.entries,
        [
            (Step.POLL, "KleerClientChanged"),
            (Step.PUSH, "HubSpotCompanyUpserted"),
            (Step.CONFLICT, "SyncConflict"),
            (Step.KLEER_WRITE, "KleerClientUpdated"),
        ],
    )
    by_id = {e.event_id: e for e in audit.entries}
    hook = by_id[conflict.chain[0].event_id]  # the person's edit, not the echoes of our own push
    assert hook.step is Step.WEBHOOK and "CRM_UI" in hook.summary
    assert push.position < hook.position < conflict.position < wrote.position
    echoes = [e for e in audit.entries if e.type == "InboundEchoIgnored"]
    assert echoes and all(e.position < hook.position for e in echoes)
    assert [e.position for e in audit.entries] == sorted(e.position for e in audit.entries)
    # What changed, old -> new.
    assert FieldChange("name", None, "Fjällbacka Bygg AB") in poll.changes
    assert poll.actor == "poller" and push.actor == "outbound-pusher"
    assert hook.changes == (FieldChange("name", "Fjällbacka Bygg AB", "Fjällbacka Måleri AB"),)
    assert hook.stream == f"{CONNECTION}/hubspot-company/{company.id}"
    assert FieldChange("name", "Fjällbacka Bygg & Kakel AB", "Fjällbacka Måleri AB") in conflict.changes
    assert "hubspot wins" in conflict.summary
    assert FieldChange("name", "Fjällbacka Bygg AB", "Fjällbacka Måleri AB") in wrote.changes
    # The causation chain crosses from the Kleer stream to the HubSpot one.
    assert [link.event_id for link in push.chain] == [poll.event_id]
    assert [link.event_id for link in conflict.chain] == [hook.event_id]
    assert [link.event_id for link in wrote.chain] == [hook.event_id]
    assert wrote.correlation_id == hook.correlation_id

    # The whole chain of the HubSpot edit, by its correlation id.
    chain = await load_correlation(sync.pool, str(hook.correlation_id))
    assert [e.type for e in chain][:1] == ["WebhookReceived"]
    assert {"SyncConflict", "KleerClientUpdated"} <= {e.type for e in chain}

    # The HubSpot side's audit is the same story.
    other = await load_audit(sync.pool, RecordRef("hubspot", "company", str(company.id)), CONNECTION)
    assert [str(link.record) for link in other.linked] == [f"kleer:client:{kleer_id}"]
    assert [e.event_id for e in other.entries] == [e.event_id for e in audit.entries]

    text = audit_text(audit)
    assert "SyncConflict" in text and 'name: "Fjällbacka Bygg AB" → "Fjällbacka Måleri AB"' in text


async def test_audit_cli_prints_json_for_machines(
    sync: SyncHarness, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    kleer_id = await sync.kleer.clients.create({"name": "Grebbestad Fisk AB", "currency-type": "SEK"})
    await sync.sync(["client"])
    env = {"DATABASE_URL": database_url, "CONNECTION_ID": CONNECTION}
    done = await run_cli("audit", f"kleer:client:{kleer_id}", "--json", env=env)
    assert done.code == 0, done.stderr.decode()
    document = done.json()
    assert document["record"] == f"kleer:client:{kleer_id}"
    assert [e["type"] for e in document["entries"]] == ["KleerClientChanged", "HubSpotCompanyUpserted"]
    push = document["entries"][1]
    assert push["causation_chain"][0]["type"] == "KleerClientChanged"
    assert {"field": "name", "old": None, "new": "Grebbestad Fisk AB"} in document["entries"][0]["changes"]

    assert main(["audit", "client-123"]) == 2  # refused before it connects anywhere
    assert "system:kind:id" in capsys.readouterr().err
