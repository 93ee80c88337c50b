"""Bad input never stops the sync: each bad record gets one clear DLQ entry, everything else lands."""

from __future__ import annotations

from typing import Any

import pytest

from libs.events.dlq import DeadLetterQueue
from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim
from tests.integration.outbound.conftest import (
    Outbound,
    assert_hubspot_matches,
    expected_snapshots,
    hubspot_by_kleer_id,
)


def _replace(table: Any, record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    changed = {**record, **changes}
    table.replace(changed)
    return changed


def _add_client(kleer_sim: KleerSimServer, template: dict[str, Any], **changes: Any) -> str:
    record = {**template, "id": kleer_sim.store.next_id(), **changes}
    kleer_sim.book.clients.insert(record)
    return str(record["id"])


def _certified_invoice(kleer_sim: KleerSimServer) -> dict[str, Any]:
    return next(
        i
        for i in kleer_sim.book.invoices
        if i["certified"] and not i.get("debit-invoice-nr") and len(i["rows"]) >= 2
    )


async def _open_entries(outbound: Outbound) -> dict[str, Any]:
    entries = await DeadLetterQueue(outbound.store).list(limit=1000)
    return {e.record: e for e in entries}


async def test_a_207_partial_failure_lands_the_good_inputs_and_parks_the_bad_one_with_hubspots_reason(
    outbound: Outbound, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    kleer_sim.seed(n_clients=15, seed=21)
    bad = _replace(kleer_sim.book.invoices, _certified_invoice(kleer_sim), currency="XYZ")
    bad_lines = [f"{bad['id']}-row-{n}" for n in range(1, len(bad["rows"]) + 1)]

    await outbound.sync()

    assert hubspot_sim.request_counts()["by_status"].get("207", 0) >= 1
    entries = await _open_entries(outbound)
    assert set(entries) == {f"kleer:invoice:{bad['id']}", *(f"kleer:line_item:{i}" for i in bad_lines)}
    reason = entries[f"kleer:invoice:{bad['id']}"].reason
    assert "XYZ was not one of the allowed options" in reason and "hs_currency" in reason
    assert entries[f"kleer:invoice:{bad['id']}"].source == "outbound-pusher"
    expected = expected_snapshots(kleer_sim)
    good = {key: s for key, s in expected.items() if f"kleer:{key[0]}:{key[1]}" not in entries}
    assert_hubspot_matches(hubspot_sim, good)
    assert str(bad["id"]) not in hubspot_by_kleer_id(hubspot_sim, "invoices")

    # Redrive: refused again while HubSpot still refuses; lands (with its associations) once HubSpot accepts.
    dlq = DeadLetterQueue(outbound.store)
    redrivers = {"outbound-pusher": outbound.pusher.redrive}
    invoice_entry = entries[f"kleer:invoice:{bad['id']}"]
    with pytest.raises(RuntimeError, match="still fails"):
        await dlq.redrive(invoice_entry.id, redrivers, actor="test")
    for object_type, name in (("invoices", "hs_currency"), ("line_items", "hs_line_item_currency_code")):
        kind = hubspot_sim.sim.object_type(object_type)
        options = hubspot_sim.store.properties[kind][name].options
        hubspot_sim.store.update_property(
            kind, name, {"options": [*options, {"label": "XYZ", "value": "XYZ"}]}
        )
    for entry in entries.values():
        await dlq.redrive(entry.id, redrivers, actor="test")
    assert await dlq.list() == []
    assert_hubspot_matches(hubspot_sim, expected)


async def test_odd_kleer_records_sync_or_get_one_clear_dlq_entry_each_and_the_rest_syncs(
    outbound: Outbound, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    kleer_sim.seed(n_clients=10, seed=22)
    template = next(iter(kleer_sim.book.clients))
    syncs = {
        "no org number": _add_client(kleer_sim, template, orgno=None, **{"vat-nr": None}),
        "2,000-char name": _add_client(kleer_sim, template, name="Å" + "x" * 1999),
        "non-ASCII": _add_client(
            kleer_sim, template, name="Ölands Ängsgård & Sön 株式会社 ✓", notes="Tål ÅÄÖ"
        ),
        "unknown but well-formed currency": _add_client(kleer_sim, template, **{"currency-type": "XYZ"}),
        "no address": _add_client(kleer_sim, template, address=None),
    }
    unmappable = {
        "malformed currency": _add_client(kleer_sim, template, **{"currency-type": "kronor"}),
        "payment days as text": _add_client(kleer_sim, template, **{"payment-days": "thirty"}),
    }
    invoice = _certified_invoice(kleer_sim)
    rows = [{**invoice["rows"][0], "quantity": -2}, *invoice["rows"][1:]]  # a credit row
    credit_row = _replace(kleer_sim.book.invoices, invoice, rows=rows)
    hubspot_refuses = _replace(
        kleer_sim.book.invoices,
        next(i for i in kleer_sim.book.invoices if i["certified"] and i["id"] != invoice["id"]),
        currency="XYZ",
        rows=[],
    )

    await outbound.sync()

    entries = await _open_entries(outbound)
    assert set(entries) == {
        *(f"kleer:client:{i}" for i in unmappable.values()),
        f"kleer:invoice:{hubspot_refuses['id']}",
    }
    currency_entry = entries[f"kleer:client:{unmappable['malformed currency']}"]
    assert currency_entry.source == "outbound-poller"
    assert "currency-type" in currency_entry.reason and "kleer_currency" in currency_entry.reason
    assert "'kronor'" in currency_entry.reason
    assert "payment-days" in entries[f"kleer:client:{unmappable['payment days as text']}"].reason
    assert entries[f"kleer:invoice:{hubspot_refuses['id']}"].source == "outbound-pusher"

    expected = expected_snapshots_without(kleer_sim, set(entries))
    assert_hubspot_matches(hubspot_sim, expected)
    companies = hubspot_by_kleer_id(hubspot_sim, "companies")
    assert companies[syncs["2,000-char name"]][0].properties["name"] == "Å" + "x" * 1999
    assert companies[syncs["non-ASCII"]][0].properties["name"] == "Ölands Ängsgård & Sön 株式会社 ✓"
    assert "orgno" not in companies[syncs["no org number"]][0].properties
    line = hubspot_by_kleer_id(hubspot_sim, "line_items")[f"{credit_row['id']}-row-1"][0].properties
    assert line["quantity"] == "-2" and line["amount"].startswith("-")

    # A quiet poll does not park the same records again.
    await outbound.sync()
    again = await _open_entries(outbound)
    assert set(again) == set(entries) and all(e.attempts == 1 for e in again.values())


def expected_snapshots_without(kleer_sim: KleerSimServer, records: set[str]) -> dict[Any, Any]:
    """What HubSpot should hold, leaving out parked records (the unmappable ones cannot even be mapped)."""
    book = kleer_sim.book
    unmappable = {r.rsplit(":", 1)[1] for r in records if r.startswith("kleer:client:")}
    saved = [c for c in book.clients if str(c["id"]) in unmappable]
    for client in saved:
        book.clients.remove(client["id"])
    try:
        expected = expected_snapshots(kleer_sim)
    finally:
        for client in sorted(saved, key=lambda c: c["id"]):
            book.clients.replace(client)
    return {key: s for key, s in expected.items() if f"kleer:{key[0]}:{key[1]}" not in records}
