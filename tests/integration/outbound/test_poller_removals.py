"""A record missing from a Kleer list is removed only when Kleer confirms it gone (a GET answers 404).

Found by the 30-minute soak: an invoice missing from one list (offset paging while the book changed) was
taken as removed, flagged ``kleer_deleted`` in HubSpot and written three times, although Kleer still had it.
"""

from __future__ import annotations

from typing import Any

from libs.events.store import PostgresEventStore
from libs.kleer import INVOICE as INVOICE_RESOURCE
from libs.kleer import KleerClient, Resource
from services.outbound.poller import Poller, PollerConfig
from sim.kleer import KleerSimServer
from tests.integration.outbound.conftest import CONNECTION


class _KleerListMissing:
    """The Kleer client whose lists of one resource leave out some ids (the records still exist)."""

    def __init__(self, kleer: KleerClient, resource: Resource, missing: set[str]) -> None:
        self._kleer, self._resource, self.missing = kleer, resource, missing
        self.gets: list[int] = []

    async def list_all(self, resource: Resource, **kwargs: Any) -> list[dict[str, Any]]:
        records = await self._kleer.list_all(resource, **kwargs)
        if resource != self._resource:
            return records
        return [r for r in records if str(r["id"]) not in self.missing]

    async def get(self, resource: Resource, record_id: int) -> dict[str, Any]:
        self.gets.append(record_id)
        return await self._kleer.get(resource, record_id)


async def _removed(store: PostgresEventStore, after: int, *types: str) -> list[str]:
    return sorted(str(e.data["kleer_id"]) for e in await store.read_all(after, 1_000_000) if e.type in types)


def _synced_invoice(kleer_sim: KleerSimServer) -> dict[str, Any]:
    return next(i for i in kleer_sim.book.invoices if i.get("rows") and not i.get("credit-invoice")
                and i.get("certified", True))


async def test_a_record_missing_from_a_list_but_still_in_kleer_is_not_removed(
    store: PostgresEventStore, kleer_sim: KleerSimServer, kleer_client: KleerClient
) -> None:
    kleer_sim.seed(n_clients=6, seed=17)
    poller = Poller(store.pool, store, kleer_client, PollerConfig(connection=CONNECTION))
    await poller.poll_once(["client", "invoice", "line_item"])
    invoice = _synced_invoice(kleer_sim)
    invoice_id = str(invoice["id"])
    gone = next(i for i in kleer_sim.book.invoices if str(i["id"]) != invoice_id and i.get("rows"))
    gone_id = str(gone["id"])
    kleer_sim.book.invoices.remove(int(gone_id))  # really deleted in Kleer
    head = await store.head()

    flaky = _KleerListMissing(kleer_client, INVOICE_RESOURCE, {invoice_id})
    report = await Poller(store.pool, store, flaky, PollerConfig(connection=CONNECTION)).poll_once(
        ["invoice", "line_item"])

    removed_invoices = await _removed(store, head, "KleerInvoiceRemoved")
    removed_rows = await _removed(store, head, "KleerLineItemRemoved")
    assert invoice_id not in removed_invoices and not any(r.startswith(f"{invoice_id}-") for r in removed_rows)
    assert gone_id in removed_invoices  # Kleer answered 404: a real removal is still recorded
    assert any(r.startswith(f"{gone_id}-row-") for r in removed_rows)
    assert {int(invoice_id), int(gone_id)} <= set(flaky.gets)
    assert report.kinds["invoice"].removed == 1

    # The next list holds it again: nothing to record, it never left.
    again = await store.head()
    await poller.poll_once(["invoice", "line_item"])
    assert await _removed(store, again, "KleerInvoiceRemoved", "KleerLineItemRemoved") == []
