"""HubSpot deal line items -> Kleer invoice and agreement rows (for the workflow actions).

Line item properties used: ``name``, ``description``, ``quantity``,
``price`` (currency units), ``discount`` (HubSpot's *unit* discount, currency
units), ``hs_discount_percentage``, ``kleer_product_id``, ``kleer_unit``,
``kleer_vat_rate``, ``recurringbillingfrequency`` and
``hs_recurring_billing_period``. Values may be ``None`` (HubSpot's "not set").

A row is a **product row** (``product: {id}``) when the product's Kleer id is
known — passed as ``product_kleer_id`` (e.g. looked up from the line item's
``hs_product_id``) or present as the line item's ``kleer_product_id`` — and a
**free-text row** otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from libs.mapping.amounts import BILLING_FREQUENCY_MONTHS, months_for_billing_period
from libs.mapping.errors import MappingError, TransformError
from libs.mapping.objects import LINE_ITEM, LINE_ITEM_KLEER_PRODUCT_ID
from libs.mapping.transforms import round_half_up, to_decimal, units_to_ore

Properties = Mapping[str, str | None]


def _text(props: Properties, key: str) -> str | None:
    value = props.get(key)
    if value is None or not value.strip():
        return None
    return value


def _fail(reason: str, prop: str, value: object = None) -> MappingError:
    return MappingError(reason, object_type=LINE_ITEM, property=prop, value=value, direction="to_kleer")


def _decimal(props: Properties, key: str) -> Decimal | None:
    value = _text(props, key)
    if value is None:
        return None
    try:
        return to_decimal(value)
    except TransformError as exc:
        raise _fail(str(exc), key, value) from exc


def _product_id(props: Properties, product_kleer_id: str | int | None) -> int | None:
    raw: object = (
        product_kleer_id if product_kleer_id not in (None, "") else _text(props, LINE_ITEM_KLEER_PRODUCT_ID)
    )
    if raw is None:
        return None
    text = str(raw).strip()
    if not text.isdigit():
        raise _fail("a Kleer product id is a whole number", LINE_ITEM_KLEER_PRODUCT_ID, raw)
    return int(text)


def _row(props: Properties, product_kleer_id: str | int | None) -> dict[str, object]:
    product_id = _product_id(props, product_kleer_id)
    description = _text(props, "name") or _text(props, "description")
    quantity = _decimal(props, "quantity")
    if quantity is None:
        quantity = Decimal(1)
    row: dict[str, object] = {}
    if description is not None:
        row["description"] = description
    elif product_id is None:
        raise _fail("a free-text row needs a name or description", "name")
    row["quantity"] = quantity
    price = _text(props, "price")
    if price is not None:
        try:
            row["price"] = units_to_ore(price)
        except TransformError as exc:
            raise _fail(str(exc), "price", price) from exc
    elif product_id is None:
        row["price"] = 0
    if product_id is not None:
        row["product"] = {"id": product_id}
    unit = _text(props, "kleer_unit")
    if unit is not None:
        row["unit"] = unit
    discount: dict[str, object] = {}
    unit_discount = _decimal(props, "discount")
    if unit_discount:
        # HubSpot's discount is per unit; Kleer's absolute discount is for the whole row.
        discount["absolute"] = int(round_half_up(Fraction(unit_discount) * Fraction(quantity) * 100, 0))
    percentage = _decimal(props, "hs_discount_percentage")
    if percentage:
        discount["percentage"] = percentage
    if discount:
        row["discount"] = discount
    return row


def deal_line_item_to_invoice_row(
    line_item_properties: Properties, product_kleer_id: str | int | None = None
) -> dict[str, object]:
    """A HubSpot line item as a Kleer invoice row (``rows[]`` entry of a new invoice).

    - ``description``: the line item's ``name`` (else its ``description``);
      a free-text row without either raises ``MappingError``.
    - ``quantity``: ``Decimal``; 1 when missing. Negative quantities pass.
    - ``price``: exact öre from currency units (``"129.50"`` -> ``12950``;
      beyond two decimals rounded half away from zero). Missing: left out for a
      product row (Kleer applies the product's price), 0 for a free-text row.
    - ``product``: ``{"id": int}`` for a product row.
    - ``discount``: ``absolute`` öre = HubSpot unit ``discount`` × quantity
      (rounded once to whole öre), ``percentage`` from
      ``hs_discount_percentage``; left out when both are zero or missing.
    - ``unit`` from ``kleer_unit``, ``vat`` (rate, ``Decimal``) from ``kleer_vat_rate``, when set.
    Raises ``MappingError`` naming the property for unparseable values.
    """
    row = _row(line_item_properties, product_kleer_id)
    vat = _decimal(line_item_properties, "kleer_vat_rate")
    if vat is not None:
        row["vat"] = vat
    return row


def billing_interval_months(line_item_properties: Properties) -> int | None:
    """Months between invoices for a recurring line item; ``None`` for a one-time line item.

    ``recurringbillingfrequency`` decides (``monthly`` 1, ``quarterly`` 3,
    ``per_six_months`` 6, ``annually`` 12, ``per_two_years`` 24, ... 60); without
    it, ``hs_recurring_billing_period`` is read as the interval (``P1M`` 1,
    ``P3M`` 3, ``P12M``/``P1Y`` 12). Note HubSpot documents that property as
    the *term*; it is only a fallback here. ``MappingError`` for frequencies
    Kleer cannot bill (weekly) and malformed periods.
    """
    frequency = _text(line_item_properties, "recurringbillingfrequency")
    if frequency is not None:
        months = BILLING_FREQUENCY_MONTHS.get(frequency.strip().lower())
        if months is None:
            known = ", ".join(BILLING_FREQUENCY_MONTHS)
            raise _fail(
                f"Kleer cannot invoice at this frequency; expected one of {known}",
                "recurringbillingfrequency",
                frequency,
            )
        return months
    period = _text(line_item_properties, "hs_recurring_billing_period")
    if period is None:
        return None
    try:
        return months_for_billing_period(period)
    except TransformError as exc:
        raise _fail(str(exc), "hs_recurring_billing_period", period) from exc


@dataclass(frozen=True)
class AgreementRowDraft:
    """A Kleer agreement row and the invoice interval it implies (``None``: a one-time, first-invoice row)."""

    row: dict[str, object]
    interval_months: int | None


def line_item_to_agreement_row(
    line_item_properties: Properties, product_kleer_id: str | int | None = None
) -> AgreementRowDraft:
    """A HubSpot line item as a Kleer agreement row plus its billing interval.

    The row has the same fields as ``deal_line_item_to_invoice_row`` except
    ``vat`` (agreement rows carry none). ``interval_months`` comes from
    ``billing_interval_months``; ``None`` means the line item is one-time and
    belongs in ``first-invoice-rows``.
    """
    return AgreementRowDraft(
        _row(line_item_properties, product_kleer_id), billing_interval_months(line_item_properties)
    )


@dataclass(frozen=True)
class AgreementDraft:
    """Rows for a Kleer agreement built from a deal's line items."""

    recurring_rows: list[dict[str, object]] = field(default_factory=list)
    first_invoice_rows: list[dict[str, object]] = field(default_factory=list)
    invoice_interval_months: int | None = None


def agreement_rows_from_line_items(line_items: Iterable[Properties]) -> AgreementDraft:
    """Split a deal's line items into recurring and first-invoice rows with one common interval.

    A Kleer agreement has one ``invoice-interval-months``: recurring line items
    with different frequencies raise ``MappingError``. With no recurring line
    item the interval is ``None`` (the caller decides).
    """
    draft = AgreementDraft()
    interval: int | None = None
    for props in line_items:
        part = line_item_to_agreement_row(props)
        if part.interval_months is None:
            draft.first_invoice_rows.append(part.row)
            continue
        if interval is not None and part.interval_months != interval:
            raise _fail(
                f"line items bill every {interval} and every {part.interval_months} months; "
                "a Kleer agreement has one invoice interval",
                "recurringbillingfrequency",
            )
        interval = part.interval_months
        draft.recurring_rows.append(part.row)
    return AgreementDraft(draft.recurring_rows, draft.first_invoice_rows, interval)
