"""Kleer record shapes as TypedDicts (kebab-case keys, as on the wire).

Money fields are ``int`` öre; quantities and rates are JSON numbers (``int`` or
``float``; convert with ``Decimal(str(x))`` before doing sums). All keys are
optional because the same shapes describe partial create/update bodies; records
read from Kleer carry every key (absent values are ``null``).
"""

from __future__ import annotations

from typing import Any, TypedDict

Number = int | float

KleerRecord = dict[str, Any]
"""A record as decoded from JSON, before it is narrowed to one of the shapes below."""


class Reference(TypedDict):
    id: int


Address = TypedDict(
    "Address",
    {
        "address1": str | None,
        "address2": str | None,
        "zip-code": str | None,
        "state": str | None,
        "country": str | None,
    },
    total=False,
)


class Discount(TypedDict, total=False):
    absolute: int | None
    percentage: Number | None


ClientRecord = TypedDict(
    "ClientRecord",
    {
        "id": int,
        "foreign-id": str | None,
        "name": str,
        "contact": str | None,
        "address": Address | None,
        "email": str | None,
        "client-type": str | None,
        "country-code": str | None,
        "currency-type": str | None,
        "notes": str | None,
        "payment-days": int | None,
        "orgno": str | None,
        "phone": str | None,
        "delivery-type": str | None,
        "vat-nr": str | None,
        "gln": str | None,
        "active": bool,
    },
    total=False,
)

ProductRecord = TypedDict(
    "ProductRecord",
    {
        "id": int,
        "foreign-id": str | None,
        "name": str,
        "type": str | None,
        "unit": str | None,
        "price": int | None,
        "ean": int | None,
        "account-nr": int | None,
        "vat-percentage": Number | None,
    },
    total=False,
)


class InvoiceRow(TypedDict, total=False):
    id: int
    quantity: Number
    price: int
    vat: Number | None
    product: Reference | None
    unit: str | None
    description: str | None
    discount: Discount | None


InvoiceRecord = TypedDict(
    "InvoiceRecord",
    {
        "id": int,
        "invoice-nr": int,
        "debit-invoice-nr": int | None,
        "client-ref": Reference,
        "your-reference": str | None,
        "our-reference": Reference | None,
        "invoice-address": Address | None,
        "invoice-email": str | None,
        "invoice-date": str,
        "due-date": str | None,
        "delivery-date": str | None,
        "amount": int,
        "vat": int,
        "currency": str,
        "certified": bool,
        "sent": bool,
        "remaining": int,
        "last-payment-date": str | None,
        "agreement-nr": str | None,
        "client-agreement-ref": Reference | None,
        "delivery-method": str | None,
        "rows": list[InvoiceRow],
    },
    total=False,
)


class AgreementRow(TypedDict, total=False):
    quantity: Number
    price: int
    product: Reference | None
    unit: str | None
    description: str | None
    discount: Discount | None


AgreementRecord = TypedDict(
    "AgreementRecord",
    {
        "id": int,
        "revision-nr": int,
        "client-ref": Reference,
        "description": str | None,
        "start-date": str | None,
        "start-invoice-date": str | None,
        "next-invoice-date": str | None,
        "end-date": str | None,
        "currency": str,
        "payment-days": int | None,
        "invoice-interval-months": int,
        "invoice-day": str,
        "agreement-nr": str,
        "deleted": bool,
        "first-invoice-rows": list[AgreementRow],
        "recurring-rows": list[AgreementRow],
    },
    total=False,
)

ProjectRecord = TypedDict(
    "ProjectRecord",
    {
        "id": int,
        "client": Reference | None,
        "number": str,
        "name": str,
        "fixed-price": bool,
        "currency-type": str | None,
        "active": bool,
        "your-reference": str | None,
        "comment": str | None,
        "payment-days": int | None,
        "budget-hours": Number | None,
        "budget-amount": int | None,
        "status": str,
        "opening-date": str | None,
        "closing-date": str | None,
    },
    total=False,
)
