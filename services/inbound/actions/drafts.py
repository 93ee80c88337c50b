"""Kleer request bodies from HubSpot records and action inputs: pure functions, no I/O.

Every function raises ``BusinessError`` with a sentence a HubSpot user can act
on (the action then answers ``FAIL_CONTINUE``): no line items, a line item
that cannot become a Kleer row, a date before another, and so on. Rows come
from ``libs.mapping.workflow`` (exact öre; a product with a Kleer id makes a
product row, anything else a free-text row).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from libs.mapping.errors import MappingError, TransformError
from libs.mapping.model import Mappings
from libs.mapping.objects import CLIENT, LINE_ITEM_KLEER_PRODUCT_ID
from libs.mapping.transforms import units_to_ore
from libs.mapping.workflow import (
    agreement_rows_from_line_items,
    deal_line_item_to_invoice_row,
    line_item_to_agreement_row,
)
from services.inbound.actions.failures import BusinessError
from services.inbound.actions.request import Inputs

Properties = Mapping[str, str | None]

#: Line item properties the rows are built from (plus ordering and the product link).
LINE_ITEM_PROPERTIES: tuple[str, ...] = (
    "name",
    "description",
    "quantity",
    "price",
    "discount",
    "hs_discount_percentage",
    LINE_ITEM_KLEER_PRODUCT_ID,
    "kleer_unit",
    "kleer_vat_rate",
    "recurringbillingfrequency",
    "hs_recurring_billing_period",
    "hs_product_id",
    "hs_position_on_quote",
)
DEAL_NAME = "dealname"
DEAL_CURRENCY = "deal_currency_code"
DEAL_PROPERTIES: tuple[str, ...] = (DEAL_NAME, DEAL_CURRENCY, "amount")
RENEWAL = "renewal"
DEFAULT_RENEWAL_MONTHS = 12
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class DealLineItem:
    """One line item of the deal, with the Kleer id of its HubSpot product when it has one."""

    hubspot_id: str
    properties: Properties
    product_kleer_id: str | None = None

    @property
    def label(self) -> str:
        name = self.properties.get("name") or self.properties.get("description") or ""
        return f"line item {self.hubspot_id}" + (f" ({name[:60]})" if name else "")

    def with_product(self) -> dict[str, str | None]:
        """The properties, with the product's Kleer id as ``kleer_product_id`` when the line item has none."""
        props = dict(self.properties)
        if self.product_kleer_id and not (props.get(LINE_ITEM_KLEER_PRODUCT_ID) or "").strip():
            props[LINE_ITEM_KLEER_PRODUCT_ID] = self.product_kleer_id
        return props


def ordered(items: Sequence[DealLineItem]) -> list[DealLineItem]:
    """Line items in the deal's order (``hs_position_on_quote``, then creation order by id)."""

    def key(item: DealLineItem) -> tuple[int, int, str]:
        position = (item.properties.get("hs_position_on_quote") or "").strip()
        number = int(position) if position.lstrip("-").isdigit() else 1_000_000_000
        ident = item.hubspot_id
        return (number, int(ident) if ident.isdigit() else 0, ident)

    return sorted(items, key=key)


def _line_item_failure(item: DealLineItem, exc: MappingError) -> BusinessError:
    what = f" '{exc.property}'" if exc.property else ""
    value = "" if exc.value is None else f" (value {exc.value!r:.60})"
    return BusinessError(f"The deal's {item.label} cannot become a Kleer row: property{what} {exc.reason}{value}",
                         field=exc.property)


def _require_line_items(items: Sequence[DealLineItem], what: str) -> None:
    if not items:
        raise BusinessError(f"The deal has no line items: add the products to bill to the deal before {what}")


def currency_of(deal: Properties) -> str | None:
    value = (deal.get(DEAL_CURRENCY) or "").strip().upper()
    return value if _CURRENCY.match(value) else None


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day ``months`` later (the month's last day when it is shorter)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


# --- clients -----------------------------------------------------------------------------------------


def _field_property(mappings: Mappings, kleer_path: str) -> str | None:
    for field in mappings.object(CLIENT).fields:
        if field.kleer == kleer_path and field.writes_kleer:
            return field.hubspot_property
    return None


def client_body(company: Properties, inputs: Inputs, mappings: Mappings) -> dict[str, Any]:
    """Every mapped company field as a Kleer client body (``to_kleer``), with the inputs' overrides."""
    from libs.mapping.convert import to_kleer

    props = dict(company)
    changed: list[str] = []
    overrides = (("payment-days", inputs.whole("payment_days")), ("delivery-type", inputs.text("delivery_method")))
    for path, value in overrides:
        prop = _field_property(mappings, path)
        if value is not None and prop is not None:
            props[prop] = str(value)
            changed.append(prop)
    try:
        return to_kleer(CLIENT, props, changed=changed, mappings=mappings)
    except MappingError as exc:
        shown = "" if exc.value is None else f" (value {exc.value!r:.60})"
        raise BusinessError(
            f"The company's property '{exc.property}' cannot go to Kleer: {exc.reason}{shown}", field=exc.property
        ) from exc


# --- invoices ----------------------------------------------------------------------------------------


def invoice_rows(items: Sequence[DealLineItem]) -> list[dict[str, object]]:
    rows = []
    for item in ordered(items):
        try:
            rows.append(deal_line_item_to_invoice_row(item.properties, item.product_kleer_id))
        except MappingError as exc:
            raise _line_item_failure(item, exc) from exc
    return rows


def invoice_body(
    client_id: int, items: Sequence[DealLineItem], inputs: Inputs, deal: Properties, today: dt.date
) -> dict[str, Any]:
    """A Kleer client invoice for the deal's line items (``PUT client/invoice``)."""
    _require_line_items(items, "creating a Kleer invoice")
    body: dict[str, Any] = {"client-ref": {"id": client_id}, "rows": invoice_rows(items)}
    invoice_date = inputs.date("invoice_date")
    if invoice_date is not None:
        body["invoice-date"] = invoice_date.isoformat()
    days = inputs.whole("payment_days")
    if days is not None:
        body["due-date"] = ((invoice_date or today) + dt.timedelta(days=days)).isoformat()
    if inputs.text("your_reference"):
        body["your-reference"] = inputs.text("your_reference")
    our_reference = inputs.whole("our_reference")
    if our_reference is not None:
        body["our-reference"] = {"id": our_reference}
    currency = currency_of(deal)
    if currency:
        body["currency"] = currency
    return body


# --- agreements --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgreementRows:
    recurring: list[dict[str, object]]
    first_invoice: list[dict[str, object]]
    interval_months: int


def agreement_rows(items: Sequence[DealLineItem], wanted_interval: int | None) -> AgreementRows:
    """Recurring and first-invoice rows with one invoice interval.

    The interval is the recurring line items' billing frequency; an interval
    asked for in the inputs must agree with it (a row's price is per billing
    period, so another interval would bill the wrong amount).
    """
    props = []
    for item in ordered(items):
        with_product = item.with_product()
        try:
            line_item_to_agreement_row(with_product)
        except MappingError as exc:
            raise _line_item_failure(item, exc) from exc
        props.append(with_product)
    try:
        draft = agreement_rows_from_line_items(props)
    except MappingError as exc:
        raise BusinessError(f"The deal's line items cannot make one Kleer agreement: {exc.reason}") from exc
    if not draft.recurring_rows:
        raise BusinessError(
            "None of the deal's line items is recurring: give the line items that renew a billing frequency "
            "(one-time line items only go on the agreement's first invoice)"
        )
    interval = draft.invoice_interval_months
    assert interval is not None  # there are recurring rows
    if wanted_interval is not None and wanted_interval != interval:
        raise BusinessError(
            f"Input field 'invoice_interval_months' is {wanted_interval} but the deal's recurring line items "
            f"bill every {interval} month(s); leave it empty or change the line items' billing frequency",
            field="invoice_interval_months",
        )
    return AgreementRows(draft.recurring_rows, draft.first_invoice_rows, interval)


def _interval_input(inputs: Inputs) -> int | None:
    text = inputs.text("invoice_interval_months")
    return int(text) if text and text.isdigit() else None


def agreement_body(
    client_id: int, items: Sequence[DealLineItem], inputs: Inputs, deal: Properties, today: dt.date
) -> dict[str, Any]:
    """A Kleer client agreement for the deal's line items (``PUT client/agreement``)."""
    _require_line_items(items, "creating a Kleer agreement")
    rows = agreement_rows(items, _interval_input(inputs))
    start = inputs.date("start_date") or today
    body: dict[str, Any] = {
        "client-ref": {"id": client_id},
        "start-date": start.isoformat(),
        "invoice-interval-months": rows.interval_months,
        "recurring-rows": rows.recurring,
        "first-invoice-rows": rows.first_invoice,
    }
    end = inputs.date("end_date")
    if end is not None:
        if end <= start:
            raise BusinessError(
                f"Input field 'end_date' ({end}) must be after the start date ({start})", field="end_date"
            )
        body["end-date"] = end.isoformat()
    description = inputs.text("description") or (deal.get(DEAL_NAME) or "").strip()
    if description:
        body["description"] = description
    if inputs.text("invoice_day"):
        body["invoice-day"] = inputs.text("invoice_day")
    days = inputs.whole("payment_days")
    if days is not None:
        body["payment-days"] = days
    currency = currency_of(deal)
    if currency:
        body["currency"] = currency
    return body


@dataclass(frozen=True)
class AgreementChange:
    body: dict[str, Any]
    change: str
    new_end_date: dt.date | None
    note: str


def _date(value: object) -> dt.date | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None


def agreement_update(agreement: Mapping[str, Any], items: Sequence[DealLineItem], inputs: Inputs) -> AgreementChange:
    """A new revision of ``agreement`` with the deal's current line items (``POST client/agreement/{id}``).

    Upsell and downgrade replace the rows; a renewal also moves the end date:
    to the ``end_date`` input, else ``renewal_months`` (default 12) after the
    current end date. An open-ended agreement needs no renewal of its end.
    """
    change = inputs.text("change_type") or ""
    if agreement.get("deleted") is True:
        raise BusinessError(f"Kleer agreement {agreement.get('id')} is deleted; create a new agreement instead")
    _require_line_items(items, "updating the Kleer agreement")
    rows = agreement_rows(items, None)
    body: dict[str, Any] = {
        "invoice-interval-months": rows.interval_months,
        "recurring-rows": rows.recurring,
        "first-invoice-rows": rows.first_invoice,
    }
    new_end: dt.date | None = None
    note = ""
    if change == RENEWAL:
        current_end = _date(agreement.get("end-date"))
        wanted = inputs.date("end_date")
        if wanted is not None:
            if current_end is not None and wanted <= current_end:
                raise BusinessError(
                    f"Input field 'end_date' ({wanted}) must be after the agreement's current end date "
                    f"({current_end}) for a renewal",
                    field="end_date",
                )
            new_end = wanted
        elif current_end is not None:
            new_end = add_months(current_end, inputs.whole("renewal_months") or DEFAULT_RENEWAL_MONTHS)
        else:
            note = "the agreement has no end date, so it runs on; "
        if new_end is not None:
            body["end-date"] = new_end.isoformat()
    return AgreementChange(body, change, new_end, note)


# --- projects ----------------------------------------------------------------------------------------


def project_body(client_id: int, deal_id: str, deal: Properties, inputs: Inputs, today: dt.date) -> dict[str, Any]:
    """A Kleer client project for the deal (``PUT client-project``)."""
    name = inputs.text("project_name") or (deal.get(DEAL_NAME) or "").strip() or f"Deal {deal_id}"
    opening = inputs.date("opening_date") or today
    body: dict[str, Any] = {
        "client": {"id": client_id},
        "name": name,
        "opening-date": opening.isoformat(),
        "status": "Open",
    }
    closing = inputs.date("closing_date")
    if closing is not None:
        if closing < opening:
            raise BusinessError(
                f"Input field 'closing_date' ({closing}) is before the opening date ({opening})",
                field="closing_date",
            )
        body["closing-date"] = closing.isoformat()
    hours = inputs.number("budget_hours")
    if hours is not None:
        body["budget-hours"] = hours
    amount = inputs.number("budget_amount")
    if amount is not None:
        try:
            body["budget-amount"] = units_to_ore(amount)
        except TransformError as exc:  # pragma: no cover - the input checks make this unreachable
            raise BusinessError(f"Input field 'budget_amount': {exc}", field="budget_amount") from exc
    if inputs.text("your_reference"):
        body["your-reference"] = inputs.text("your_reference")
    if "fixed_price" in inputs.values:
        body["fixed-price"] = inputs.flag("fixed_price")
    currency = currency_of(deal)
    if currency:
        body["currency-type"] = currency
    return body


def event_json(value: Any) -> Any:
    """A body for an event's data: ``Decimal`` as exact strings, deep."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {k: event_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [event_json(v) for v in value]
    return value


def decimal_text(value: Decimal) -> str:
    return f"{value:,.2f}".replace(",", " ")
