"""Rows as line items, exact row amounts, MRR/ARR and which invoices sync."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.mapping import (
    MappingError,
    agreement_arr,
    agreement_mrr,
    is_credit_invoice,
    line_items_for_agreement,
    line_items_for_invoice,
    row_amount,
    should_sync_invoice,
)
from libs.mapping.amounts import row_amount_ore, row_unit_discount

INVOICE: dict[str, Any] = {
    "id": 501,
    "invoice-nr": 1001,
    "currency": "SEK",
    "certified": True,
    "invoice-date": "2024-03-01",
    "rows": [
        {
            "id": 1,
            "quantity": 1.5,
            "price": 12950,
            "description": "Consulting\nMarch 2024",
            "product": {"id": 4},
            "unit": "h",
            "vat": 25,
            "discount": {"absolute": 500},
        },
        {"id": 2, "quantity": 3, "price": 1000, "discount": {"percentage": 10}, "product": {"id": 5}},
        {"id": 3, "description": "Thank you for your business"},
    ],
}

AGREEMENT: dict[str, Any] = {
    "id": 77,
    "currency": "EUR",
    "invoice-interval-months": 3,
    "recurring-rows": [
        {"quantity": 2, "price": 10000, "description": "Licence"},
        {"quantity": 1, "price": 5000},
    ],
    "first-invoice-rows": [{"quantity": 1, "price": 25000, "description": "Setup"}],
}


# ---------------------------------------------------------------- invoice rows
def test_invoice_rows_become_line_items_with_stable_ids() -> None:
    items = line_items_for_invoice(INVOICE)
    assert [i.kleer_id for i in items] == ["501-row-1", "501-row-2", "501-row-3"]
    assert [(i.kind, i.number, i.parent_type, i.parent_id) for i in items] == [
        ("row", 1, "invoice", "501"),
        ("row", 2, "invoice", "501"),
        ("row", 3, "invoice", "501"),
    ]
    assert [i.product_kleer_id for i in items] == ["4", "5", None]
    assert all(i.properties["kleer_id"] == i.kleer_id for i in items)
    assert line_items_for_invoice(INVOICE) == items  # stable across runs


def test_invoice_row_properties_are_exact() -> None:
    first, second, text_only = (i.properties for i in line_items_for_invoice(INVOICE))
    assert first == {
        "kleer_id": "501-row-1",
        "name": "Consulting",
        "description": "Consulting\nMarch 2024",
        "quantity": "1.5",
        "price": "129.50",
        "amount": "189.25",  # 1.5 × 129.50 − 5.00
        "discount": "3.33",  # 5.00 / 1.5 per unit, rounded once
        "hs_discount_percentage": "",
        "hs_sku": "4",
        "kleer_product_id": "4",
        "hs_line_item_currency_code": "SEK",
        "recurringbillingfrequency": "",
        "kleer_unit": "h",
        "kleer_vat_rate": "25",
    }
    assert second["amount"] == "27.00"  # 3 × 10.00 − 10 %
    assert second["hs_discount_percentage"] == "10"
    assert second["discount"] == ""
    assert second["name"] == "Kleer product 5"
    assert text_only["amount"] == "0.00"
    assert text_only["quantity"] == text_only["price"] == ""
    assert text_only["name"] == "Thank you for your business"


def test_negative_quantities_give_negative_amounts() -> None:
    items = line_items_for_invoice(
        {"id": 9, "rows": [{"quantity": -2, "price": 12950, "discount": {"absolute": -100}}]}
    )
    props = items[0].properties
    assert props["quantity"] == "-2"
    assert props["amount"] == "-258.00"  # −2 × 129.50 − (−1.00)
    assert props["discount"] == "0.50"


def test_rows_without_description_or_product_get_a_numbered_name() -> None:
    props = line_items_for_invoice(
        {"id": 9, "rows": [{"quantity": 1, "price": 1}, {"quantity": 1, "price": 1}]}
    )
    assert [p.properties["name"] for p in props] == ["Row 1", "Row 2"]


def test_missing_or_null_rows_give_no_line_items() -> None:
    assert line_items_for_invoice({"id": 1}) == []
    assert line_items_for_invoice({"id": 1, "rows": None}) == []
    assert line_items_for_agreement({"id": 1}) == []


@pytest.mark.parametrize(
    ("invoice", "message"),
    [
        ({"rows": []}, "has no id"),
        ({"id": 1, "rows": "row"}, "expected a list of rows"),
        ({"id": 1, "rows": ["row"]}, "every row must be an object"),
        ({"id": 1, "rows": [{"quantity": "lots", "price": 1}]}, "rows #1 of invoice 1"),
        ({"id": 1, "rows": [{"quantity": 1, "price": 1, "discount": 5}]}, "{absolute, percentage}"),
        ({"id": 1, "rows": [{"quantity": 1, "price": 1.5}]}, "whole öre"),
    ],
)
def test_bad_rows_are_mapping_errors_naming_the_row(invoice: dict[str, Any], message: str) -> None:
    with pytest.raises(MappingError) as info:
        line_items_for_invoice(invoice)
    assert message in str(info.value)


def test_a_non_object_invoice_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="JSON object"):
        line_items_for_invoice(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------- agreement rows
def test_agreement_rows_become_recurring_and_first_line_items() -> None:
    items = line_items_for_agreement(AGREEMENT)
    assert [i.kleer_id for i in items] == ["77-recurring-1", "77-recurring-2", "77-first-1"]
    recurring, _, first = (i.properties for i in items)
    assert recurring["recurringbillingfrequency"] == "quarterly"
    assert recurring["amount"] == "200.00"
    assert recurring["hs_line_item_currency_code"] == "EUR"
    assert first["recurringbillingfrequency"] == ""
    assert first["name"] == "Setup"


@pytest.mark.parametrize(
    ("months", "frequency"),
    [
        (1, "monthly"),
        (3, "quarterly"),
        (6, "per_six_months"),
        (12, "annually"),
        (24, "per_two_years"),
        (2, ""),
        (None, ""),
        ("x", ""),
    ],
)
def test_recurring_rows_carry_hubspots_billing_frequency(months: object, frequency: str) -> None:
    items = line_items_for_agreement({**AGREEMENT, "invoice-interval-months": months})
    assert items[0].properties["recurringbillingfrequency"] == frequency


# ---------------------------------------------------------------- amounts
def test_row_amount_is_exact_and_rounded_once() -> None:
    assert row_amount_ore({"quantity": Decimal("0.333"), "price": 100}) == Fraction(333, 10)
    assert row_amount({"quantity": Decimal("0.333"), "price": 100}) == Decimal("0.33")
    assert row_amount({"quantity": "0.125", "price": 100}) == Decimal(
        "0.13"
    )  # 12.5 öre -> half away from zero
    assert row_amount({"quantity": "-0.125", "price": 100}) == Decimal("-0.13")
    assert row_amount({"quantity": 0.1, "price": 10}) == Decimal(
        "0.01"
    )  # float 0.1 read as 0.1, not 0.1000000000000000055
    assert row_amount(
        {"quantity": 2, "price": 1000, "discount": {"absolute": 100, "percentage": 50}}
    ) == Decimal("9.00")
    assert row_amount({"quantity": 2, "price": 1000, "discount": {}}) == Decimal("20.00")
    assert row_amount(
        {"quantity": 2, "price": 1000, "discount": {"absolute": None, "percentage": None}}
    ) == Decimal("20.00")


def test_unit_discount_handles_zero_quantities() -> None:
    assert row_unit_discount({"quantity": 0, "price": 1000, "discount": {"absolute": 250}}) == Decimal("2.50")
    assert row_unit_discount({"quantity": 3, "price": 1000, "discount": {"absolute": 100}}) == Decimal("0.33")
    assert row_unit_discount({"quantity": 3, "price": 1000}) is None


@given(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.integers(min_value=-(10**9), max_value=10**9),
    st.integers(min_value=-(10**9), max_value=10**9),
)
def test_integral_row_amounts_are_exact(quantity: int, price: int, absolute: int) -> None:
    amount = row_amount({"quantity": quantity, "price": price, "discount": {"absolute": absolute}})
    assert amount * 100 == quantity * price - absolute


@given(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.integers(min_value=-(10**9), max_value=10**9),
    st.sampled_from([None, "", {}, {"absolute": None, "percentage": None}]),
)
def test_rows_without_discount_are_quantity_times_price(quantity: int, price: int, discount: object) -> None:
    row = {"quantity": quantity, "price": price, "discount": discount}
    assert row_amount_ore(row) == quantity * price
    amount = row_amount(row)
    assert amount * 100 == quantity * price
    assert amount.as_tuple().exponent == -2


# ---------------------------------------------------------------- MRR / ARR
def test_mrr_and_arr_from_recurring_rows_and_interval() -> None:
    # recurring per quarter: 2 × 100.00 + 50.00 = 250.00
    assert agreement_mrr(AGREEMENT) == Decimal("83.33")
    assert agreement_arr(AGREEMENT) == Decimal("1000.00")  # from the exact MRR, not 83.33 × 12 = 999.96


def test_monthly_and_annual_intervals() -> None:
    monthly = {"invoice-interval-months": 1, "recurring-rows": [{"quantity": 1, "price": 99900}]}
    assert (agreement_mrr(monthly), agreement_arr(monthly)) == (Decimal("999.00"), Decimal("11988.00"))
    yearly = {"invoice-interval-months": 12, "recurring-rows": [{"quantity": 1, "price": 100}]}
    assert (agreement_mrr(yearly), agreement_arr(yearly)) == (Decimal("0.08"), Decimal("1.00"))


def test_first_invoice_rows_do_not_count_towards_mrr() -> None:
    assert agreement_mrr({**AGREEMENT, "recurring-rows": []}) == Decimal("0.00")


def test_deleted_and_ended_agreements_have_no_mrr() -> None:
    assert agreement_mrr({**AGREEMENT, "deleted": True}) == Decimal("0.00")
    ended = {**AGREEMENT, "end-date": "2024-06-30"}
    assert agreement_mrr(ended, as_of=dt.date(2024, 7, 1)) == Decimal("0.00")
    assert agreement_mrr(ended, as_of=dt.date(2024, 6, 30)) == Decimal("83.33")
    assert agreement_arr(ended) == Decimal("1000.00")  # no as_of: no clock


@pytest.mark.parametrize("interval", [None, 0, -1, "quarterly", 1.5, True])
def test_a_missing_or_invalid_interval_is_a_mapping_error(interval: object) -> None:
    with pytest.raises(MappingError, match="invoice-interval-months"):
        agreement_mrr({**AGREEMENT, "invoice-interval-months": interval})


def test_mrr_tolerates_string_intervals_and_no_rows() -> None:
    assert agreement_mrr({**AGREEMENT, "invoice-interval-months": "3"}) == Decimal("83.33")
    assert agreement_mrr({"invoice-interval-months": None}) == Decimal("0.00")


@given(
    st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=5),
    st.sampled_from([1, 3, 6, 12]),
)
def test_arr_is_twelve_times_exact_mrr_rounded_once(prices: list[int], months: int) -> None:
    agreement = {
        "invoice-interval-months": months,
        "recurring-rows": [{"quantity": 1, "price": p} for p in prices],
    }
    exact_monthly_units = Fraction(sum(prices), 100 * months)
    assert abs(Fraction(agreement_mrr(agreement)) - exact_monthly_units) <= Fraction(1, 200)
    assert abs(Fraction(agreement_arr(agreement)) - exact_monthly_units * 12) <= Fraction(1, 200)


# ---------------------------------------------------------------- which invoices sync
def test_only_certified_invoices_sync() -> None:
    assert should_sync_invoice(INVOICE)
    assert not should_sync_invoice({**INVOICE, "certified": False})
    assert not should_sync_invoice({k: v for k, v in INVOICE.items() if k != "certified"})


def test_credit_invoices_are_filtered_by_default() -> None:
    credit = {**INVOICE, "debit-invoice-nr": 1000}
    assert is_credit_invoice(credit)
    assert not is_credit_invoice({**INVOICE, "debit-invoice-nr": None})
    assert not should_sync_invoice(credit)
    assert should_sync_invoice(credit, include_credit=True)


def test_history_window_is_by_invoice_date() -> None:
    assert should_sync_invoice(INVOICE, history_from=dt.date(2024, 3, 1))
    assert not should_sync_invoice(INVOICE, history_from=dt.date(2024, 3, 2))
    assert not should_sync_invoice({**INVOICE, "invoice-date": None}, history_from=dt.date(2020, 1, 1))
    assert not should_sync_invoice({**INVOICE, "invoice-date": "soon"}, history_from=dt.date(2020, 1, 1))
    assert should_sync_invoice({**INVOICE, "invoice-date": None})


def test_a_non_object_is_not_an_invoice() -> None:
    with pytest.raises(MappingError):
        should_sync_invoice("501")  # type: ignore[arg-type]
