"""Kleer invoice and agreement rows as HubSpot line items.

Each row becomes one line item with a stable ``kleer_id``:
``{invoice-id}-row-{n}``, ``{agreement-id}-recurring-{n}`` and
``{agreement-id}-first-{n}``, where ``n`` is the row's 1-based position in its
list. Properties come from the ``line_item`` mapping applied to the row
enriched with ``line-item-id``, ``row-kind``, ``row-number``, ``parent-id``,
``currency`` (the parent's) and, for recurring rows, the agreement's
``invoice-interval-months``. Amount maths: see ``libs.mapping.amounts``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from libs.mapping import computed as keys
from libs.mapping.amounts import interval_months, record_rows
from libs.mapping.convert import to_hubspot
from libs.mapping.errors import MappingError
from libs.mapping.model import Mappings
from libs.mapping.objects import AGREEMENT, FIRST, INVOICE, LINE_ITEM, RECURRING, ROW, line_item_id


@dataclass(frozen=True)
class LineItem:
    """One line item to upsert, with what the pusher needs to associate it."""

    kleer_id: str
    kind: str  # "row" | "recurring" | "first"
    number: int  # 1-based position in its Kleer list
    parent_type: str  # "invoice" | "agreement"
    parent_id: str
    product_kleer_id: str | None  # to resolve hs_product_id, if the pusher wants to
    properties: dict[str, str]


def _parent_id(record: Mapping[str, object], object_type: str) -> str:
    if not isinstance(record, Mapping):
        raise MappingError("a Kleer record must be a JSON object", object_type=object_type, value=record)
    parent = record.get("id")
    if parent is None or parent == "" or isinstance(parent, bool | dict | list):
        raise MappingError(
            "the record has no id, so its rows have no stable ids", object_type=object_type, kleer_path="id"
        )
    return str(parent)


def _product_id(row: Mapping[str, object]) -> str | None:
    product = row.get("product")
    if isinstance(product, Mapping) and product.get("id") not in (None, ""):
        return str(product["id"])
    return None


def _line_items(
    parent_type: str,
    parent: Mapping[str, object],
    kind: str,
    rows_key: str,
    extra: Mapping[str, object],
    mappings: Mappings | None,
) -> list[LineItem]:
    parent_id = _parent_id(parent, parent_type)
    items = []
    for number, row in enumerate(record_rows(parent, rows_key, parent_type), start=1):
        item_id = line_item_id(parent_id, kind, number)
        enriched = {
            **row,
            keys.LINE_ITEM_ID: item_id,
            keys.ROW_KIND: kind,
            keys.ROW_NUMBER: number,
            keys.PARENT_ID: parent_id,
            keys.CURRENCY: parent.get("currency"),
            **extra,
        }
        try:
            properties = to_hubspot(LINE_ITEM, enriched, mappings=mappings)
        except MappingError as exc:
            raise MappingError(
                f"{exc.reason} (in {rows_key} #{number} of {parent_type} {parent_id})",
                object_type=LINE_ITEM,
                property=exc.property,
                kleer_path=exc.kleer_path,
                value=exc.value,
                direction=exc.direction,
                field=exc.field,
            ) from exc
        items.append(LineItem(item_id, kind, number, parent_type, parent_id, _product_id(row), properties))
    return items


def line_items_for_invoice(
    invoice: Mapping[str, object], *, mappings: Mappings | None = None
) -> list[LineItem]:
    """One line item per invoice row, ids ``{invoice-id}-row-{n}`` (n from 1), in row order.

    No ``rows`` (missing or null) gives ``[]``. ``MappingError`` when the
    invoice has no id, ``rows`` is not a list of objects, or a row's values
    cannot be mapped (the message names the row).
    """
    return _line_items(INVOICE, invoice, ROW, "rows", {}, mappings)


def line_items_for_agreement(
    agreement: Mapping[str, object], *, mappings: Mappings | None = None
) -> list[LineItem]:
    """Line items for an agreement: recurring rows first, then first-invoice rows.

    Ids ``{agreement-id}-recurring-{n}`` and ``{agreement-id}-first-{n}``.
    Recurring rows carry ``recurringbillingfrequency`` from
    ``invoice-interval-months`` (empty when HubSpot has no matching option or
    the interval is missing/invalid); first-invoice rows are one-time.
    """
    try:
        months: int | None = interval_months(agreement) if isinstance(agreement, Mapping) else None
    except MappingError:
        months = None
    recurring = _line_items(
        AGREEMENT, agreement, RECURRING, "recurring-rows", {keys.INTERVAL_MONTHS: months}, mappings
    )
    first = _line_items(
        AGREEMENT, agreement, FIRST, "first-invoice-rows", {keys.INTERVAL_MONTHS: None}, mappings
    )
    return recurring + first
