"""What Kleer does with a valid body: defaults, references, totals, number series, revisions.

``create``, ``update`` and ``delete`` take a body that already passed
``schema.validate_body`` and either write to the book or raise ``RuleBroken``
(a 400 with Kleer's message). Totals are exact integer öre: a row's net is
``quantity × price`` less its discount, rounded half up; its VAT is the net
times the row's rate (a fraction, 0.25 = 25 %), rounded half up per row.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

from libs.kleer.resources import AGREEMENT, CLIENT, INVOICE, PRODUCT, PROJECT
from sim.kleer.schema import MAX_MONEY, SCHEMAS
from sim.kleer.store import CompanyBook, KleerStore, Record

DEFAULT_CURRENCY = "SEK"
DEFAULT_PAYMENT_DAYS = 30
DEFAULT_VAT_RATE = 0.25


class RuleBroken(Exception):
    """Kleer refuses the request (HTTP ``status``, default 400)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --- money -----------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _decimal(value: float) -> Decimal:
    return Decimal(repr(value))


def _exact(value: int | float) -> Decimal:
    return Decimal(value) if isinstance(value, int) else _decimal(value)


def _round(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def row_net(quantity: int | float, price: int, discount: dict[str, Any] | None = None) -> int:
    """A row's amount ex VAT in öre: quantity × price less the discount, rounded half up."""
    if isinstance(quantity, int) and not discount:
        return quantity * price
    net = _exact(quantity) * price
    if discount:
        if discount.get("percentage") is not None:
            net = net * (100 - _exact(discount["percentage"])) / 100
        if discount.get("absolute") is not None:
            net -= discount["absolute"]
    return _round(net)


def row_vat(net: int, rate: int | float | None) -> int:
    if not rate:
        return 0
    if rate == DEFAULT_VAT_RATE and net % 4 == 0:
        return net // 4
    return _round(net * _exact(rate))


def invoice_totals(rows: list[Record]) -> tuple[int, int]:
    """``(amount, vat)`` in öre of an invoice's rows."""
    amount = vat = 0
    for row in rows:
        net = row_net(row["quantity"], row["price"], row.get("discount"))
        amount += net
        vat += row_vat(net, row.get("vat"))
    return amount, vat


# --- records ----------------------------------------------------------------------------------------


def complete(resource: str, values: dict[str, Any]) -> Record:
    """A full record: every schema field present, in schema order (missing ones are null)."""
    return {name: values.get(name) for name in SCHEMAS[resource]}


def create(store: KleerStore, book: CompanyBook, resource: str, body: dict[str, Any]) -> Record:
    """Store a new record built from a validated create body; returns it."""
    build = _BUILDERS[resource]
    values = build(store, book, body, None)
    values["id"] = store.next_id()
    record = complete(resource, values)
    book.tables[resource].insert(record)
    if resource == INVOICE.name:
        book.remember_invoice(record)
    return record


def update(store: KleerStore, book: CompanyBook, resource: str, record_id: int, body: dict[str, Any]) -> Record:
    """Apply a validated update body (top-level fields replace the stored ones); returns the new record."""
    table = book.tables[resource]
    old = table.get(record_id)
    if old is None:
        raise RuleBroken(f"{resource} {record_id} not found", 404)
    if resource == INVOICE.name and old["certified"]:
        raise RuleBroken(
            f"client invoice {old['invoice-nr']} is certified and cannot be changed; credit it instead"
        )
    if resource == AGREEMENT.name and old["deleted"]:
        raise RuleBroken(f"client agreement {record_id} is deleted and cannot be changed")
    values = _BUILDERS[resource](store, book, body, old)
    values["id"] = record_id
    if resource == AGREEMENT.name:
        values["revision-nr"] = old["revision-nr"] + 1
    record = complete(resource, values)
    table.replace(record)
    if resource == INVOICE.name:
        book.forget_invoice(old)
        book.remember_invoice(record)
    return record


def delete(book: CompanyBook, resource: str, record_id: int) -> Record:
    """Delete a record (agreements are only marked ``deleted``, as a new revision); returns what was deleted."""
    table = book.tables[resource]
    record = table.get(record_id)
    if record is None:
        raise RuleBroken(f"{resource} {record_id} not found", 404)
    if resource == AGREEMENT.name:
        if record["deleted"]:
            raise RuleBroken(f"client agreement {record_id} is already deleted")
        marked = {**record, "deleted": True, "revision-nr": record["revision-nr"] + 1}
        table.replace(marked)
        return marked
    if resource == INVOICE.name:
        if record["certified"]:
            raise RuleBroken(
                f"client invoice {record['invoice-nr']} is certified and cannot be deleted; credit it instead"
            )
        book.forget_invoice(record)
    if resource == CLIENT.name:
        _refuse_if_client_in_use(book, record_id)
    table.remove(record_id)
    return record


def saved_answer(resource: str, record: Record) -> dict[str, Any]:
    """The body of ``{"saved": ...}`` after an update: the id (agreements: and the new revision)."""
    if resource == AGREEMENT.name:
        return {"id": record["id"], "revision-nr": record["revision-nr"]}
    return {"id": record["id"]}


# --- per resource -----------------------------------------------------------------------------------


def _client(store: KleerStore, book: CompanyBook, body: dict[str, Any], old: Record | None) -> dict[str, Any]:
    values = {**old, **body} if old is not None else dict(body)
    if old is None:
        values.setdefault("active", True)
        values.setdefault("country-code", "SE")
        values.setdefault("currency-type", DEFAULT_CURRENCY)
        values.setdefault("payment-days", DEFAULT_PAYMENT_DAYS)
        values.setdefault("delivery-type", "Email")
    return _no_nulls(values, "active", "currency-type", "country-code")


def _product(store: KleerStore, book: CompanyBook, body: dict[str, Any], old: Record | None) -> dict[str, Any]:
    values = {**old, **body} if old is not None else dict(body)
    if old is None:
        values.setdefault("type", "Services")
        values.setdefault("unit", "st")
        values.setdefault("price", 0)
        values.setdefault("vat-percentage", 25)
    return values


def _invoice(store: KleerStore, book: CompanyBook, body: dict[str, Any], old: Record | None) -> dict[str, Any]:
    values = {**old, **body} if old is not None else dict(body)
    client = _referenced(book, CLIENT.name, values.get("client-ref"), "client-ref")
    assert client is not None  # required by the schema
    _referenced(book, AGREEMENT.name, values.get("client-agreement-ref"), "client-agreement-ref")
    debit_nr = values.get("debit-invoice-nr")
    if debit_nr is not None and debit_nr not in book.invoice_ids_by_nr:
        raise RuleBroken(f"debit-invoice-nr {debit_nr}: no client invoice with that number")
    wanted_nr = values.get("invoice-nr")
    owner = book.invoice_ids_by_nr.get(wanted_nr) if wanted_nr is not None else None
    if owner is not None and (old is None or owner != old["id"]):
        raise RuleBroken(f"invoice-nr {wanted_nr} is already used by another client invoice")
    if old is None:
        values["invoice-nr"] = book.take_invoice_nr(wanted_nr)
    elif wanted_nr is None:
        values["invoice-nr"] = old["invoice-nr"]
    if old is None or "rows" in body:
        values["rows"] = [
            _row(store, book, row, index, "rows", with_vat=True) for index, row in enumerate(values.get("rows") or [])
        ]
    amount, vat = invoice_totals(values["rows"])
    if abs(amount) > MAX_MONEY or abs(amount + vat) > MAX_MONEY:
        raise RuleBroken(f"the invoice's total is beyond {MAX_MONEY} öre: check the rows' quantities and prices")
    values["amount"], values["vat"] = amount, vat
    today = store.today()
    invoice_date = values.get("invoice-date") or today.isoformat()
    values["invoice-date"] = invoice_date
    if values.get("due-date") is None:
        days: int = DEFAULT_PAYMENT_DAYS if client.get("payment-days") is None else client["payment-days"]
        values["due-date"] = (date.fromisoformat(invoice_date) + timedelta(days=days)).isoformat()
    values["currency"] = values.get("currency") or client.get("currency-type") or DEFAULT_CURRENCY
    if old is None:
        values.setdefault("invoice-address", client.get("address"))
        values.setdefault("invoice-email", client.get("email"))
        values.setdefault("delivery-method", client.get("delivery-type"))
    if body.get("remaining") is None and (old is None or (amount, vat) != (old["amount"], old["vat"])):
        values["remaining"] = amount + vat  # unpaid in full until a payment says otherwise
    values["certified"] = bool(values.get("certified"))
    values["sent"] = bool(values.get("sent"))
    return values


def _agreement(store: KleerStore, book: CompanyBook, body: dict[str, Any], old: Record | None) -> dict[str, Any]:
    values = {**old, **body} if old is not None else dict(body)
    client = _referenced(book, CLIENT.name, values.get("client-ref"), "client-ref")
    assert client is not None
    for key in ("first-invoice-rows", "recurring-rows"):
        if old is not None and key not in body:
            continue
        values[key] = [
            _row(store, book, row, index, key, with_vat=False) for index, row in enumerate(values.get(key) or [])
        ]
    if old is None:
        start = values.get("start-date") or store.today().isoformat()
        values["start-date"] = start
        values.setdefault("start-invoice-date", start)
        values.setdefault("next-invoice-date", values["start-invoice-date"])
        values["revision-nr"] = 1
        values["deleted"] = False
        values["agreement-nr"] = values.get("agreement-nr") or book.take_agreement_nr()
    values["currency"] = values.get("currency") or client.get("currency-type") or DEFAULT_CURRENCY
    values["invoice-interval-months"] = values.get("invoice-interval-months") or 1
    values["invoice-day"] = values.get("invoice-day") or "INVOICE_AT_START"
    if values.get("payment-days") is None:
        values["payment-days"] = client.get("payment-days")
    return values


def _project(store: KleerStore, book: CompanyBook, body: dict[str, Any], old: Record | None) -> dict[str, Any]:
    values = {**old, **body} if old is not None else dict(body)
    client = _referenced(book, CLIENT.name, values.get("client"), "client")
    if old is None:
        values["number"] = values.get("number") or book.take_project_nr()
        values.setdefault("status", "Open")
        values.setdefault("active", True)
        values.setdefault("fixed-price", False)
        values.setdefault("opening-date", store.today().isoformat())
        if values.get("currency-type") is None:
            values["currency-type"] = (client or {}).get("currency-type") or DEFAULT_CURRENCY
    return _no_nulls(values, "status", "active", "fixed-price", "number")


_BUILDERS = {
    CLIENT.name: _client,
    PRODUCT.name: _product,
    INVOICE.name: _invoice,
    AGREEMENT.name: _agreement,
    PROJECT.name: _project,
}


def _row(
    store: KleerStore, book: CompanyBook, row: dict[str, Any], index: int, key: str, *, with_vat: bool
) -> dict[str, Any]:
    """A complete invoice or agreement row; price, unit, description and VAT default from its product."""
    where = f"{key}[{index}]"
    product = _referenced(book, PRODUCT.name, row.get("product"), f"{where}.product") or {}
    price = row.get("price")
    if price is None:
        price = product.get("price")
        if price is None:
            raise RuleBroken(f"{where}.price is required (or a product with a price)")
    full: dict[str, Any] = {}
    if with_vat:
        full["id"] = store.next_row_id()
    full["quantity"] = row["quantity"]
    full["price"] = price
    if with_vat:
        vat = row.get("vat")
        if vat is None:
            percentage = product.get("vat-percentage")
            vat = _percentage_to_rate(percentage) if percentage is not None else DEFAULT_VAT_RATE
        full["vat"] = vat
    full["product"] = row.get("product")
    full["unit"] = row.get("unit") if row.get("unit") is not None else product.get("unit")
    full["description"] = row.get("description") if row.get("description") is not None else product.get("name")
    full["discount"] = row.get("discount")
    return full


def _percentage_to_rate(percentage: int | float) -> int | float:
    rate = _exact(percentage) / 100
    return int(rate) if rate == rate.to_integral_value() else float(rate)


def _referenced(book: CompanyBook, resource: str, reference: Any, where: str) -> Record | None:
    if reference is None:
        return None
    record = book.tables[resource].get(reference["id"])
    if record is None:
        raise RuleBroken(f"{where}: no {resource} with id {reference['id']}")
    return record


def _no_nulls(values: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        if name in values and values[name] is None:
            raise RuleBroken(f"{name} cannot be null")
    return values


def _refuse_if_client_in_use(book: CompanyBook, client_id: int) -> None:
    for resource, key in ((INVOICE.name, "client-ref"), (AGREEMENT.name, "client-ref"), (PROJECT.name, "client")):
        for record in book.tables[resource]:
            reference = record.get(key)
            if reference is not None and reference["id"] == client_id:
                raise RuleBroken(f"client {client_id} has {resource} records and cannot be deleted; deactivate it")
