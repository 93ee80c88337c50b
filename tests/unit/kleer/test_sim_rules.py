"""What the simulated Kleer does with valid bodies: totals in öre, defaults, numbers, revisions, refusals."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.kleer import rules
from sim.kleer.rules import RuleBroken, invoice_totals, row_net, row_vat
from sim.kleer.schema import validate_body
from sim.kleer.store import KleerStore

TODAY = date(2026, 3, 15)


@pytest.fixture
def store() -> KleerStore:
    return KleerStore(today=TODAY)


def create(store: KleerStore, resource: str, body: dict[str, Any]) -> dict[str, Any]:
    return rules.create(store, store.company(), resource, validate_body(resource, body, partial=False))


def update(store: KleerStore, resource: str, record_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return rules.update(store, store.company(), resource, record_id, validate_body(resource, body, partial=True))


def test_row_net_rounds_half_up_to_whole_ore() -> None:
    assert row_net(2, 12950) == 25900
    assert row_net(1.5, 333) == 500  # 499.5 öre
    assert row_net(3, 1000, {"percentage": 10}) == 2700
    assert row_net(3, 1000, {"absolute": 250}) == 2750


@given(
    quantity=st.decimals(min_value=-1000, max_value=1000, places=2).map(float),
    price=st.integers(-10**9, 10**9),
    rate=st.sampled_from([0, 0.06, 0.12, 0.25]),
)
def test_row_totals_are_exact_decimal_arithmetic(quantity: float, price: int, rate: float) -> None:
    exact = Decimal(repr(quantity)) * price
    net = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert row_net(quantity, price) == net
    vat = int((net * Decimal(repr(rate))).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert row_vat(net, rate) == vat


def test_invoice_totals_sum_the_rows() -> None:
    rows = [{"quantity": 2, "price": 10000, "vat": 0.25}, {"quantity": 1, "price": 5000, "vat": 0.06}]
    assert invoice_totals(rows) == (25000, 5300)


def test_a_new_invoice_gets_number_totals_dates_and_the_clients_defaults(store: KleerStore) -> None:
    client = create(store, "client", {"name": "Ystad Måleri AB", "payment-days": 10, "currency-type": "EUR",
                                      "email": "faktura@ystadmaleri.se"})
    product = create(store, "product", {"name": "Konsulttimme", "price": 95000, "unit": "tim", "vat-percentage": 25})
    invoice = create(
        store,
        "client-invoice",
        {"client-ref": {"id": client["id"]}, "rows": [{"quantity": 2, "product": {"id": product["id"]}}]},
    )
    assert invoice["invoice-nr"] == 1001
    assert (invoice["amount"], invoice["vat"], invoice["remaining"]) == (190000, 47500, 237500)
    assert invoice["rows"][0]["price"] == 95000 and invoice["rows"][0]["unit"] == "tim"
    assert invoice["rows"][0]["vat"] == 0.25
    assert invoice["invoice-date"] == "2026-03-15" and invoice["due-date"] == "2026-03-25"
    assert invoice["currency"] == "EUR" and invoice["invoice-email"] == "faktura@ystadmaleri.se"
    assert invoice["certified"] is False and invoice["sent"] is False
    assert list(invoice) == list(rules.complete("client-invoice", {}))


def test_a_row_without_price_needs_a_product_with_one(store: KleerStore) -> None:
    client = create(store, "client", {"name": "A AB"})
    with pytest.raises(RuleBroken, match=r"rows\[0\]\.price is required"):
        create(store, "client-invoice", {"client-ref": {"id": client["id"]}, "rows": [{"quantity": 1}]})


def test_references_must_exist(store: KleerStore) -> None:
    with pytest.raises(RuleBroken, match="client-ref: no client with id 999"):
        create(store, "client-invoice", {"client-ref": {"id": 999}})


def test_a_credit_invoice_names_an_existing_debit_invoice(store: KleerStore) -> None:
    client = create(store, "client", {"name": "A AB"})
    debit = create(store, "client-invoice", {"client-ref": {"id": client["id"]},
                                             "rows": [{"quantity": 1, "price": 1000}]})
    credit = create(
        store,
        "client-invoice",
        {"client-ref": {"id": client["id"]}, "debit-invoice-nr": debit["invoice-nr"],
         "rows": [{"quantity": -1, "price": 1000}]},
    )
    assert credit["debit-invoice-nr"] == debit["invoice-nr"] and credit["amount"] == -1000
    with pytest.raises(RuleBroken, match="debit-invoice-nr 4242"):
        create(store, "client-invoice", {"client-ref": {"id": client["id"]}, "debit-invoice-nr": 4242})


def test_invoice_numbers_are_unique(store: KleerStore) -> None:
    client = create(store, "client", {"name": "A AB"})
    create(store, "client-invoice", {"client-ref": {"id": client["id"]}, "invoice-nr": 5000})
    with pytest.raises(RuleBroken, match="invoice-nr 5000 is already used"):
        create(store, "client-invoice", {"client-ref": {"id": client["id"]}, "invoice-nr": 5000})
    assert create(store, "client-invoice", {"client-ref": {"id": client["id"]}})["invoice-nr"] == 5001


def test_certified_invoices_are_final(store: KleerStore) -> None:
    client = create(store, "client", {"name": "A AB"})
    invoice = create(store, "client-invoice", {"client-ref": {"id": client["id"]}, "certified": True})
    with pytest.raises(RuleBroken, match="certified and cannot be changed"):
        update(store, "client-invoice", invoice["id"], {"your-reference": "x"})
    with pytest.raises(RuleBroken, match="certified and cannot be deleted"):
        rules.delete(store.company(), "client-invoice", invoice["id"])


def test_an_update_replaces_only_the_fields_sent_and_recomputes_totals(store: KleerStore) -> None:
    client = create(store, "client", {"name": "A AB"})
    invoice = create(store, "client-invoice", {"client-ref": {"id": client["id"]}, "your-reference": "Anna",
                                               "rows": [{"quantity": 1, "price": 1000}]})
    changed = update(store, "client-invoice", invoice["id"], {"rows": [{"quantity": 3, "price": 1000}]})
    assert changed["your-reference"] == "Anna"
    assert (changed["amount"], changed["vat"], changed["remaining"]) == (3000, 750, 3750)
    kept = update(store, "client-invoice", invoice["id"], {"your-reference": "Bo"})
    assert kept["rows"] == changed["rows"]  # rows not sent stay as they were, row ids included


def test_each_agreement_update_is_a_new_revision_and_delete_marks_it(store: KleerStore) -> None:
    client = create(store, "client", {"name": "A AB"})
    agreement = create(store, "client-agreement", {"client-ref": {"id": client["id"]}, "invoice-interval-months": 3,
                                                   "recurring-rows": [{"quantity": 1, "price": 49900}]})
    assert agreement["revision-nr"] == 1 and agreement["agreement-nr"] == "1001" and agreement["deleted"] is False
    assert update(store, "client-agreement", agreement["id"], {"description": "Support"})["revision-nr"] == 2
    assert update(store, "client-agreement", agreement["id"], {"revision-nr": 99})["revision-nr"] == 3
    deleted = rules.delete(store.company(), "client-agreement", agreement["id"])
    assert deleted["deleted"] is True and deleted["revision-nr"] == 4
    assert store.company().agreements.get(agreement["id"]) == deleted
    with pytest.raises(RuleBroken, match="deleted and cannot be changed"):
        update(store, "client-agreement", agreement["id"], {"description": "again"})


def test_a_client_with_invoices_cannot_be_deleted(store: KleerStore) -> None:
    client = create(store, "client", {"name": "A AB"})
    create(store, "client-invoice", {"client-ref": {"id": client["id"]}})
    with pytest.raises(RuleBroken, match="cannot be deleted"):
        rules.delete(store.company(), "client", client["id"])
    lonely = create(store, "client", {"name": "B AB"})
    rules.delete(store.company(), "client", lonely["id"])
    assert store.company().clients.get(lonely["id"]) is None


def test_projects_get_a_number_and_open_by_default(store: KleerStore) -> None:
    client = create(store, "client", {"name": "A AB", "currency-type": "NOK"})
    project = create(store, "client-project", {"name": "Takbyte", "client": {"id": client["id"]}})
    assert (project["number"], project["status"], project["currency-type"]) == ("P1001", "Open", "NOK")
    assert project["opening-date"] == "2026-03-15"


def test_stored_records_are_replaced_never_changed_in_place(store: KleerStore) -> None:
    client = create(store, "client", {"name": "A AB"})
    update(store, "client", client["id"], {"name": "B AB"})
    assert client["name"] == "A AB"
    assert store.company().clients.get(client["id"])["name"] == "B AB"  # type: ignore[index]
