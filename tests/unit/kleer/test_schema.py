"""Validation of simulated Kleer request bodies: one clear 400 message per problem, never a crash."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.kleer.schema import SCHEMAS, ValidationFailed, validate_body


def fails(resource: str, body: Any, *, partial: bool = False) -> str:
    with pytest.raises(ValidationFailed) as caught:
        validate_body(resource, body, partial=partial)
    return caught.value.message


def test_a_complete_client_passes_and_keeps_its_fields() -> None:
    body = {"name": "Fjällbacka Bygg AB", "payment-days": 30, "active": True, "address": {"zip-code": "457 40"}}
    assert validate_body("client", body, partial=False) == body


def test_unknown_fields_are_named() -> None:
    assert fails("client", {"name": "A", "colour": "blue"}) == "unknown field 'colour' in client"


def test_missing_required_field_on_create() -> None:
    assert fails("client", {"email": "a@b.se"}) == "client.name is required"


def test_an_update_may_send_only_what_changes() -> None:
    assert validate_body("client", {"email": "a@b.se"}, partial=True) == {"email": "a@b.se"}


def test_required_fields_cannot_be_nulled_by_an_update() -> None:
    assert "required" in fails("client", {"name": None}, partial=True)


def test_money_must_be_whole_ore() -> None:
    message = fails("product", {"name": "Licens", "price": 129.5})
    assert message.startswith("product.price must be a whole number of öre")
    assert "got the decimal number 129.5" in message
    assert "string" in fails("product", {"name": "Licens", "price": "12950"})


def test_booleans_are_not_numbers_and_numbers_are_not_booleans() -> None:
    assert "must be an integer" in fails("client", {"name": "A", "payment-days": True})
    assert "true or false" in fails("client", {"name": "A", "active": 1})


def test_dates_are_iso_days() -> None:
    assert "YYYY-MM-DD" in fails("client-invoice", {"client-ref": {"id": 1}, "invoice-date": "25/11/2026"})
    assert "not a valid date" in fails("client-invoice", {"client-ref": {"id": 1}, "invoice-date": "2026-02-30"})


def test_row_problems_name_the_row() -> None:
    body = {"client-ref": {"id": 1}, "rows": [{"quantity": 1, "price": 100}, {"price": 100}]}
    assert fails("client-invoice", body) == "client-invoice.rows[1].quantity is required"
    body = {"client-ref": {"id": 1}, "rows": [{"quantity": "two", "price": 100}]}
    assert fails("client-invoice", body).startswith("client-invoice.rows[0].quantity must be a number")


def test_enums_list_their_choices() -> None:
    message = fails("client", {"name": "A", "delivery-type": "Pigeon"})
    assert "Mail, Email, Manually, Svea, Efaktura" in message


def test_read_only_fields_are_checked_then_dropped() -> None:
    body = {"id": 7, "client-ref": {"id": 1}, "amount": 100, "vat": 25}
    assert validate_body("client-invoice", body, partial=False) == {"client-ref": {"id": 1}}
    assert "must be an integer" in fails("client", {"id": "seven", "name": "A"})


def test_the_body_must_be_an_object() -> None:
    assert fails("client", [1, 2]).startswith("the body must be a JSON object")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


def near_valid(resource: str) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies using the resource's own field names with arbitrary values: the paths validation must guard."""
    names = sorted(SCHEMAS[resource])
    return st.dictionaries(st.sampled_from(names) | st.text(max_size=8), JSON, max_size=8)


@settings(max_examples=150, deadline=None)
@given(resource=st.sampled_from(sorted(SCHEMAS)), data=st.data())
def test_any_json_body_is_either_accepted_or_refused_with_a_message(resource: str, data: st.DataObject) -> None:
    body = data.draw(near_valid(resource) | JSON)
    for partial in (False, True):
        try:
            validate_body(resource, body, partial=partial)
        except ValidationFailed as exc:
            assert exc.message
