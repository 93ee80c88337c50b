"""Change a chosen share of a seeded book the way a month of bookkeeping would, between two polls.

``mutate(store, share=0.05, seed=7)`` picks ``share`` of each resource's
records (at least one when the table is not empty) and changes each in a
realistic way, returning the ids it changed, created and deleted:

- clients: new e-mail, phone, address, payment terms, delivery type or name; a few deactivated;
- products: new price or name;
- invoices: drafts are certified and sent (a few drafts are deleted instead), unpaid invoices
  are paid (some in part), a few paid ones are credited with a new credit invoice
  (``debit-invoice-nr``) and the rest stay as they are (a paid invoice is final);
- agreements: up- or downgraded recurring rows or a new next invoice date, each a new
  ``revision-nr``; a few are deleted (``deleted: true``, also a new revision);
- projects: status moves on (Draft -> Open -> Closed), budgets change;
- and a tenth as many new clients as were changed, each with one new invoice.

Every record is replaced by a new dict (the store's copy-on-write rule). The
same book, share and seed give the same changes.
"""

from __future__ import annotations

import math
import random
from datetime import date, timedelta
from typing import Any

from libs.kleer.resources import AGREEMENT, CLIENT, INVOICE, PRODUCT, PROJECT
from sim.kleer.seeding import CURRENCIES, BookGenerator
from sim.kleer.store import CompanyBook, KleerStore, Record
from sim.kleer.vocabulary import STREETS


def mutate(store: KleerStore, *, share: float, seed: int, company_id: int | None = None) -> dict[str, Any]:
    """Change ``share`` (0..1) of every resource of one company; returns what changed."""
    if not 0 <= share <= 1:
        raise ValueError(f"share must be between 0 and 1, got {share}")
    book = store.company(company_id)
    return _Mutation(store, book, random.Random(seed), store.today()).run(share, seed)


class _Mutation:
    def __init__(self, store: KleerStore, book: CompanyBook, rng: random.Random, today: date) -> None:
        self.store = store
        self.book = book
        self.rng = rng
        self.today = today
        self.generator = BookGenerator(store, book, rng, today)
        names = (CLIENT.name, PRODUCT.name, INVOICE.name, AGREEMENT.name, PROJECT.name)
        self.changed: dict[str, list[int]] = {name: [] for name in names}
        self.created: dict[str, list[int]] = {name: [] for name in names}
        self.deleted: dict[str, list[int]] = {name: [] for name in names}

    def run(self, share: float, seed: int) -> dict[str, Any]:
        book = self.book
        for resource, change in (
            (CLIENT.name, self.client),
            (PRODUCT.name, self.product),
            (INVOICE.name, self.invoice),
            (AGREEMENT.name, self.agreement),
            (PROJECT.name, self.project),
        ):
            table = book.tables[resource]
            for record_id in self.pick(table.ids(), share):
                record = table.get(record_id)
                if record is not None:
                    change(record)
        for _ in range(math.ceil(len(self.changed[CLIENT.name]) / 10)):
            currency = CURRENCIES[0] if self.rng.random() < 0.85 else CURRENCIES[1]
            client = self.generator.client(currency)
            invoice = self.generator.invoice(client, currency[4], None)
            self.created[CLIENT.name].append(client["id"])
            self.created[INVOICE.name].append(invoice["id"])
        return {
            "company-id": book.company_id,
            "share": share,
            "seed": seed,
            "changed": self.changed,
            "created": self.created,
            "deleted": self.deleted,
            "counts": {
                "changed": sum(map(len, self.changed.values())),
                "created": sum(map(len, self.created.values())),
                "deleted": sum(map(len, self.deleted.values())),
            },
        }

    def pick(self, ids: list[int], share: float) -> list[int]:
        if not ids or share <= 0:
            return []
        count = min(len(ids), max(1, round(share * len(ids))))
        return sorted(self.rng.sample(ids, count))

    def client(self, client: Record) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.25:
            local, _, domain = (client["email"] or "info@foretag.se").partition("@")
            new: dict[str, Any] = {"email": f"{'ekonomi' if local != 'ekonomi' else 'faktura'}@{domain}"}
        elif roll < 0.4:
            new = {"phone": f"0{rng.randrange(8, 99)}-{rng.randrange(100, 999)} {rng.randrange(10, 99)} 00"}
        elif roll < 0.6:
            street = f"{rng.choice(STREETS)} {rng.randrange(1, 120)}"
            new = {"address": {**(client["address"] or {}), "address1": street}}
        elif roll < 0.72:
            new = {
                "payment-days": rng.choice(
                    [d for d in (10, 15, 20, 30, 45, 60) if d != client["payment-days"]]
                )
            }
        elif roll < 0.84:
            new = {"delivery-type": "Efaktura" if client["delivery-type"] != "Efaktura" else "Email"}
        elif roll < 0.95:
            name = client["name"]
            new = {"name": name[:-3] + " Sverige AB" if name.endswith(" AB") else name + " Nord"}
        else:
            new = {"active": not client["active"]}
        self.book.clients.replace({**client, **new})
        self.changed[CLIENT.name].append(client["id"])

    def product(self, product: Record) -> None:
        if self.rng.random() < 0.8:
            factor = self.rng.choice((0.9, 0.95, 1.05, 1.1, 1.15))
            new: dict[str, Any] = {"price": int(round((product["price"] or 10000) * factor, -2))}
        else:
            new = {"name": product["name"] + " (ny)"}
        self.book.products.replace({**product, **new})
        self.changed[PRODUCT.name].append(product["id"])

    def invoice(self, invoice: Record) -> None:
        book, today = self.book, self.today
        table = book.invoices
        if not invoice["certified"]:
            if self.rng.random() < 0.15:
                table.remove(invoice["id"])
                book.forget_invoice(invoice)
                self.deleted[INVOICE.name].append(invoice["id"])
                return
            table.replace({**invoice, "certified": True, "sent": True, "invoice-date": today.isoformat(),
                           "due-date": _due(today, invoice), "delivery-date": today.isoformat()})
        elif invoice["remaining"] > 0:
            remaining = invoice["remaining"] // 2 if self.rng.random() < 0.2 else 0
            table.replace({**invoice, "remaining": remaining, "last-payment-date": today.isoformat()})
        elif (
            invoice["debit-invoice-nr"] is None
            and invoice["amount"] > 0
            and invoice["invoice-nr"] not in book.credited_invoice_nrs
            and self.rng.random() < 0.15
        ):
            credit = self.generator.credit_invoice(invoice)  # the paid debit invoice itself stays as it is
            self.created[INVOICE.name].append(credit["id"])
            return
        else:
            return  # a paid invoice is final: nothing about it changes
        self.changed[INVOICE.name].append(invoice["id"])

    def agreement(self, agreement: Record) -> None:
        if agreement["deleted"]:
            return
        rng = self.rng
        roll = rng.random()
        if roll < 0.1:
            new: dict[str, Any] = {"deleted": True}
        elif roll < 0.7 and agreement["recurring-rows"]:
            rows = list(agreement["recurring-rows"])
            index = rng.randrange(len(rows))
            step = rng.choice((-1, 1, 1, 2, 5)) if rows[index]["quantity"] > 1 else rng.choice((1, 2, 5))
            rows[index] = {**rows[index], "quantity": rows[index]["quantity"] + step}
            new = {"recurring-rows": rows}
        else:
            months = agreement["invoice-interval-months"]
            current = agreement["next-invoice-date"] or self.today.isoformat()
            new = {
                "next-invoice-date": (date.fromisoformat(current) + timedelta(days=30 * months)).isoformat()
            }
        self.book.agreements.replace({**agreement, **new, "revision-nr": agreement["revision-nr"] + 1})
        self.changed[AGREEMENT.name].append(agreement["id"])

    def project(self, project: Record) -> None:
        status = project["status"]
        today = self.today.isoformat()
        if status == "Draft":
            new: dict[str, Any] = {"status": "Open", "opening-date": today}
        elif status == "Open" and self.rng.random() < 0.5:
            new = {"status": "Closed", "active": False, "closing-date": today}
        else:
            hours = (project["budget-hours"] or 0) + self.rng.choice((10, 20, 40, 80))
            new = {"budget-hours": hours, "budget-amount": (project["budget-amount"] or 0) + 95000 * 10}
        self.book.projects.replace({**project, **new})
        self.changed[PROJECT.name].append(project["id"])


def _due(today: date, invoice: Record) -> str:
    terms = date.fromisoformat(invoice["due-date"]) - date.fromisoformat(invoice["invoice-date"])
    return (today + terms).isoformat()
