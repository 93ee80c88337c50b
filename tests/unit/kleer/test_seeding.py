"""The seeded book: reproducible, realistic, and made of records the simulator itself would accept."""

from __future__ import annotations

import re
from collections import Counter
from datetime import date

import pytest

from sim.kleer.mutation import mutate
from sim.kleer.rules import invoice_totals
from sim.kleer.schema import SCHEMAS, validate_body
from sim.kleer.seeding import luhn_digit, seed, slug
from sim.kleer.store import KleerStore

AS_OF = date(2026, 6, 30)


@pytest.fixture(scope="module")
def seeded() -> KleerStore:
    store = KleerStore(today=AS_OF)
    seed(store, n_clients=400, seed=11)
    return store


def test_the_same_seed_gives_the_same_book() -> None:
    first, second = KleerStore(today=AS_OF), KleerStore(today=AS_OF)
    seed(first, n_clients=60, seed=5)
    seed(second, n_clients=60, seed=5)
    assert first.dump() == second.dump()
    other = KleerStore(today=AS_OF)
    seed(other, n_clients=60, seed=6)
    assert other.dump() != first.dump()


def test_summary_counts_what_was_stored(seeded: KleerStore) -> None:
    counts = seeded.company().counts()
    assert counts["client"] == 400
    assert counts["product"] >= 20
    assert counts["client-invoice"] > 400
    assert 0 < counts["client-agreement"] < 400
    assert 0 < counts["client-project"] < 400


def test_clients_look_swedish(seeded: KleerStore) -> None:
    clients = list(seeded.company().clients)
    for client in clients:
        assert re.fullmatch(r"\d{6}-\d{4}", client["orgno"])
        digits = client["orgno"].replace("-", "")
        assert luhn_digit(digits[:9]) == int(digits[9])
        if client["country-code"] == "SE":
            assert client["vat-nr"] == f"SE{digits}01"
        assert client["name"].endswith((" AB", " HB"))
        assert re.fullmatch(r"[a-z]+@[a-z0-9]+\.se", client["email"])
    assert {c["currency-type"] for c in clients} == {"SEK", "EUR", "NOK"}
    assert Counter(c["currency-type"] for c in clients).most_common(1)[0][0] == "SEK"


def test_every_seeded_record_passes_the_simulators_own_validation(seeded: KleerStore) -> None:
    for resource, table in seeded.company().tables.items():
        for record in table:
            assert list(record) == list(SCHEMAS[resource]), resource
            validate_body(resource, record, partial=False)


def test_invoices_are_realistic_and_add_up(seeded: KleerStore) -> None:
    book = seeded.company()
    invoices = list(book.invoices)
    for invoice in invoices:
        assert 1 <= len(invoice["rows"]) <= 10
        assert (invoice["amount"], invoice["vat"]) == invoice_totals(invoice["rows"])
        assert invoice["invoice-date"] <= AS_OF.isoformat()
        assert book.clients.get(invoice["client-ref"]["id"]) is not None
        for row in invoice["rows"]:
            assert isinstance(row["price"], int)
            if row["product"] is not None:
                assert book.products.get(row["product"]["id"]) is not None
    assert any(not i["certified"] for i in invoices)
    assert sum(i["certified"] for i in invoices) > len(invoices) * 0.8
    assert any(i["remaining"] == 0 for i in invoices) and any(i["remaining"] > 0 for i in invoices)
    assert len({i["invoice-nr"] for i in invoices}) == len(invoices)


def test_credit_invoices_cancel_an_existing_debit_invoice(seeded: KleerStore) -> None:
    book = seeded.company()
    credits = [i for i in book.invoices if i["debit-invoice-nr"] is not None]
    assert credits
    for credit in credits:
        debit = book.invoices.get(book.invoice_ids_by_nr[credit["debit-invoice-nr"]])
        assert debit is not None and debit["debit-invoice-nr"] is None
        assert credit["amount"] == -debit["amount"] and credit["certified"]


def test_agreements_bill_monthly_quarterly_or_yearly(seeded: KleerStore) -> None:
    agreements = list(seeded.company().agreements)
    assert {a["invoice-interval-months"] for a in agreements} == {1, 3, 12}
    for agreement in agreements:
        assert agreement["recurring-rows"] and agreement["revision-nr"] >= 1
    assert any(a["first-invoice-rows"] for a in agreements)


def test_helpers() -> None:
    assert luhn_digit("556036079") == 3  # a real company's number: 556036-0793
    assert slug("Björkbygg & Söner Umeå AB") == "bjorkbyggsonerumea"


def test_mutation_changes_the_chosen_share_and_says_what_changed() -> None:
    store = KleerStore(today=AS_OF)
    seed(store, n_clients=200, seed=3)
    before = {name: {r["id"]: r for r in table} for name, table in store.company().tables.items()}
    report = mutate(store, share=0.1, seed=9)
    book = store.company()
    assert len(report["changed"]["client"]) == 20
    for resource, ids in report["changed"].items():
        for record_id in ids:
            after = book.tables[resource].get(record_id)
            assert after is not None and after != before[resource][record_id], (resource, record_id)
            validate_body(resource, after, partial=False)
    for record_id in report["changed"]["client-agreement"]:
        agreement = book.agreements.get(record_id)
        assert agreement is not None
        assert agreement["revision-nr"] == before["client-agreement"][record_id]["revision-nr"] + 1
    for resource, ids in report["created"].items():
        for record_id in ids:
            assert record_id not in before[resource] and book.tables[resource].get(record_id) is not None
    for record_id in report["deleted"]["client-invoice"]:
        assert book.invoices.get(record_id) is None
    assert report["counts"]["changed"] == sum(len(ids) for ids in report["changed"].values())
    untouched = set(before["client"]) - set(report["changed"]["client"])
    assert all(book.clients.get(i) is before["client"][i] for i in untouched)


def test_mutation_is_reproducible() -> None:
    reports = []
    for _ in range(2):
        store = KleerStore(today=AS_OF)
        seed(store, n_clients=100, seed=3)
        reports.append((mutate(store, share=0.05, seed=4), store.dump()))
    assert reports[0] == reports[1]
