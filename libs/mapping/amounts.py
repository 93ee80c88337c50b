"""Exact money maths on Kleer rows and agreements: row amounts, MRR and ARR, billing frequencies.

Rules (all amounts exact until one final rounding):

- A row's amount in öre is ``quantity × price − discount.absolute −
  quantity × price × discount.percentage / 100``. ``discount.absolute`` is
  taken as the discount on the whole row, in öre. A missing quantity or price
  counts as 0 (text-only rows have amount 0.00); a missing or empty
  ``discount`` means no discount. Negative quantities (credit rows) are fine.
- Results in currency units are rounded once, to two decimals, half away from
  zero (``Decimal``'s ROUND_HALF_UP). Intermediate values are exact
  (``Fraction``), never ``float``.
- MRR = (sum of the recurring rows' exact amounts) / ``invoice-interval-months``,
  ARR = that monthly value × 12; each is rounded once from the exact value
  (ARR is *not* rounded MRR × 12). A deleted agreement, or one whose
  ``end-date`` lies before ``as_of``, has MRR and ARR 0.00.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction

from libs.mapping.errors import MappingError, TransformError
from libs.mapping.transforms import as_ore, ore_to_units, round_half_up, to_decimal

#: HubSpot ``recurringbillingfrequency`` option -> months between invoices.
BILLING_FREQUENCY_MONTHS: Mapping[str, int] = {
    "monthly": 1,
    "quarterly": 3,
    "per_six_months": 6,
    "annually": 12,
    "per_two_years": 24,
    "per_three_years": 36,
    "per_four_years": 48,
    "per_five_years": 60,
}
_MONTHS_TO_FREQUENCY = {months: name for name, months in BILLING_FREQUENCY_MONTHS.items()}

ZERO = Decimal("0.00")


def _number(row: Mapping[str, object], key: str, object_type: str) -> Fraction:
    value = row.get(key)
    if value is None or value == "":
        return Fraction(0)
    try:
        return Fraction(to_decimal(value))
    except TransformError as exc:
        raise MappingError(str(exc), object_type=object_type, kleer_path=key, value=value) from exc


def _ore(value: object, path: str, object_type: str) -> int:
    if value is None or value == "":
        return 0
    try:
        return as_ore(value)
    except TransformError as exc:
        raise MappingError(str(exc), object_type=object_type, kleer_path=path, value=value) from exc


def _discount(row: Mapping[str, object], object_type: str) -> tuple[int, Fraction]:
    """(absolute discount in öre, percentage) of a row; both 0 when there is none."""
    discount = row.get("discount")
    if discount is None or discount == "":
        return 0, Fraction(0)
    if not isinstance(discount, Mapping):
        raise MappingError(
            "expected an object {absolute, percentage}",
            object_type=object_type,
            kleer_path="discount",
            value=discount,
        )
    absolute = _ore(discount.get("absolute"), "discount.absolute", object_type)
    percentage = discount.get("percentage")
    if percentage is None or percentage == "":
        return absolute, Fraction(0)
    try:
        return absolute, Fraction(to_decimal(percentage))
    except TransformError as exc:
        raise MappingError(
            str(exc), object_type=object_type, kleer_path="discount.percentage", value=percentage
        ) from exc


def row_amount_ore(row: Mapping[str, object], object_type: str = "line_item") -> Fraction:
    """Exact amount of one invoice or agreement row, in öre (may be fractional)."""
    if not isinstance(row, Mapping):
        raise MappingError("a row must be an object", object_type=object_type, field="rows", value=row)
    quantity_value, price_value, discount = row.get("quantity"), row.get("price"), row.get("discount")
    if type(quantity_value) is int and type(price_value) is int and (discount is None or discount == ""):
        return Fraction(quantity_value * price_value)  # most rows: whole units, whole öre, no discount
    quantity = _number(row, "quantity", object_type)
    price = Fraction(_ore(row.get("price"), "price", object_type))
    absolute, percentage = _discount(row, object_type)
    gross = quantity * price
    return gross - absolute - gross * percentage / 100


def row_amount(row: Mapping[str, object], object_type: str = "line_item") -> Decimal:
    """A row's amount in currency units, rounded once to two decimals (half away from zero)."""
    ore = row_amount_ore(row, object_type)
    if ore.denominator == 1:
        return ore_to_units(ore.numerator)  # whole öre: exact, nothing to round
    return round_half_up(ore / 100)


def row_unit_discount(row: Mapping[str, object], object_type: str = "line_item") -> Decimal | None:
    """The row's absolute discount per unit in currency units (HubSpot's line item ``discount``).

    ``discount.absolute / quantity``, rounded once to two decimals; the whole
    absolute discount when the quantity is 0 or missing; ``None`` when the row
    has no absolute discount.
    """
    absolute, _ = _discount(row, object_type)
    if absolute == 0:
        return None
    quantity = _number(row, "quantity", object_type)
    per_unit = Fraction(absolute) / quantity if quantity else Fraction(absolute)
    return round_half_up(per_unit / 100)


def record_rows(record: Mapping[str, object], key: str, object_type: str) -> list[Mapping[str, object]]:
    """The rows list at ``key``: ``[]`` when missing or null; ``MappingError`` when not a list of objects."""
    rows = record.get(key)
    if rows is None:
        return []
    if not isinstance(rows, list):
        raise MappingError("expected a list of rows", object_type=object_type, kleer_path=key, value=rows)
    for row in rows:
        if not isinstance(row, Mapping):
            raise MappingError(
                "every row must be an object", object_type=object_type, kleer_path=key, value=row
            )
    return rows


def interval_months(agreement: Mapping[str, object]) -> int:
    """The agreement's ``invoice-interval-months`` as a positive int; ``MappingError`` otherwise."""
    value = agreement.get("invoice-interval-months")
    months = 0
    if value is not None and not isinstance(value, bool):
        try:
            amount = to_decimal(value)
        except TransformError:
            amount = Decimal(0)
        if amount == amount.to_integral_value():
            months = int(amount)
    if months < 1:
        raise MappingError(
            "expected a whole number of months, at least 1",
            object_type="agreement",
            kleer_path="invoice-interval-months",
            value=value,
        )
    return months


def _is_active(agreement: Mapping[str, object], as_of: dt.date | None) -> bool:
    if agreement.get("deleted") in (True, "true"):
        return False
    end = agreement.get("end-date")
    if as_of is None or end is None or end == "":
        return True
    try:
        end_date = dt.date.fromisoformat(str(end)[:10])
    except ValueError as exc:
        raise MappingError(
            "expected a date YYYY-MM-DD", object_type="agreement", kleer_path="end-date", value=end
        ) from exc
    return end_date >= as_of


def recurring_amount_ore(agreement: Mapping[str, object]) -> Fraction:
    """Exact sum of the recurring rows per invoice interval, in öre."""
    if not isinstance(agreement, Mapping):
        raise MappingError("an agreement must be an object", object_type="agreement", value=agreement)
    return sum(
        (row_amount_ore(row, "agreement") for row in record_rows(agreement, "recurring-rows", "agreement")),
        Fraction(0),
    )


def _monthly_ore(agreement: Mapping[str, object], as_of: dt.date | None) -> Fraction:
    total = recurring_amount_ore(agreement)
    if total == 0 or not _is_active(agreement, as_of):
        return Fraction(0)
    return total / interval_months(agreement)


def agreement_mrr(agreement: Mapping[str, object], as_of: dt.date | None = None) -> Decimal:
    """Monthly recurring revenue of a Kleer agreement, in currency units (ex VAT).

    Exact sum of the recurring rows divided by ``invoice-interval-months``,
    rounded once to two decimals, half away from zero. 0.00 for a deleted
    agreement, for one without recurring rows, or (given ``as_of``) for one
    whose ``end-date`` is before ``as_of``. ``MappingError`` if the interval is
    missing or below 1 while there are recurring rows.
    """
    return round_half_up(_monthly_ore(agreement, as_of) / 100)


def agreement_arr(agreement: Mapping[str, object], as_of: dt.date | None = None) -> Decimal:
    """Annual recurring revenue: the exact monthly value × 12, rounded once (same rules as ``agreement_mrr``)."""
    return round_half_up(_monthly_ore(agreement, as_of) * 12 / 100)


def billing_frequency_for_months(months: int) -> str | None:
    """HubSpot ``recurringbillingfrequency`` for an invoice interval; ``None`` if HubSpot has no such option."""
    return _MONTHS_TO_FREQUENCY.get(months)


def months_for_billing_period(period: str) -> int:
    """An ISO-8601 period such as ``P1M``, ``P3M``, ``P12M`` or ``P1Y`` -> whole months.

    Raises ``TransformError`` for anything that is not whole months or years
    (weeks and days cannot be a Kleer invoice interval).
    """
    text = period.strip().upper()
    if text.startswith("P") and text[-1:] in ("M", "Y") and text[1:-1].isdigit():
        count = int(text[1:-1])
        months = count * 12 if text.endswith("Y") else count
        if months >= 1:
            return months
    raise TransformError(
        f"expected a billing period in whole months or years such as P1M, P3M, P1Y; got {period!r}"
    )
