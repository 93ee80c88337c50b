"""Object identities and association type ids (the pusher imports these)."""

from __future__ import annotations

import pytest

from libs.mapping import objects as o


def test_each_kleer_object_type_has_its_hubspot_object() -> None:
    assert {k: h.name for k, h in o.HUBSPOT_OBJECT_FOR.items()} == {
        "client": "companies",
        "product": "products",
        "invoice": "invoices",
        "agreement": "subscriptions",
        "project": "projects",
        "line_item": "line_items",
    }
    assert o.PROJECTS.type_id == "0-970"
    assert o.COMPANIES.type_id == "0-2"
    assert o.SUBSCRIPTIONS.type_id == "0-69"
    assert o.INVOICES.type_id == "0-53"


@pytest.mark.parametrize(
    ("assoc", "type_id", "reverse"),
    [
        (o.INVOICE_TO_COMPANY, 179, 180),
        (o.INVOICE_TO_LINE_ITEM, 409, 410),
        (o.INVOICE_TO_DEAL, 175, 176),
        (o.SUBSCRIPTION_TO_COMPANY, 297, 298),
        (o.SUBSCRIPTION_TO_LINE_ITEM, 301, 302),
        (o.DEAL_TO_COMPANY, 341, 342),
        (o.DEAL_TO_LINE_ITEM, 19, 20),
        (o.PROJECT_TO_COMPANY, 1236, 1237),
        (o.PROJECT_TO_DEAL, 1238, 1239),
    ],
)
def test_association_type_ids_match_the_facts_file(
    assoc: o.AssociationType, type_id: int, reverse: int
) -> None:
    assert (assoc.type_id, assoc.reverse_type_id) == (type_id, reverse)
    assert assoc.spec() == {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}


def test_association_lookup_works_in_both_directions_and_by_any_name() -> None:
    assert o.association_type("invoices", "companies") == o.INVOICE_TO_COMPANY
    back = o.association_type("company", "0-53")
    assert (back.type_id, back.from_object, back.to_object) == (180, o.COMPANIES, o.INVOICES)
    assert o.association_type("0-970", "companies").type_id == 1236
    with pytest.raises(KeyError, match="no association type from products to companies"):
        o.association_type("products", "companies")


@pytest.mark.parametrize(
    ("name", "kleer_type"),
    [
        ("client", "client"),
        ("companies", "client"),
        ("company", "client"),
        ("0-2", "client"),
        ("0-970", "project"),
        ("subscriptions", "agreement"),
        ("line_items", "line_item"),
    ],
)
def test_object_types_resolve_from_either_side(name: str, kleer_type: str) -> None:
    assert o.resolve_object_type(name) == kleer_type


def test_unknown_object_types_are_rejected_with_the_choices() -> None:
    with pytest.raises(ValueError, match="expected a Kleer object type"):
        o.resolve_object_type("contacts")
    with pytest.raises(ValueError, match="unknown object type"):
        o.resolve_object_type("deals")  # deals are never synced as records


def test_line_item_ids_are_stable_and_validated() -> None:
    assert o.line_item_id(42, "row", 1) == "42-row-1"
    assert o.line_item_id("7", "recurring", 3) == "7-recurring-3"
    assert o.line_item_id(7, "first", 2) == "7-first-2"
    with pytest.raises(ValueError):
        o.line_item_id(7, "other", 1)
    with pytest.raises(ValueError):
        o.line_item_id(7, "row", 0)


def test_property_group_body() -> None:
    assert o.PROPERTY_GROUP.to_api() == {"name": "kleer", "label": "Kleer", "displayOrder": -1}
