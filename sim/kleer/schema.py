"""Field schemas of the simulated Kleer resources and the validation of request bodies (pure).

Each resource is a mapping of kebab-case field name to ``Field``. Validation
accepts a JSON-decoded body and either returns the writable fields (read-only
ones, e.g. ``id`` or an invoice's computed ``amount``, are type-checked and
then dropped, so a record read from Kleer can be sent back as is) or raises
``ValidationFailed`` with one human message naming the offending field, the
way Kleer answers ``{"error": {"message": ...}}`` with a 400.

Rules:
- unknown fields are refused (``unknown field 'x' in client``);
- types are strict: money is whole öre (``int``, never a float or a string),
  booleans are JSON booleans, dates are ``YYYY-MM-DD`` strings;
- ``null`` is accepted for any field that is not required;
- ``required`` fields must be present on create (PUT); an update (POST) may
  send any subset of the fields.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

STR, INT, MONEY, BOOL, DECIMAL, DATE, ENUM, OBJECT, LIST = (
    "string", "integer", "money", "boolean", "number", "date", "enum", "object", "list",
)

MAX_MONEY = 10**15  # öre: ten thousand billion kronor is enough for any book
MAX_DECIMAL = 1e12
MAX_ROWS = 1000
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ValidationFailed(Exception):
    """The body breaks the schema; ``message`` is what Kleer would answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Field:
    kind: str
    required: bool = False
    read_only: bool = False
    choices: tuple[str, ...] = ()
    fields: Mapping[str, Field] | None = None  # OBJECT: its fields; LIST: the fields of each item
    item_tag: str = "row"  # XML element of each LIST item
    minimum: int = -(2**31)
    maximum: int = 2**31 - 1
    max_length: int = 1000
    min_length: int = 0
    pattern: re.Pattern[str] | None = field(default=None, compare=False)
    hint: str = ""  # shown when the pattern does not match


def text(**options: Any) -> Field:
    return Field(STR, **options)


def ref(**options: Any) -> Field:
    """A reference to another record: ``{"id": N}``."""
    return Field(OBJECT, fields={"id": Field(INT, required=True, minimum=1)}, **options)


CURRENCY = text(pattern=re.compile(r"^[A-Z]{3}$"), hint="a three-letter ISO currency code such as SEK")
COUNTRY = text(pattern=re.compile(r"^[A-Z]{2}$"), hint="a two-letter ISO country code such as SE")
DELIVERY_TYPES = ("Mail", "Email", "Manually", "Svea", "Efaktura")
PRODUCT_TYPES = ("Goods", "Services", "DigitalServices")
INVOICE_DAYS = (
    "INVOICE_AT_START",
    "PAY_AT_START",
    "INVOICE_AT_END",
    "INVOICE_AT_START_MONTH",
    "INVOICE_60_DAYS_PRIOR_TO_PERIOD_START",
    "INVOICE_AT_END_MONTH",
    "INVOICE_ONE_DAY_PRIOR_TO_PERIOD_START",
    "INVOICE_FIVE_DAYS_PRIOR_TO_PERIOD_START",
)
PROJECT_STATUSES = ("Draft", "Open", "Closed")

ADDRESS = Field(
    OBJECT,
    fields={"address1": text(), "address2": text(), "zip-code": text(), "state": text(), "country": text()},
)
DISCOUNT = Field(OBJECT, fields={"absolute": Field(MONEY), "percentage": Field(DECIMAL)})

CLIENT_FIELDS: dict[str, Field] = {
    "id": Field(INT, read_only=True),
    "foreign-id": text(),
    "name": text(required=True, min_length=1),
    "contact": text(),
    "address": ADDRESS,
    "email": text(pattern=re.compile(r"^$|^[^@\s]+@[^@\s]+$"), hint="an e-mail address"),
    "client-type": text(),
    "country-code": COUNTRY,
    "currency-type": CURRENCY,
    "notes": text(max_length=10000),
    "payment-days": Field(INT, minimum=0, maximum=365),
    "orgno": text(),
    "phone": text(),
    "delivery-type": Field(ENUM, choices=DELIVERY_TYPES),
    "vat-nr": text(),
    "gln": text(),
    "active": Field(BOOL),
}

PRODUCT_FIELDS: dict[str, Field] = {
    "id": Field(INT, read_only=True),
    "foreign-id": text(),
    "name": text(required=True, min_length=1),
    "type": Field(ENUM, choices=PRODUCT_TYPES),
    "unit": text(),
    "price": Field(MONEY),
    "ean": Field(INT, minimum=0, maximum=99_999_999_999_999),
    "account-nr": Field(INT, minimum=1000, maximum=9999),
    "vat-percentage": Field(DECIMAL),
}

INVOICE_ROW_FIELDS: dict[str, Field] = {
    "id": Field(INT, read_only=True),
    "quantity": Field(DECIMAL, required=True),
    "price": Field(MONEY),  # required unless the row names a product with a price
    "vat": Field(DECIMAL),  # the rate as a fraction: 0.25 is 25 %
    "product": ref(),
    "unit": text(),
    "description": text(),
    "discount": DISCOUNT,
}

INVOICE_FIELDS: dict[str, Field] = {
    "id": Field(INT, read_only=True),
    "invoice-nr": Field(INT, minimum=1),
    "debit-invoice-nr": Field(INT, minimum=1),
    "client-ref": ref(required=True),
    "your-reference": text(),
    "our-reference": ref(),
    "invoice-address": ADDRESS,
    "invoice-email": text(),
    "invoice-date": Field(DATE),
    "due-date": Field(DATE),
    "delivery-date": Field(DATE),
    "amount": Field(MONEY, read_only=True),  # computed from the rows
    "vat": Field(MONEY, read_only=True),  # computed from the rows
    "currency": CURRENCY,
    "certified": Field(BOOL),
    "sent": Field(BOOL),
    "remaining": Field(MONEY),
    "last-payment-date": Field(DATE),
    "agreement-nr": text(),
    "client-agreement-ref": ref(),
    "delivery-method": Field(ENUM, choices=DELIVERY_TYPES),
    "rows": Field(LIST, fields=INVOICE_ROW_FIELDS),
}

AGREEMENT_ROW_FIELDS: dict[str, Field] = {
    "quantity": Field(DECIMAL, required=True),
    "price": Field(MONEY),
    "product": ref(),
    "unit": text(),
    "description": text(),
    "discount": DISCOUNT,
}

AGREEMENT_FIELDS: dict[str, Field] = {
    "id": Field(INT, read_only=True),
    "revision-nr": Field(INT, read_only=True),
    "client-ref": ref(required=True),
    "description": text(),
    "start-date": Field(DATE),
    "start-invoice-date": Field(DATE),
    "next-invoice-date": Field(DATE),
    "end-date": Field(DATE),
    "currency": CURRENCY,
    "payment-days": Field(INT, minimum=0, maximum=365),
    "invoice-interval-months": Field(INT, minimum=1, maximum=60),
    "invoice-day": Field(ENUM, choices=INVOICE_DAYS),
    "agreement-nr": text(),
    "deleted": Field(BOOL, read_only=True),  # set by DELETE
    "first-invoice-rows": Field(LIST, fields=AGREEMENT_ROW_FIELDS),
    "recurring-rows": Field(LIST, fields=AGREEMENT_ROW_FIELDS),
}

PROJECT_FIELDS: dict[str, Field] = {
    "id": Field(INT, read_only=True),
    "client": ref(),
    "number": text(),
    "name": text(required=True, min_length=1),
    "fixed-price": Field(BOOL),
    "currency-type": CURRENCY,
    "active": Field(BOOL),
    "your-reference": text(),
    "comment": text(max_length=10000),
    "payment-days": Field(INT, minimum=0, maximum=365),
    "budget-hours": Field(DECIMAL),
    "budget-amount": Field(MONEY),
    "status": Field(ENUM, choices=PROJECT_STATUSES),
    "opening-date": Field(DATE),
    "closing-date": Field(DATE),
}

SCHEMAS: dict[str, dict[str, Field]] = {
    "client": CLIENT_FIELDS,
    "product": PRODUCT_FIELDS,
    "client-invoice": INVOICE_FIELDS,
    "client-agreement": AGREEMENT_FIELDS,
    "client-project": PROJECT_FIELDS,
}


def validate_body(resource: str, body: Any, *, partial: bool) -> dict[str, Any]:
    """Check a create (``partial=False``) or update (``partial=True``) body of ``resource``.

    Returns the writable fields of ``body`` (read-only ones dropped); raises ``ValidationFailed``.
    """
    if not isinstance(body, dict):
        raise ValidationFailed(f"the body must be a JSON object with the fields of a {resource}, got {_kind_of(body)}")
    return _check_object(SCHEMAS[resource], body, resource, partial=partial, drop_read_only=True)


def _check_object(
    fields: Mapping[str, Field], value: dict[str, Any], where: str, *, partial: bool, drop_read_only: bool
) -> dict[str, Any]:
    for name in value:
        if name not in fields:
            raise ValidationFailed(f"unknown field {_shorten(name)!r} in {where}")
    if not partial:
        for name, spec in fields.items():
            if spec.required and value.get(name) is None:
                raise ValidationFailed(f"{where}.{name} is required")
    clean: dict[str, Any] = {}
    for name, item in value.items():
        spec = fields[name]
        checked = _check_value(spec, item, f"{where}.{name}")
        if not (drop_read_only and spec.read_only):
            clean[name] = checked
    return clean


def _check_value(spec: Field, value: Any, where: str) -> Any:
    if value is None:
        if spec.required:
            raise ValidationFailed(f"{where} is required and cannot be null")
        return None
    kind = spec.kind
    if kind in (INT, MONEY):
        if isinstance(value, bool) or not isinstance(value, int):
            unit = "a whole number of öre (hundredths; 129.50 SEK is 12950)" if kind == MONEY else "an integer"
            raise ValidationFailed(f"{where} must be {unit}, got {_kind_of(value)}")
        low, high = (-MAX_MONEY, MAX_MONEY) if kind == MONEY else (spec.minimum, spec.maximum)
        if not low <= value <= high:
            raise ValidationFailed(f"{where} must be between {low} and {high}, got {value}")
        return value
    if kind == DECIMAL:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationFailed(f"{where} must be a number, got {_kind_of(value)}")
        if abs(value) > MAX_DECIMAL or not math.isfinite(value):
            raise ValidationFailed(f"{where} must be a number between -{MAX_DECIMAL:g} and {MAX_DECIMAL:g}")
        return value
    if kind == BOOL:
        if not isinstance(value, bool):
            raise ValidationFailed(f"{where} must be true or false, got {_kind_of(value)}")
        return value
    if kind in (STR, DATE, ENUM):
        if not isinstance(value, str):
            raise ValidationFailed(f"{where} must be a string, got {_kind_of(value)}")
        return _check_text(spec, value, where)
    if kind == OBJECT:
        if not isinstance(value, dict):
            raise ValidationFailed(f"{where} must be an object, got {_kind_of(value)}")
        assert spec.fields is not None
        return _check_object(spec.fields, value, where, partial=False, drop_read_only=False)
    if kind == LIST:
        if not isinstance(value, list):
            raise ValidationFailed(f"{where} must be a list, got {_kind_of(value)}")
        if len(value) > MAX_ROWS:
            raise ValidationFailed(f"{where} may hold at most {MAX_ROWS} rows, got {len(value)}")
        assert spec.fields is not None
        items = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise ValidationFailed(f"{where}[{index}] must be an object, got {_kind_of(item)}")
            items.append(_check_object(spec.fields, item, f"{where}[{index}]", partial=False, drop_read_only=False))
        return items
    raise AssertionError(f"unknown field kind {kind!r}")  # pragma: no cover - schema bug


def _check_text(spec: Field, value: str, where: str) -> str:
    if spec.kind == DATE:
        if not _DATE.match(value):
            raise ValidationFailed(f"{where} must be a date written YYYY-MM-DD, got {_shorten(value)!r}")
        try:
            date.fromisoformat(value)
        except ValueError:
            raise ValidationFailed(f"{where} is not a valid date: {value!r}") from None
        return value
    if spec.kind == ENUM:
        if value not in spec.choices:
            raise ValidationFailed(f"{where} must be one of {', '.join(spec.choices)}, got {_shorten(value)!r}")
        return value
    if len(value) > spec.max_length:
        raise ValidationFailed(f"{where} is longer than {spec.max_length} characters")
    if len(value) < spec.min_length:
        raise ValidationFailed(f"{where} must not be empty")
    if spec.pattern is not None and not spec.pattern.match(value):
        raise ValidationFailed(f"{where} must be {spec.hint}, got {_shorten(value)!r}")
    return value


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the decimal number {value!r}"
    if isinstance(value, str):
        return f"the string {_shorten(value)!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _shorten(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[:limit] + "…"
