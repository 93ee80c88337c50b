"""Kleer bodies from deals, line items and inputs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from libs.mapping.loader import default_mappings
from services.inbound.actions import catalog
from services.inbound.actions.answers import Outcome, block_fields, iso_duration
from services.inbound.actions.drafts import (
    DealLineItem,
    add_months,
    agreement_body,
    agreement_update,
    client_body,
    invoice_body,
    project_body,
)
from services.inbound.actions.failures import BusinessError
from services.inbound.actions.request import Inputs, parse_inputs

TODAY = dt.date(2025, 1, 31)


def _inputs(action: str, **raw: object) -> Inputs:
    definition = catalog.definition(action)
    assert definition is not None
    return parse_inputs(definition, raw)


def _item(ident: str, **props: str) -> DealLineItem:
    return DealLineItem(ident, props)


def test_invoice_rows_are_product_rows_when_the_product_has_a_kleer_id_and_exact_ore() -> None:
    items = [
        DealLineItem("2", {"name": "Consulting", "quantity": "3", "price": "1299.995", "hs_position_on_quote": "1"},
                     product_kleer_id="77"),
        _item("1", name="Setup fee", quantity="1", price="0.10", hs_position_on_quote="0"),
    ]
    body = invoice_body(5, items, _inputs(catalog.CREATE_INVOICE, invoice_date="2025-02-01", payment_days="10",
                                          your_reference="Anna", our_reference="3"),
                        {"deal_currency_code": "eur"}, TODAY)
    assert body["client-ref"] == {"id": 5}
    assert body["rows"][0] == {"description": "Setup fee", "quantity": Decimal(1), "price": 10}
    assert body["rows"][1]["product"] == {"id": 77} and body["rows"][1]["price"] == 130000  # 1299.995 -> öre, half up
    assert body["invoice-date"] == "2025-02-01" and body["due-date"] == "2025-02-11"
    assert body["your-reference"] == "Anna" and body["our-reference"] == {"id": 3}
    assert body["currency"] == "EUR"


def test_a_deal_without_line_items_cannot_be_invoiced() -> None:
    with pytest.raises(BusinessError, match="no line items"):
        invoice_body(5, [], Inputs(), {}, TODAY)


def test_a_line_item_that_cannot_become_a_row_is_named() -> None:
    with pytest.raises(BusinessError, match=r"line item 9 .*'price'"):
        invoice_body(5, [_item("9", name="Broken", price="abc")], Inputs(), {}, TODAY)


def test_agreement_rows_bill_at_the_line_items_frequency_and_one_time_items_go_first() -> None:
    items = [
        _item("1", name="Licence", quantity="2", price="500", recurringbillingfrequency="quarterly"),
        _item("2", name="Onboarding", price="1000"),
    ]
    body = agreement_body(5, items, _inputs(catalog.CREATE_AGREEMENT, invoice_day="INVOICE_AT_END",
                                            end_date="2026-01-31"), {"dealname": "Acme renewal"}, TODAY)
    assert body["invoice-interval-months"] == 3
    assert [r["description"] for r in body["recurring-rows"]] == ["Licence"]
    assert [r["description"] for r in body["first-invoice-rows"]] == ["Onboarding"]
    assert body["start-date"] == "2025-01-31" and body["end-date"] == "2026-01-31"
    assert body["description"] == "Acme renewal" and body["invoice-day"] == "INVOICE_AT_END"


def test_an_interval_input_must_match_the_billing_frequency() -> None:
    items = [_item("1", name="Licence", price="500", recurringbillingfrequency="monthly")]
    with pytest.raises(BusinessError) as caught:
        agreement_body(5, items, _inputs(catalog.CREATE_AGREEMENT, invoice_interval_months="12"), {}, TODAY)
    assert caught.value.field == "invoice_interval_months"


def test_an_agreement_needs_a_recurring_line_item() -> None:
    with pytest.raises(BusinessError, match="recurring"):
        agreement_body(5, [_item("1", name="Once", price="5")], Inputs(), {}, TODAY)


def test_an_end_date_before_the_start_is_refused() -> None:
    items = [_item("1", name="Licence", price="500", recurringbillingfrequency="monthly")]
    with pytest.raises(BusinessError, match="'end_date'"):
        agreement_body(5, items, _inputs(catalog.CREATE_AGREEMENT, start_date="2025-05-01", end_date="2025-04-01"),
                       {}, TODAY)


def test_a_renewal_extends_the_end_date_by_the_renewal_months() -> None:
    items = [_item("1", name="Licence", price="600", recurringbillingfrequency="monthly")]
    agreement = {"id": 9, "end-date": "2025-01-31", "deleted": False}
    change = agreement_update(agreement, items, _inputs(catalog.UPDATE_AGREEMENT, change_type="renewal",
                                                        renewal_months="13"))
    assert change.body["end-date"] == "2026-02-28"
    assert change.body["recurring-rows"][0]["price"] == 60000
    upsell = agreement_update(agreement, items, _inputs(catalog.UPDATE_AGREEMENT, change_type="upsell"))
    assert "end-date" not in upsell.body


def test_a_renewal_to_an_earlier_end_date_is_refused() -> None:
    items = [_item("1", name="Licence", price="600", recurringbillingfrequency="monthly")]
    with pytest.raises(BusinessError, match="'end_date'"):
        agreement_update({"id": 9, "end-date": "2025-06-30"}, items,
                         _inputs(catalog.UPDATE_AGREEMENT, change_type="renewal", end_date="2025-06-01"))


def test_add_months_keeps_the_day_or_takes_the_last_of_a_short_month() -> None:
    assert add_months(dt.date(2024, 1, 31), 1) == dt.date(2024, 2, 29)
    assert add_months(dt.date(2024, 11, 15), 14) == dt.date(2026, 1, 15)


def test_a_project_defaults_to_the_deal_name_and_takes_exact_budget() -> None:
    body = project_body(5, "42", {"dealname": "Website", "deal_currency_code": "SEK"},
                        _inputs(catalog.CREATE_PROJECT, budget_amount="1500.50", budget_hours="12.5",
                                fixed_price="true"), TODAY)
    assert body == {"client": {"id": 5}, "name": "Website", "opening-date": "2025-01-31", "status": "Open",
                    "budget-hours": Decimal("12.5"), "budget-amount": 150050, "fixed-price": True,
                    "currency-type": "SEK"}
    with pytest.raises(BusinessError, match="'closing_date'"):
        project_body(5, "42", {}, _inputs(catalog.CREATE_PROJECT, opening_date="2025-03-01",
                                          closing_date="2025-02-01"), TODAY)


def test_a_client_body_maps_every_company_field_and_takes_the_overrides() -> None:
    company = {"name": "Fjällbacka Bygg AB", "city": "Fjällbacka", "kleer_payment_days": "20", "orgno": "556000-0000"}
    body = client_body(company, _inputs(catalog.CREATE_CLIENT, payment_days="45", delivery_method="efaktura"),
                       default_mappings())
    assert body["name"] == "Fjällbacka Bygg AB" and body["orgno"] == "556000-0000"
    assert body["address"]["state"] == "Fjällbacka"
    assert body["payment-days"] == 45 and body["delivery-type"] == "Efaktura"
    with pytest.raises(BusinessError, match="'name'"):
        client_body({"name": ""}, Inputs(), default_mappings())


def test_answers_carry_the_execution_state_and_block_carries_its_expiration() -> None:
    assert Outcome.success(12, 1003, "ok").output_fields() == {
        "hs_execution_state": "SUCCESS", "kleer_id": "12", "kleer_number": "1003", "message": "ok"}
    assert Outcome.failure("no line items").output_fields()["hs_execution_state"] == "FAIL_CONTINUE"
    assert block_fields("P1D", "later")["hs_expiration_duration"] == "P1D"
    assert iso_duration(86_400) == "P1D" and iso_duration(90) == "PT1M30S" and iso_duration(3600 * 25) == "P1DT1H"
