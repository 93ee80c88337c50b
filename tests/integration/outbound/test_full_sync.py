"""A 1,000-record book through poller, log, Kafka and pusher into the HubSpot simulator."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from libs.mapping.invoices import should_sync_invoice
from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim
from tests.integration.outbound.conftest import (
    Outbound,
    assert_hubspot_matches,
    expected_snapshots,
    hubspot_by_kleer_id,
    write_requests,
)

BOOK_CLIENTS = 125  # with its products, invoices, agreements, projects and rows: about 1,000 records


async def _upserted_since(outbound: Outbound, position: int) -> dict[str, set[str]]:
    rows = await outbound.pool.fetch(
        "SELECT data->>'kind', data->>'kleer_id' FROM events WHERE position > $1 AND type LIKE 'HubSpot%Upserted'",
        position,
    )
    found: dict[str, set[str]] = {}
    for kind, kleer_id in rows:
        found.setdefault(kind, set()).add(kleer_id)
    return found


async def test_first_sync_writes_everything_a_quiet_poll_nothing_and_a_five_percent_change_exactly_it(
    outbound: Outbound, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    # One test, three phases: a consumer group join costs seconds on the dev broker.
    kleer_sim.seed(n_clients=BOOK_CLIENTS, seed=11)
    await _first_sync_creates_every_record_and_association_with_exact_amounts(
        outbound, kleer_sim, hubspot_sim
    )
    await _a_poll_without_changes_makes_zero_hubspot_writes(outbound, hubspot_sim)
    await _changing_five_percent_updates_exactly_those_records(outbound, kleer_sim, hubspot_sim)


async def _first_sync_creates_every_record_and_association_with_exact_amounts(
    outbound: Outbound, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    expected = expected_snapshots(kleer_sim)
    assert 900 <= len(expected) <= 1200, len(expected)
    assert {kind for kind, _ in expected} == {
        "client",
        "product",
        "project",
        "agreement",
        "invoice",
        "line_item",
    }

    report = await outbound.sync()

    assert report.ok and report.changed == len(expected)
    assert_hubspot_matches(hubspot_sim, expected)
    # Exact amounts, recomputed here from öre without libs.mapping.
    invoices = hubspot_by_kleer_id(hubspot_sim, "invoices")
    lines = hubspot_by_kleer_id(hubspot_sim, "line_items")
    for invoice in kleer_sim.book.invoices:
        if not should_sync_invoice(invoice):
            assert str(invoice["id"]) not in invoices
            continue
        props = invoices[str(invoice["id"])][0].properties
        assert Decimal(props["hs_amount_billed"]) == Decimal(invoice["amount"] + invoice["vat"]) / 100
        for n, row in enumerate(invoice["rows"], start=1):
            line = lines[f"{invoice['id']}-row-{n}"][0].properties
            if not row.get("discount"):
                amount = Decimal(str(row["quantity"])) * Decimal(row["price"]) / 100
                assert Decimal(line["amount"]) == amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    dead = await outbound.pool.fetchval("SELECT count(*) FROM dead_letters")
    pending = await outbound.pool.fetchval("SELECT count(*) FROM pending_associations")
    assert (dead, pending) == (0, 0)


async def _a_poll_without_changes_makes_zero_hubspot_writes(
    outbound: Outbound, hubspot_sim: HubSpotSim
) -> None:
    before_total = hubspot_sim.request_counts()["total"]
    head = await outbound.store.head()

    report = await outbound.sync()

    assert report.changed == 0
    assert hubspot_sim.request_counts()["total"] == before_total, "a quiet poll must not call HubSpot"
    assert await outbound.store.head() == head, "a quiet poll must not even record an event"


async def _changing_five_percent_updates_exactly_those_records(
    outbound: Outbound, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    before = expected_snapshots(kleer_sim)
    head = await outbound.store.head()
    writes_before = write_requests(hubspot_sim)

    kleer_sim.mutate(0.05, seed=5)
    after = expected_snapshots(kleer_sim)
    changed = {
        key for key, s in after.items() if key not in before or before[key].fingerprint != s.fingerprint
    }
    removed = set(before) - set(after)
    assert changed, "the mutation changed nothing HubSpot shows"

    await outbound.sync()

    written = await _upserted_since(outbound, head)
    assert {(kind, kleer_id) for kind, ids in written.items() for kleer_id in ids} == changed | removed
    assert_hubspot_matches(hubspot_sim, after)
    for kind, kleer_id in removed:  # a line item gone with its row is archived; anything else is flagged
        records = hubspot_by_kleer_id(hubspot_sim, before[(kind, kleer_id)].hubspot_object).get(kleer_id, [])
        assert records == [] if kind == "line_item" else records[0].properties.get("kleer_deleted") == "true"
    # The fewest requests: per object type one upsert per 100 records, and one association batch per pair.
    touched = [before.get(k) or after[k] for k in changed | removed]
    objects = {s.hubspot_object for s in touched}
    pairs = {(s.hubspot_object, p.kind) for s in touched for p in s.parents}
    upserts = sum(-(-sum(1 for s in touched if s.hubspot_object == o) // 100) for o in objects)
    assert write_requests(hubspot_sim) - writes_before <= upserts + len(pairs)
