"""Snapshots: what a change event carries, built from Kleer records with libs.mapping."""

from __future__ import annotations

from typing import Any

from libs.mapping.line_items import line_items_for_agreement, line_items_for_invoice
from services.outbound.snapshots import (
    DEAL,
    ParentRef,
    Snapshot,
    archived_type,
    changed_type,
    line_item_ids,
    parse_event_type,
    record_snapshot,
    snapshots_for_push,
    upserted_type,
)

INVOICE: dict[str, Any] = {
    "id": 1204,
    "invoice-nr": 1001,
    "debit-invoice-nr": None,
    "client-ref": {"id": 1201},
    "invoice-date": "2026-08-03",
    "due-date": "2026-09-02",
    "amount": 1104600,
    "vat": 276150,
    "currency": "SEK",
    "certified": True,
    "remaining": 0,
    "rows": [
        {
            "id": 1,
            "quantity": 3,
            "price": 44200,
            "vat": 0.25,
            "product": {"id": 1006},
            "description": "Resor",
        },
        {"id": 2, "quantity": -1, "price": 12950, "vat": 0.25, "product": None, "description": "Kredit"},
    ],
}
AGREEMENT: dict[str, Any] = {
    "id": 77,
    "revision-nr": 2,
    "client-ref": {"id": 5},
    "currency": "SEK",
    "invoice-interval-months": 3,
    "invoice-day": "INVOICE_AT_START",
    "agreement-nr": "1001",
    "deleted": False,
    "recurring-rows": [{"quantity": 1, "price": 300000}],
    "first-invoice-rows": [{"quantity": 1, "price": 5000}],
}


def test_event_types_name_the_kind_and_the_hubspot_object() -> None:
    assert changed_type("line_item") == "KleerLineItemChanged"
    assert parse_event_type("KleerAgreementRemoved") == ("agreement", "Removed")
    assert parse_event_type("HubSpotCompanyUpserted") is None
    assert upserted_type("subscriptions") == "HubSpotSubscriptionUpserted"
    assert archived_type("line_items") == "HubSpotLineItemArchived"


def test_an_invoice_snapshot_has_exact_amounts_and_its_client_as_parent() -> None:
    snapshot = record_snapshot("invoice", INVOICE)
    assert snapshot.hubspot_object == "invoices"
    assert snapshot.properties["hs_amount_billed"] == "13807.50"
    assert snapshot.properties["kleer_amount_ex_vat"] == "11046.00"
    assert snapshot.parents == (ParentRef("client", "1201"),)
    assert snapshot.record_date == "2026-08-03"


def test_snapshot_survives_the_event_round_trip() -> None:
    snapshot = record_snapshot("invoice", INVOICE).with_parents([ParentRef(DEAL, hubspot_id="9")])
    assert Snapshot.from_event_data(snapshot.to_event_data()) == snapshot


def test_agreements_carry_mrr_and_arr() -> None:
    snapshot = record_snapshot("agreement", AGREEMENT)
    assert (snapshot.properties["mrr"], snapshot.properties["arr"]) == ("1000.00", "12000.00")


def test_cheap_line_item_ids_match_the_mapped_line_items() -> None:
    assert line_item_ids("invoice", INVOICE) == [i.kleer_id for i in line_items_for_invoice(INVOICE)]
    assert line_item_ids("agreement", AGREEMENT) == [i.kleer_id for i in line_items_for_agreement(AGREEMENT)]
    assert line_item_ids("agreement", AGREEMENT) == ["77-recurring-1", "77-first-1"]


def test_a_push_carries_the_record_its_line_items_and_the_deal_it_came_from() -> None:
    snapshots = snapshots_for_push("invoice", INVOICE, deal_id="4242")
    assert [s.kleer_id for s in snapshots] == ["1204", "1204-row-1", "1204-row-2"]
    assert ParentRef(DEAL, hubspot_id="4242") in snapshots[0].parents
    assert snapshots[2].properties["amount"] == "-129.50"
    assert snapshots[1].parents == (ParentRef("invoice", "1204"),)
