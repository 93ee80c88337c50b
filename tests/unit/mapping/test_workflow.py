"""Deal line items -> Kleer invoice and agreement rows (workflow actions)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from libs.mapping import (
    MappingError,
    agreement_rows_from_line_items,
    billing_interval_months,
    deal_line_item_to_invoice_row,
    line_item_to_agreement_row,
    line_items_for_invoice,
)


def test_a_line_item_with_a_kleer_product_becomes_a_product_row() -> None:
    row = deal_line_item_to_invoice_row(
        {
            "name": "Espresso",
            "quantity": "2",
            "price": "129.50",
            "kleer_product_id": "9",
            "kleer_unit": "st",
            "kleer_vat_rate": "12",
        }
    )
    assert row == {
        "description": "Espresso",
        "quantity": Decimal(2),
        "price": 12950,
        "product": {"id": 9},
        "unit": "st",
        "vat": Decimal(12),
    }


def test_the_product_id_can_be_passed_in() -> None:
    row = deal_line_item_to_invoice_row({"name": "Espresso", "quantity": "1"}, product_kleer_id=9)
    assert row == {
        "description": "Espresso",
        "quantity": Decimal(1),
        "product": {"id": 9},
    }  # Kleer applies the price


def test_a_line_item_without_a_kleer_product_becomes_a_free_text_row() -> None:
    row = deal_line_item_to_invoice_row(
        {"name": "Workshop", "quantity": "1.5", "price": "1000", "hs_product_id": "555"}
    )
    assert row == {"description": "Workshop", "quantity": Decimal("1.5"), "price": 100000}
    assert deal_line_item_to_invoice_row({"description": "Note"}) == {
        "description": "Note",
        "quantity": Decimal(1),
        "price": 0,
    }


def test_prices_convert_to_exact_ore() -> None:
    assert deal_line_item_to_invoice_row({"name": "x", "price": "0.1"})["price"] == 10
    assert (
        deal_line_item_to_invoice_row({"name": "x", "price": "99999999999999.99"})["price"]
        == 9999999999999999
    )
    assert deal_line_item_to_invoice_row({"name": "x", "price": "1.005"})["price"] == 101
    assert deal_line_item_to_invoice_row({"name": "x", "price": "-5"})["price"] == -500


def test_discounts_become_a_row_discount() -> None:
    row = deal_line_item_to_invoice_row({"name": "x", "quantity": "3", "price": "10", "discount": "1.25"})
    assert row["discount"] == {"absolute": 375}  # unit discount × quantity
    row = deal_line_item_to_invoice_row(
        {"name": "x", "quantity": "1", "price": "10", "hs_discount_percentage": "12.5"}
    )
    assert row["discount"] == {"percentage": Decimal("12.5")}
    row = deal_line_item_to_invoice_row(
        {"name": "x", "price": "10", "discount": "0", "hs_discount_percentage": ""}
    )
    assert "discount" not in row


def test_outbound_line_items_convert_back_to_the_same_row() -> None:
    items = line_items_for_invoice(
        {
            "id": 1,
            "rows": [
                {
                    "quantity": 3,
                    "price": 12950,
                    "description": "Beans",
                    "product": {"id": 4},
                    "unit": "kg",
                    "vat": 12,
                    "discount": {"absolute": 300},
                }
            ],
        }
    )
    row = deal_line_item_to_invoice_row(items[0].properties)
    assert row == {
        "description": "Beans",
        "quantity": Decimal(3),
        "price": 12950,
        "product": {"id": 4},
        "unit": "kg",
        "discount": {"absolute": 300},
        "vat": Decimal(12),
    }


@pytest.mark.parametrize(
    ("props", "prop"),
    [
        ({"quantity": "1", "price": "10"}, "name"),
        ({"name": "x", "price": "ten"}, "price"),
        ({"name": "x", "quantity": "many"}, "quantity"),
        ({"name": "x", "kleer_product_id": "P-9"}, "kleer_product_id"),
        ({"name": "x", "discount": "%"}, "discount"),
    ],
)
def test_bad_line_items_name_the_property(props: dict[str, str], prop: str) -> None:
    with pytest.raises(MappingError) as info:
        deal_line_item_to_invoice_row(props)
    assert info.value.property == prop
    assert info.value.direction == "to_kleer"


def test_none_values_mean_not_set() -> None:
    row = deal_line_item_to_invoice_row({"name": "x", "quantity": None, "price": None, "discount": None})
    assert row == {"description": "x", "quantity": Decimal(1), "price": 0}


@pytest.mark.parametrize(
    ("props", "months"),
    [
        ({"recurringbillingfrequency": "monthly"}, 1),
        ({"recurringbillingfrequency": "quarterly"}, 3),
        ({"recurringbillingfrequency": "per_six_months"}, 6),
        ({"recurringbillingfrequency": "annually"}, 12),
        ({"recurringbillingfrequency": "Annually "}, 12),
        ({"recurringbillingfrequency": "per_two_years"}, 24),
        ({"hs_recurring_billing_period": "P1M"}, 1),
        ({"hs_recurring_billing_period": "P3M"}, 3),
        ({"hs_recurring_billing_period": "P12M"}, 12),
        ({"hs_recurring_billing_period": "P1Y"}, 12),
        ({"recurringbillingfrequency": "monthly", "hs_recurring_billing_period": "P12M"}, 1),
        ({}, None),
        ({"recurringbillingfrequency": "", "hs_recurring_billing_period": None}, None),
    ],
)
def test_billing_period_becomes_interval_months(props: dict[str, str | None], months: int | None) -> None:
    assert billing_interval_months(props) == months


@pytest.mark.parametrize(
    "props",
    [
        {"recurringbillingfrequency": "weekly"},
        {"hs_recurring_billing_period": "P2W"},
        {"hs_recurring_billing_period": "P0M"},
        {"hs_recurring_billing_period": "monthly"},
    ],
)
def test_unsupported_billing_periods_are_mapping_errors(props: dict[str, str]) -> None:
    with pytest.raises(MappingError):
        billing_interval_months(props)


def test_line_item_to_agreement_row() -> None:
    draft = line_item_to_agreement_row(
        {
            "name": "Licence",
            "quantity": "5",
            "price": "49",
            "recurringbillingfrequency": "monthly",
            "kleer_vat_rate": "25",
        },
        product_kleer_id="12",
    )
    assert draft.interval_months == 1
    assert draft.row == {
        "description": "Licence",
        "quantity": Decimal(5),
        "price": 4900,
        "product": {"id": 12},
    }
    assert line_item_to_agreement_row({"name": "Setup", "price": "100"}).interval_months is None


def test_a_deals_line_items_split_into_recurring_and_first_invoice_rows() -> None:
    draft = agreement_rows_from_line_items(
        [
            {"name": "Licence", "price": "49", "recurringbillingfrequency": "quarterly"},
            {"name": "Setup", "price": "1000"},
            {"name": "Support", "price": "10", "hs_recurring_billing_period": "P3M"},
        ]
    )
    assert draft.invoice_interval_months == 3
    assert [r["description"] for r in draft.recurring_rows] == ["Licence", "Support"]
    assert [r["description"] for r in draft.first_invoice_rows] == ["Setup"]
    assert agreement_rows_from_line_items([]).invoice_interval_months is None


def test_mixed_billing_frequencies_cannot_form_one_agreement() -> None:
    with pytest.raises(MappingError, match="one invoice interval"):
        agreement_rows_from_line_items(
            [
                {"name": "a", "recurringbillingfrequency": "monthly"},
                {"name": "b", "recurringbillingfrequency": "annually"},
            ]
        )
