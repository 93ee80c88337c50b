"""The poller against the Kleer simulator over HTTP and a real event log (no broker needed)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from libs.events.dlq import DeadLetterQueue
from libs.events.store import PostgresEventStore
from libs.kleer import KleerClient
from libs.mapping.invoices import is_credit_invoice
from services.outbound.poller import Poller, PollerConfig
from sim.kleer import KleerSimServer
from tests.integration.outbound.conftest import CONNECTION


async def _events(store: PostgresEventStore, event_type: str, after: int = 0) -> list[Any]:
    return [e for e in await store.read_all(after, 100_000) if e.type == event_type]


def _poller(store: PostgresEventStore, kleer: KleerClient, **config: Any) -> Poller:
    return Poller(store.pool, store, kleer, PollerConfig(connection=CONNECTION, **config))


async def test_only_certified_invoices_sync_and_credit_invoices_only_when_asked(
    store: PostgresEventStore, kleer_sim: KleerSimServer, kleer_client: KleerClient
) -> None:
    kleer_sim.seed(n_clients=40, seed=71)
    invoices = list(kleer_sim.book.invoices)
    drafts = {str(i["id"]) for i in invoices if not i["certified"]}
    credits = {str(i["id"]) for i in invoices if i["certified"] and is_credit_invoice(i)}
    assert drafts and credits, "the seeded book must hold drafts and credit invoices"

    await _poller(store, kleer_client).poll_once(["invoice"])
    synced = {e.data["kleer_id"] for e in await _events(store, "KleerInvoiceChanged")}
    assert synced == {str(i["id"]) for i in invoices} - drafts - credits

    head = await store.head()
    await _poller(store, kleer_client, include_credit_invoices=True).poll_once(["invoice"])
    assert {e.data["kleer_id"] for e in await _events(store, "KleerInvoiceChanged", head)} == credits


async def test_the_history_window_limits_invoices_and_an_invoice_aging_out_is_not_a_removal(
    store: PostgresEventStore, kleer_sim: KleerSimServer, kleer_client: KleerClient
) -> None:
    kleer_sim.seed(n_clients=40, seed=72)
    dates = sorted(dt.date.fromisoformat(i["invoice-date"]) for i in kleer_sim.book.invoices)
    today = dates[len(dates) // 2] + dt.timedelta(days=30)
    await _poller(store, kleer_client, invoice_history_days=30, today=lambda: today).poll_once(["invoice"])
    synced = await _events(store, "KleerInvoiceChanged")
    assert synced and all(
        dt.date.fromisoformat(e.data["properties"]["hs_invoice_date"]) >= today - dt.timedelta(days=30)
        for e in synced
    )

    later = today + dt.timedelta(days=60)  # every invoice synced above is now older than the window
    await _poller(store, kleer_client, invoice_history_days=30, today=lambda: later).poll_once(["invoice"])
    assert await _events(store, "KleerInvoiceRemoved") == []


async def test_a_record_deleted_in_kleer_becomes_a_removal_and_a_broken_list_removes_nothing(
    store: PostgresEventStore, kleer_sim: KleerSimServer, kleer_client: KleerClient
) -> None:
    kleer_sim.seed(n_clients=30, seed=73)
    poller = _poller(store, kleer_client)
    await poller.poll_once(["client"])
    client = next(iter(kleer_sim.book.clients))
    kleer_sim.book.clients.remove(client["id"])

    await poller.poll_once(["client"])
    assert [e.data["kleer_id"] for e in await _events(store, "KleerClientRemoved")] == [str(client["id"])]

    for record in list(kleer_sim.book.clients)[:20]:  # Kleer suddenly lists only a third of the book
        kleer_sim.book.clients.remove(record["id"])
    head = await store.head()
    report = await poller.poll_once(["client"])
    assert (
        report.kinds["client"].error is not None
        and "no longer lists 20 of the 29" in report.kinds["client"].error
    )
    assert await store.head() == head


async def test_kleer_failing_records_nothing_and_reports_the_error(
    store: PostgresEventStore, kleer_sim: KleerSimServer, kleer_client: KleerClient
) -> None:
    kleer_sim.seed(n_clients=5, seed=74)
    kleer_sim.set_faults({"error-rates": {"503": 1.0}})
    report = await _poller(store, kleer_client).poll_once(["client"])
    assert not report.ok and "503" in (report.kinds["client"].error or "")
    assert await store.head() == 0


async def test_an_unmappable_record_fixed_in_kleer_is_redriven_into_a_change(
    store: PostgresEventStore, kleer_sim: KleerSimServer, kleer_client: KleerClient
) -> None:
    kleer_sim.seed(n_clients=5, seed=75)
    client = next(iter(kleer_sim.book.clients))
    kleer_sim.book.clients.replace({**client, "payment-days": "thirty"})
    poller = _poller(store, kleer_client)
    await poller.poll_once(["client"])
    dlq = DeadLetterQueue(store)
    (entry,) = await dlq.list()
    assert (entry.source, entry.record) == ("outbound-poller", f"kleer:client:{client['id']}")
    redrivers = {"outbound-poller": poller.redrive}

    try:
        await dlq.redrive(entry.id, redrivers, actor="test")
    except RuntimeError as exc:
        assert "still cannot be mapped" in str(exc)
    else:
        raise AssertionError("a record that still cannot be mapped must not be redriven")
    kleer_sim.book.clients.replace({**client, "payment-days": 30})
    head = await store.head()
    await dlq.redrive(entry.id, redrivers, actor="test")

    changed = await _events(store, "KleerClientChanged", head)
    assert [e.data["kleer_id"] for e in changed] == [str(client["id"])]
    assert changed[0].data["properties"]["kleer_payment_days"] == "30"
    assert await dlq.list() == []
    quiet = await poller.poll_once(["client"])  # the redriven record is remembered: no second event
    assert quiet.changed == 0
