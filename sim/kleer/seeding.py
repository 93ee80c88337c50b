"""A realistic Kleer book from a fixed random seed.

``seed(store, n_clients=..., seed=...)`` fills one company with clients
(Swedish-looking names, org numbers ``NNNNNN-NNNN`` with a valid check digit,
VAT numbers ``SE<orgno>01``; SEK, EUR and NOK), products, invoices (mostly
certified, 1–10 rows, some drafts, some paid, some credit invoices with
``debit-invoice-nr``), agreements (monthly, quarterly, yearly
``invoice-interval-months``; a few deleted) and projects. The same seed, size
and ``as_of`` date give the same book, record for record.

Records are built directly in their stored shape (the schema's key order)
rather than through the HTTP rules, because seeding 100,000 clients must take
seconds; a unit test checks that every seeded record passes the same
validation and totals as one created over HTTP. Small immutable parts (product
references, addresses) are shared between records, which is safe because the
store never changes a record in place.
"""

from __future__ import annotations

import bisect
import gc
import itertools
import random
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, TypeVar

from sim.kleer.rules import invoice_totals, row_net
from sim.kleer.store import CompanyBook, KleerStore, Record
from sim.kleer.vocabulary import (
    AGREEMENT_DESCRIPTIONS,
    FIRST_NAMES,
    NATURE,
    PLACE_SUFFIXES,
    PLACES,
    PRODUCT_VARIANTS,
    PRODUCTS,
    PROJECT_NAMES,
    STREETS,
    SURNAMES,
    TRADES,
)

# currency, country code, country, weight, price divisor (SEK öre -> this currency's cents)
CURRENCIES = (
    ("SEK", "SE", "Sverige", 85, 1.0),
    ("EUR", "FI", "Finland", 10, 11.5),
    ("NOK", "NO", "Norge", 5, 1.0),
)
INTERVALS = (1, 3, 12)  # monthly, quarterly, yearly
INTERVAL_WEIGHTS = (60, 25, 15)
ROW_COUNT_WEIGHTS = (35, 22, 13, 9, 6, 5, 4, 3, 2, 1)  # 1..10 rows, mostly few
CURRENCY_WEIGHTS = tuple(c[3] for c in CURRENCIES)
LARGE_BOOK = 10_000  # clients from which seeding freezes the book for the cycle collector
USERS = ({"id": 1}, {"id": 2}, {"id": 3})  # "our reference": the company's own staff


T = TypeVar("T")


@dataclass(frozen=True)
class SeedSummary:
    company_id: int
    seed: int
    clients: int
    products: int
    invoices: int
    credit_invoices: int
    agreements: int
    projects: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {key.replace("_", "-"): value for key, value in asdict(self).items()}


def seed(
    store: KleerStore,
    *,
    n_clients: int,
    seed: int = 1,
    company_id: int | None = None,
    as_of: date | None = None,
    invoices_per_client: float = 2.0,
    agreement_share: float = 0.25,
    project_share: float = 0.15,
) -> SeedSummary:
    """Add a seeded book to ``company_id`` (default: the store's default company, created if missing)."""
    if n_clients < 0:
        raise ValueError("n_clients must not be negative")
    started = time.perf_counter()
    book = store.add_company(store.default_company_id if company_id is None else company_id)
    generator = BookGenerator(store, book, random.Random(seed), as_of or store.today())
    # Millions of new dicts would trigger the cycle collector again and again (most of the time of a
    # large seed); records hold no cycles, so it has nothing to find.
    collecting = gc.isenabled()
    gc.disable()
    try:
        generator.products(max(20, min(500, n_clients // 50)))
        generator.clients(n_clients, invoices_per_client, agreement_share, project_share)
    finally:
        if n_clients >= LARGE_BOOK:
            # Move the big, long-lived book out of the collector's sight, or its first full pass after
            # re-enabling (and every later one) rescans millions of records for nothing.
            gc.freeze()
        if collecting:
            gc.enable()
    return SeedSummary(
        company_id=book.company_id,
        seed=seed,
        clients=generator.counts["client"],
        products=generator.counts["product"],
        invoices=generator.counts["client-invoice"],
        credit_invoices=generator.counts["credit"],
        agreements=generator.counts["client-agreement"],
        projects=generator.counts["client-project"],
        seconds=round(time.perf_counter() - started, 3),
    )


def luhn_digit(digits: str) -> int:
    """The check digit Swedish organisation numbers end with (Luhn, mod 10)."""
    total = 0
    for index, char in enumerate(digits):
        value = int(char) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return (10 - total % 10) % 10


def slug(name: str) -> str:
    """``Björk & Söner AB`` -> ``bjorksoner``: a plausible e-mail domain part."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    words = [w for w in ascii_name.replace("&", " ").split() if w not in ("ab", "hb", "kb", "i")]
    return "".join(ch for ch in "".join(words) if ch.isalnum())[:30] or "foretag"


class Dice:
    """Fast draws from one seeded ``random.Random``: its ``randrange``/``choices`` cost microseconds each,
    which is most of the time of a 100,000-client seed."""

    def __init__(self, rng: random.Random) -> None:
        self.random = rng.random
        self._cumulative: dict[tuple[int, ...], list[int]] = {}

    def below(self, n: int) -> int:
        return int(self.random() * n)

    def between(self, low: int, high: int) -> int:
        """An integer in ``[low, high)``."""
        return low + int(self.random() * (high - low))

    def pick(self, options: Sequence[T]) -> T:
        return options[int(self.random() * len(options))]

    def weighted(self, options: Sequence[T], weights: tuple[int, ...]) -> T:
        cumulative = self._cumulative.get(weights)
        if cumulative is None:
            cumulative = self._cumulative[weights] = list(itertools.accumulate(weights))
        return options[bisect.bisect(cumulative, self.random() * cumulative[-1])]


class BookGenerator:
    """Builds the records of one company; ``counts`` tells what it added."""

    def __init__(self, store: KleerStore, book: CompanyBook, rng: random.Random, as_of: date) -> None:
        self.store = store
        self.book = book
        self.dice = Dice(rng)
        self.today = as_of.toordinal()
        self.counts = {"client": 0, "product": 0, "client-invoice": 0, "credit": 0, "client-agreement": 0,
                       "client-project": 0}
        self._products: list[Record] = []
        self._product_refs: dict[int, dict[str, int]] = {}
        # (reference, unit, description, price, VAT rate) per product: what an invoice row copies
        self._row_templates: list[tuple[dict[str, int], str, str, int, float]] = []
        self._recurring: list[Record] = []
        self._setup: Record | None = None
        self._dates: dict[int, str] = {}
        for product in book.products:
            self._remember(product)

    def _remember(self, product: Record) -> None:
        ref = {"id": product["id"]}
        self._products.append(product)
        self._product_refs[product["id"]] = ref
        rate = float(product["vat-percentage"] or 0) / 100
        self._row_templates.append((ref, product["unit"], product["name"], product["price"], rate))
        if product["unit"] == "mån":
            self._recurring.append(product)
        if self._setup is None and product["name"].startswith("Startavgift"):
            self._setup = product

    # --- helpers -----------------------------------------------------------------------------------

    def iso(self, ordinal: int) -> str:
        text = self._dates.get(ordinal)
        if text is None:
            text = self._dates[ordinal] = date.fromordinal(ordinal).isoformat()
        return text

    def company_name(self) -> str:
        dice = self.dice
        pattern = dice.random()
        trade = dice.pick(TRADES)
        if pattern < 0.25:
            return f"{dice.pick(SURNAMES)}s {trade} AB"
        if pattern < 0.45:
            return f"{dice.pick(PLACES)} {trade} AB"
        if pattern < 0.6:
            return f"{dice.pick(NATURE)}{trade.lower()} {dice.pick(PLACES)} AB"
        if pattern < 0.7:
            return f"{dice.pick(SURNAMES)} & {dice.pick(SURNAMES)} {trade} HB"
        if pattern < 0.85:
            return f"{trade} i {dice.pick(PLACES)} AB"
        if pattern < 0.93:
            return f"{dice.pick(NATURE)}{dice.pick(PLACE_SUFFIXES)} AB"
        return f"{dice.pick(SURNAMES)}s {trade} & Söner AB"

    def orgno(self, partnership: bool) -> str:
        dice = self.dice
        head = ("969" if partnership else dice.pick(("556", "559"))) + f"{dice.below(1_000_000):06d}"
        return f"{head[:6]}-{head[6:]}{luhn_digit(head)}"

    # --- products ------------------------------------------------------------------------------------

    def products(self, count: int) -> None:
        dice = self.dice
        table = self.book.products
        for index, record_id in enumerate(self.store.take_ids(count)):
            name, kind, unit, price, vat, _recurring = PRODUCTS[index % len(PRODUCTS)]
            variant = PRODUCT_VARIANTS[(index // len(PRODUCTS)) % len(PRODUCT_VARIANTS)]
            generation = index // (len(PRODUCTS) * len(PRODUCT_VARIANTS))
            product = {
                "id": record_id,
                "foreign-id": None,
                "name": f"{name}{variant}" + (f" v{generation + 1}" if generation else ""),
                "type": kind,
                "unit": unit,
                "price": price + 100 * dice.between(-20, 21) * (price // 10000),
                "ean": 7_300_000_000_000 + dice.below(100_000_000) * 10 if kind == "Goods" else None,
                "account-nr": 3001 if vat == 25 else (3002 if vat == 12 else 3003),
                "vat-percentage": vat,
            }
            table.insert(product)
            self._remember(product)
        self.counts["product"] += count

    # --- clients and their records ------------------------------------------------------------------

    def clients(
        self, count: int, invoices_per_client: float, agreement_share: float, project_share: float
    ) -> None:
        dice = self.dice
        currencies = [dice.weighted(CURRENCIES, CURRENCY_WEIGHTS) for _ in range(count)]
        for currency in currencies:
            client = self.client(currency)
            divisor = currency[4]
            agreements = []
            if dice.random() < agreement_share:
                agreements.append(self.agreement(client, divisor))
                if dice.random() < 0.1:
                    agreements.append(self.agreement(client, divisor))
            if dice.random() < project_share:
                self.project(client)
            invoice_count = int(invoices_per_client * 2 * dice.random() + 0.5)
            for index in range(invoice_count):
                agreement = agreements[0] if agreements and index == 0 else None
                self.invoice(client, divisor, agreement)

    def client(self, currency: tuple[str, str, str, int, float]) -> Record:
        dice = self.dice
        code, country_code, country, _weight, _divisor = currency
        name = self.company_name()
        partnership = name.endswith(" HB")
        orgno = self.orgno(partnership)
        digits = orgno.replace("-", "")
        place = dice.pick(PLACES)
        if country_code == "SE":
            vat_nr = f"SE{digits}01"
            phone = f"0{dice.between(8, 99)}-{dice.between(100, 999)} {dice.between(10, 99)} {dice.between(10, 99)}"
        elif country_code == "FI":
            vat_nr = f"FI{dice.between(10_000_000, 99_999_999)}"
            phone = f"+358 {dice.between(10, 50)} {dice.between(100_0000, 999_9999)}"
        else:
            vat_nr = f"NO{dice.between(900_000_000, 999_999_999)}MVA"
            phone = f"+47 {dice.between(200, 999)} {dice.between(10, 99)} {dice.between(100, 999)}"
        record_id = self.store.next_id()
        client = {
            "id": record_id,
            "foreign-id": None,
            "name": name,
            "contact": f"{dice.pick(FIRST_NAMES)} {dice.pick(SURNAMES)}",
            "address": {
                "address1": f"{dice.pick(STREETS)} {dice.between(1, 120)}",
                "address2": None,
                "zip-code": f"{dice.between(100, 985)} {dice.between(10, 99)}",
                "state": place,
                "country": country,
            },
            "email": f"{('info', 'faktura', 'ekonomi', 'kontakt')[dice.below(4)]}@{slug(name)}.se",
            "client-type": "Company",
            "country-code": country_code,
            "currency-type": code,
            "notes": None,
            "payment-days": (30, 30, 30, 10, 15, 20, 45, 60)[dice.below(8)],
            "orgno": orgno,
            "phone": phone,
            "delivery-type": ("Email", "Email", "Email", "Efaktura", "Mail", "Svea")[dice.below(6)],
            "vat-nr": vat_nr,
            "gln": None,
            "active": dice.random() < 0.95,
        }
        self.book.clients.insert(client)
        self.counts["client"] += 1
        return client

    def rows(self, count: int, divisor: float) -> list[Record]:
        dice = self.dice
        templates = self._row_templates
        rows = []
        for row_id in self.store.take_row_ids(count):
            ref, unit, description, price, rate = templates[dice.below(len(templates))]
            quantity: int | float = dice.between(1, 9)
            if unit == "tim" and dice.random() < 0.3:
                quantity += 0.5
            rows.append(
                {
                    "id": row_id,
                    "quantity": quantity,
                    "price": price if divisor == 1.0 else int(price / divisor),
                    "vat": rate,
                    "product": ref,
                    "unit": unit,
                    "description": description,
                    "discount": {"absolute": None, "percentage": 10} if dice.random() < 0.05 else None,
                }
            )
        return rows

    def invoice(self, client: Record, divisor: float, agreement: Record | None) -> Record:
        dice = self.dice
        book = self.book
        count = dice.weighted(range(1, 11), ROW_COUNT_WEIGHTS)
        rows = self.rows(count, divisor)
        amount, vat = invoice_totals(rows)
        invoice_day = self.today - dice.between(0, 730)
        due_day = invoice_day + client["payment-days"]
        draft = (invoice_day > self.today - 30 and dice.random() < 0.3) or dice.random() < 0.03
        paid = not draft and due_day < self.today and dice.random() < 0.9
        record_id = self.store.next_id()
        invoice_nr = book.take_invoice_nr()
        invoice = {
            "id": record_id,
            "invoice-nr": invoice_nr,
            "debit-invoice-nr": None,
            "client-ref": {"id": client["id"]},
            "your-reference": client["contact"],
            "our-reference": USERS[dice.below(3)],
            "invoice-address": client["address"],
            "invoice-email": client["email"],
            "invoice-date": self.iso(invoice_day),
            "due-date": self.iso(due_day),
            "delivery-date": self.iso(invoice_day),
            "amount": amount,
            "vat": vat,
            "currency": client["currency-type"],
            "certified": not draft,
            "sent": not draft,
            "remaining": 0 if paid else amount + vat,
            "last-payment-date": self.iso(min(self.today, due_day - dice.between(0, 10))) if paid else None,
            "agreement-nr": agreement["agreement-nr"] if agreement else None,
            "client-agreement-ref": {"id": agreement["id"]} if agreement else None,
            "delivery-method": client["delivery-type"],
            "rows": rows,
        }
        book.invoices.insert(invoice)
        book.remember_invoice(invoice)
        self.counts["client-invoice"] += 1
        if not draft and dice.random() < 0.04:
            self.credit_invoice(invoice)
        return invoice

    def credit_invoice(self, debit: Record) -> Record:
        """A certified credit invoice cancelling ``debit`` in full (negative quantities)."""
        book = self.book
        rows = [
            {**row, "id": row_id, "quantity": -row["quantity"]}
            for row, row_id in zip(debit["rows"], self.store.take_row_ids(len(debit["rows"])), strict=True)
        ]
        amount, vat = invoice_totals(rows)
        credit_day = min(
            self.today, date.fromisoformat(debit["invoice-date"]).toordinal() + self.dice.between(1, 20)
        )
        record_id = self.store.next_id()
        invoice_nr = book.take_invoice_nr()
        credit = {
            **debit,
            "id": record_id,
            "invoice-nr": invoice_nr,
            "debit-invoice-nr": debit["invoice-nr"],
            "invoice-date": self.iso(credit_day),
            "due-date": self.iso(credit_day),
            "delivery-date": self.iso(credit_day),
            "amount": amount,
            "vat": vat,
            "remaining": 0,
            "last-payment-date": None,
            "rows": rows,
        }
        book.invoices.insert(credit)
        book.remember_invoice(credit)
        book.invoices.replace({**debit, "remaining": 0})
        self.counts["client-invoice"] += 1
        self.counts["credit"] += 1
        return credit

    def agreement(self, client: Record, divisor: float) -> Record:
        dice = self.dice
        refs = self._product_refs
        interval = dice.weighted(INTERVALS, INTERVAL_WEIGHTS)
        recurring = []
        for _ in range(dice.weighted((1, 2, 3), (60, 30, 10))):
            product = self._recurring[dice.below(len(self._recurring))]
            price = product["price"] if divisor == 1.0 else int(product["price"] / divisor)
            recurring.append(
                {
                    "quantity": dice.pick((1, 1, 1, 2, 5, 10, 25)),
                    "price": price * interval,
                    "product": refs[product["id"]],
                    "unit": product["unit"],
                    "description": product["name"],
                    "discount": None,
                }
            )
        first = []
        setup = self._setup
        if setup is not None and dice.random() < 0.3:
            first.append(
                {
                    "quantity": 1,
                    "price": setup["price"],
                    "product": refs[setup["id"]],
                    "unit": setup["unit"],
                    "description": setup["name"],
                    "discount": None,
                }
            )
        start = self.today - dice.between(0, 1100)
        months_since = max(0, (self.today - start) // 30)
        next_invoice = start + (months_since // interval + 1) * interval * 30
        ended = dice.random() < 0.05
        revisions = dice.weighted((1, 2, 3), (70, 20, 10))
        record_id = self.store.next_id()
        agreement = {
            "id": record_id,
            "revision-nr": revisions,
            "client-ref": {"id": client["id"]},
            "description": f"{dice.pick(AGREEMENT_DESCRIPTIONS)} {client['name']}",
            "start-date": self.iso(start),
            "start-invoice-date": self.iso(start),
            "next-invoice-date": None if ended else self.iso(next_invoice),
            "end-date": self.iso(self.today - dice.between(1, 60)) if ended else None,
            "currency": client["currency-type"],
            "payment-days": client["payment-days"],
            "invoice-interval-months": interval,
            "invoice-day": "INVOICE_AT_START" if dice.random() < 0.8 else "INVOICE_AT_END",
            "agreement-nr": self.book.take_agreement_nr(),
            "deleted": dice.random() < 0.03,
            "first-invoice-rows": first,
            "recurring-rows": recurring,
        }
        self.book.agreements.insert(agreement)
        self.counts["client-agreement"] += 1
        return agreement

    def project(self, client: Record) -> Record:
        dice = self.dice
        status = dice.weighted(("Draft", "Open", "Closed"), (10, 60, 30))
        opening = self.today - dice.between(0, 700)
        hours = dice.between(10, 800)
        rate = 95000 if client["currency-type"] != "EUR" else 8500
        record_id = self.store.next_id()
        project = {
            "id": record_id,
            "client": {"id": client["id"]},
            "number": self.book.take_project_nr(),
            "name": f"{dice.pick(PROJECT_NAMES)} {client['address']['state']}",
            "fixed-price": dice.random() < 0.3,
            "currency-type": client["currency-type"],
            "active": status != "Closed",
            "your-reference": client["contact"],
            "comment": "",
            "payment-days": client["payment-days"],
            "budget-hours": hours,
            "budget-amount": row_net(hours, rate),
            "status": status,
            "opening-date": self.iso(opening),
            "closing-date": self.iso(min(self.today, opening + dice.between(30, 400)))
            if status == "Closed"
            else None,
        }
        self.book.projects.insert(project)
        self.counts["client-project"] += 1
        return project
