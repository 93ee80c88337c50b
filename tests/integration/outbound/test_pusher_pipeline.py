"""The pusher works on batch N+1 while batch N commits: it must see N's writes without Postgres."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from libs.events.consumer import HandlerResult
from libs.events.envelope import RecordedEvent
from libs.events.store import PostgresEventStore
from services.outbound import pusher as pusher_module
from services.outbound.pusher import Pusher
from services.outbound.setup import setup_hubspot
from services.outbound.snapshots import Snapshot, changed_type, snapshots_for_push
from sim.kleer import KleerSimServer
from tests.fixtures.hubspot_sim import HubSpotSim
from tests.integration.outbound.conftest import CONNECTION, assert_hubspot_matches, write_requests

_positions = iter(range(1, 10**9))


def _events(snapshots: Sequence[Snapshot]) -> list[RecordedEvent]:
    return [
        RecordedEvent(
            next(_positions),
            uuid.uuid4(),
            s.stream(CONNECTION),
            1,
            changed_type(s.kind),
            s.to_event_data(),
            {},
            datetime.now(UTC),
        )
        for s in snapshots
    ]


async def _commit(store: PostgresEventStore, result: HandlerResult) -> None:
    await result.commit(store)


async def test_a_batch_handled_before_the_previous_one_committed_links_and_skips_as_if_it_had(
    store: PostgresEventStore, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    kleer_sim.seed(n_clients=3, seed=61)
    invoice = next(i for i in kleer_sim.book.invoices if i["certified"] and not i.get("debit-invoice-nr"))
    client = kleer_sim.book.clients.get(invoice["client-ref"]["id"])
    assert client is not None
    (company,) = snapshots_for_push("client", client)
    invoice_snapshot, *lines = snapshots_for_push("invoice", invoice)
    async with hubspot_sim.client() as hubspot:
        await setup_hubspot(hubspot)
        pusher = Pusher(store, {CONNECTION: hubspot})
        first = await pusher.handle(_events([company, invoice_snapshot]))  # not committed yet
        await first.settled()  # its associations written (the consumer does not wait for that: see below)
        writes = write_requests(hubspot_sim)

        second = await pusher.handle(_events([company, *lines]))  # the company again, and the invoice's rows
        await second.settled()

        # The company is skipped (batch 1 wrote it), the rows link straight to the invoice of batch 1:
        # one upsert of line items and one association batch, nothing left waiting.
        assert write_requests(hubspot_sim) - writes == 2
        assert [a.stream for a in second.appends if "/kleer-client/" in a.stream] == []
        await _commit(store, first)
        await _commit(store, second)

    assert await store.pool.fetchval("SELECT count(*) FROM pending_associations") == 0
    expected = {(s.kind, s.kleer_id): s for s in [company, invoice_snapshot, *lines]}
    assert_hubspot_matches(hubspot_sim, expected)


async def test_a_batch_links_to_a_parent_two_batches_back_whose_commit_is_still_under_way(
    store: PostgresEventStore, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    """The consumer handles batch 3 while batches 1 and 2 commit (``COMMITS_BEHIND``), and batch 3's
    associations go out before it waits for batch 1's commit: they must still see batch 1's writes."""
    kleer_sim.seed(n_clients=4, seed=61)
    invoice = next(i for i in kleer_sim.book.invoices if i["certified"] and not i.get("debit-invoice-nr"))
    client = kleer_sim.book.clients.get(invoice["client-ref"]["id"])
    assert client is not None
    other = next(c for c in kleer_sim.book.clients if c["id"] != client["id"])
    (company,) = snapshots_for_push("client", client)
    (other_company,) = snapshots_for_push("client", other)
    invoice_snapshot, *lines = snapshots_for_push("invoice", invoice)
    assert lines
    async with hubspot_sim.client() as hubspot:
        await setup_hubspot(hubspot)
        pusher = Pusher(store, {CONNECTION: hubspot})
        first = await pusher.handle(_events([company, invoice_snapshot]))  # its commit still under way below
        await first.settled()
        second = await pusher.handle(_events([other_company]))
        await second.settled()
        writes = write_requests(hubspot_sim)

        third = await pusher.handle(_events(lines))  # the invoice's rows: their parent is batch 1's
        await third.settled()

        # The rows' upsert and their association batch, to the invoice batch 1 wrote: nothing left waiting.
        assert write_requests(hubspot_sim) - writes == 2
        for result in (first, second, third):
            await _commit(store, result)

    assert await store.pool.fetchval("SELECT count(*) FROM pending_associations") == 0
    expected = {(s.kind, s.kleer_id): s for s in [company, other_company, invoice_snapshot, *lines]}
    assert_hubspot_matches(hubspot_sim, expected)


async def test_a_batch_committed_is_read_from_postgres_not_its_overlay_which_another_pusher_may_have_outdated(
    store: PostgresEventStore, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    """A rebalance moves a partition to another pusher and back within a few batches: what that pusher wrote
    (in Postgres) is newer than what this one remembers of its own committed batch."""
    kleer_sim.seed(n_clients=2, seed=61)
    client = next(iter(kleer_sim.book.clients))
    (before,) = snapshots_for_push("client", client)
    (renamed,) = snapshots_for_push("client", {**client, "name": f"{client['name']} Renamed"})
    assert before.fingerprint != renamed.fingerprint
    async with hubspot_sim.client() as hubspot:
        await setup_hubspot(hubspot)
        here, other = Pusher(store, {CONNECTION: hubspot}), Pusher(store, {CONNECTION: hubspot})
        await _commit(store, await here.handle(_events([before])))
        await _commit(store, await other.handle(_events([renamed])))  # the partition with the other pusher
        writes = write_requests(hubspot_sim)

        back = await here.handle(_events([before]))  # back here: Kleer has the first name again
        await _commit(store, back)

        assert write_requests(hubspot_sim) - writes == 1  # pushed, not skipped as what this pusher last sent
    assert_hubspot_matches(hubspot_sim, {(before.kind, before.kleer_id): before})


async def test_the_next_batch_goes_ahead_while_the_previous_ones_associations_are_written(
    store: PostgresEventStore, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim
) -> None:
    """The handler returns once its records are written; the associations follow (``HandlerResult.pending``)
    while the next batch is handled, and each commit holds its batch's links."""
    kleer_sim.seed(n_clients=4, seed=62)
    invoices = [i for i in kleer_sim.book.invoices if i["certified"] and not i.get("debit-invoice-nr")][:2]
    clients = {i["client-ref"]["id"]: kleer_sim.book.clients.get(i["client-ref"]["id"]) for i in invoices}
    companies = [s for c in clients.values() if c is not None for s in snapshots_for_push("client", c)]
    first_invoice, *first_lines = snapshots_for_push("invoice", invoices[0])
    second_invoice, *second_lines = snapshots_for_push("invoice", invoices[1])
    async with hubspot_sim.client() as hubspot:
        await setup_hubspot(hubspot)
        pusher = Pusher(store, {CONNECTION: hubspot})
        first = await pusher.handle(_events([*companies, first_invoice, second_invoice]))
        assert first.pending and not all(asyncio.ensure_future(p).done() for p in first.pending)
        second = await pusher.handle(_events([*first_lines, *second_lines]))  # while batch 1 links
        await _commit(store, first)
        await _commit(store, second)

    assert await store.pool.fetchval("SELECT count(*) FROM pending_associations") == 0
    linked = {r[0]: sorted(r[1]) for r in await store.pool.fetch(
        "SELECT kind || ':' || kleer_id, associated FROM hubspot_ids WHERE kind IN ('invoice', 'line_item')")}
    for invoice, lines in ((invoices[0], first_lines), (invoices[1], second_lines)):
        assert linked[f"invoice:{invoice['id']}"] == [f"client:{invoice['client-ref']['id']}"]
        assert all(linked[f"line_item:{line.kleer_id}"] == [f"invoice:{invoice['id']}"] for line in lines)
    expected = {(s.kind, s.kleer_id): s for s in [*companies, first_invoice, second_invoice, *first_lines,
                                                   *second_lines]}
    assert_hubspot_matches(hubspot_sim, expected)


async def test_a_batch_planned_in_chunks_sends_full_requests_and_the_same_records(
    store: PostgresEventStore, kleer_sim: KleerSimServer, hubspot_sim: HubSpotSim,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A large batch is looked up ``PLAN_CHUNK`` records at a time, its upserts going out while the next chunk is
    looked up. Records skipped in every chunk (HubSpot has them already) leave no partly filled request behind:
    what falls short of a hundred waits for the next chunk."""
    monkeypatch.setattr(pusher_module, "PLAN_CHUNK", 200)
    kleer_sim.seed(n_clients=450, seed=63)
    companies = [s for c in kleer_sim.book.clients for s in snapshots_for_push("client", c)]
    assert len(companies) >= 400
    pushed_before = companies[::3]  # a third of every chunk
    async with hubspot_sim.client() as hubspot:
        await setup_hubspot(hubspot)
        pusher = Pusher(store, {CONNECTION: hubspot})
        await _commit(store, await pusher.handle(_events(pushed_before)))
        writes = write_requests(hubspot_sim)
        result = await pusher.handle(_events(companies))
        await _commit(store, result)

    new = len(companies) - len(pushed_before)
    assert write_requests(hubspot_sim) - writes == -(-new // 100)  # as many upserts as one plan would make
    upserted = [a for a in result.appends if a.events[0].type == "HubSpotCompanyUpserted"]
    assert len(upserted) == new
    assert_hubspot_matches(hubspot_sim, {(s.kind, s.kleer_id): s for s in companies})
