"""Named derived values a mapping can write with ``compute: <name>`` (outbound only).

Each takes the Kleer record being mapped and returns a Kleer-side value that
the field's transform then encodes. Line item mappings are applied to a Kleer
row *enriched* by ``line_items.py`` with the keys below, so a mappings file
can also address them as ordinary paths (``kleer: line-item-id``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal

from libs.mapping.amounts import (
    agreement_arr,
    agreement_mrr,
    billing_frequency_for_months,
    row_amount,
    row_unit_discount,
)
from libs.mapping.errors import MappingError, TransformError
from libs.mapping.objects import RECURRING
from libs.mapping.transforms import as_ore

# Keys added to a Kleer row before the line_item mapping is applied.
LINE_ITEM_ID = "line-item-id"  # "{parent-id}-{kind}-{n}"
ROW_KIND = "row-kind"  # "row" | "recurring" | "first"
ROW_NUMBER = "row-number"  # 1-based position in its list
PARENT_ID = "parent-id"  # the invoice or agreement id
CURRENCY = "currency"  # the invoice's or agreement's currency
INTERVAL_MONTHS = "invoice-interval-months"  # the agreement's interval (recurring rows only)
ENRICHED_ROW_KEYS: tuple[str, ...] = (
    LINE_ITEM_ID,
    ROW_KIND,
    ROW_NUMBER,
    PARENT_ID,
    CURRENCY,
    INTERVAL_MONTHS,
)

Computed = Callable[[Mapping[str, object]], object]


def invoice_total_ore(invoice: Mapping[str, object]) -> int | None:
    """``amount`` + ``vat`` in öre (the amount billed incl. VAT); ``None`` when both are missing."""
    amount, vat = invoice.get("amount"), invoice.get("vat")
    if amount is None and vat is None:
        return None
    total = 0
    for key, value in (("amount", amount), ("vat", vat)):
        if value is None:
            continue
        try:
            total += as_ore(value)
        except TransformError as exc:
            raise MappingError(str(exc), object_type="invoice", kleer_path=key, value=value) from exc
    return total


def line_item_name(row: Mapping[str, object]) -> str:
    """The first line of the row's description; else ``Kleer product {id}``; else ``Row {n}``."""
    description = row.get("description")
    if isinstance(description, str) and description.strip():
        return description.strip().splitlines()[0].strip()
    product = row.get("product")
    if isinstance(product, Mapping) and product.get("id") not in (None, ""):
        return f"Kleer product {product['id']}"
    return f"Row {row.get(ROW_NUMBER, '')}".strip()


def line_item_amount(row: Mapping[str, object]) -> Decimal:
    """quantity × price − discount, exact, rounded once to two decimals (see ``amounts``)."""
    return row_amount(row)


def line_item_unit_discount(row: Mapping[str, object]) -> Decimal | None:
    """Absolute discount per unit, or ``None`` (HubSpot's line item ``discount`` is per unit)."""
    return row_unit_discount(row)


def line_item_billing_frequency(row: Mapping[str, object]) -> str | None:
    """``recurringbillingfrequency`` of a recurring agreement row; ``None`` for one-time rows.

    ``None`` too when the interval has no HubSpot option (e.g. 2 months).
    """
    if row.get(ROW_KIND) != RECURRING:
        return None
    months = row.get(INTERVAL_MONTHS)
    if not isinstance(months, int) or isinstance(months, bool):
        return None
    return billing_frequency_for_months(months)


def _mrr(agreement: Mapping[str, object]) -> Decimal:
    return agreement_mrr(agreement)


def _arr(agreement: Mapping[str, object]) -> Decimal:
    return agreement_arr(agreement)


COMPUTED: Mapping[str, Computed] = {
    "invoice_total_ore": invoice_total_ore,
    "agreement_mrr": _mrr,
    "agreement_arr": _arr,
    "line_item_name": line_item_name,
    "line_item_amount": line_item_amount,
    "line_item_unit_discount": line_item_unit_discount,
    "line_item_billing_frequency": line_item_billing_frequency,
}
