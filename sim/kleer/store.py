"""The simulator's in-memory book: companies, each with one table per resource.

Records are plain dicts in the exact JSON shape Kleer answers. A stored record
is never changed in place: every write stores a new dict (copy on write), so
the HTTP layer serialises stored records directly, without copying, and a
reader never sees half a change.

Ids come from one store-wide sequence, so an id names one record of one
resource only and every table's ids ascend in insertion order; lists page in
that order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

from libs.kleer.resources import AGREEMENT, CLIENT, INVOICE, PRODUCT, PROJECT, RESOURCES

Record = dict[str, Any]

DEFAULT_COMPANY_ID = 1
DEFAULT_TOKEN = "sim-kleer-token"
FIRST_ID = 1001
FIRST_NUMBER = 1001  # invoice-nr, agreement-nr and project number start here in each company


class Table:
    """The records of one resource in one company, by id, in ascending id order."""

    __slots__ = ("_filtered", "_ids", "records", "version")

    def __init__(self) -> None:
        self.records: dict[int, Record] = {}
        self._ids: list[int] | None = []
        self._filtered: dict[Any, tuple[int, list[int]]] = {}
        self.version = 0  # bumped by every write; invalidates cached filter results

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records.values())

    def get(self, record_id: int) -> Record | None:
        return self.records.get(record_id)

    def insert(self, record: Record) -> None:
        """Add a record whose id is higher than every id in the table."""
        record_id = record["id"]
        self.records[record_id] = record
        if self._ids is not None:
            self._ids.append(record_id)
        self.version += 1

    def replace(self, record: Record) -> None:
        self.records[record["id"]] = record
        self.version += 1

    def remove(self, record_id: int) -> Record | None:
        record = self.records.pop(record_id, None)
        if record is not None:
            self._ids = None
            self.version += 1
        return record

    def ids(self) -> list[int]:
        if self._ids is None:
            # dicts keep insertion order and ids were inserted ascending
            self._ids = list(self.records)
        return self._ids

    def select(self, key: Any, matches: Callable[[Record], bool]) -> list[int]:
        """Ids of the records for which ``matches`` is true, cached under ``key`` until the next write."""
        cached = self._filtered.get(key)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        records = self.records
        selected = [i for i in self.ids() if matches(records[i])]
        if len(self._filtered) > 32:
            self._filtered.clear()
        self._filtered[key] = (self.version, selected)
        return selected

    def page(self, ids: list[int], offset: int, limit: int) -> list[Record]:
        records = self.records
        return [records[i] for i in ids[offset : offset + limit]]


class CompanyBook:
    """One Kleer company: its tables and its number series."""

    def __init__(self, company_id: int, name: str) -> None:
        self.company_id = company_id
        self.name = name
        self.tables: dict[str, Table] = {r.name: Table() for r in RESOURCES}
        self.invoice_ids_by_nr: dict[int, int] = {}
        self.credited_invoice_nrs: set[int] = set()  # debit invoices that a credit invoice names
        self.next_invoice_nr = FIRST_NUMBER
        self.next_agreement_nr = FIRST_NUMBER
        self.next_project_nr = FIRST_NUMBER

    @property
    def clients(self) -> Table:
        return self.tables[CLIENT.name]

    @property
    def products(self) -> Table:
        return self.tables[PRODUCT.name]

    @property
    def invoices(self) -> Table:
        return self.tables[INVOICE.name]

    @property
    def agreements(self) -> Table:
        return self.tables[AGREEMENT.name]

    @property
    def projects(self) -> Table:
        return self.tables[PROJECT.name]

    def remember_invoice(self, invoice: Record) -> None:
        """Index a stored invoice by number (and as a credit of its debit invoice)."""
        self.invoice_ids_by_nr[invoice["invoice-nr"]] = invoice["id"]
        if invoice["debit-invoice-nr"] is not None:
            self.credited_invoice_nrs.add(invoice["debit-invoice-nr"])

    def forget_invoice(self, invoice: Record) -> None:
        self.invoice_ids_by_nr.pop(invoice["invoice-nr"], None)
        if invoice["debit-invoice-nr"] is not None:
            self.credited_invoice_nrs.discard(invoice["debit-invoice-nr"])

    def take_invoice_nr(self, wanted: int | None = None) -> int:
        number = wanted if wanted is not None else self.next_invoice_nr
        self.next_invoice_nr = max(self.next_invoice_nr, number + 1)
        return number

    def take_agreement_nr(self) -> str:
        number = self.next_agreement_nr
        self.next_agreement_nr += 1
        return str(number)

    def take_project_nr(self) -> str:
        number = self.next_project_nr
        self.next_project_nr += 1
        return f"P{number}"

    def counts(self) -> dict[str, int]:
        return {name: len(table) for name, table in self.tables.items()}


class KleerStore:
    """Every simulated company, the accepted tokens and the id sequences.

    ``today`` is the simulator's calendar date (defaults for new records); pin
    it for reproducible runs.
    """

    def __init__(
        self,
        *,
        company_id: int = DEFAULT_COMPANY_ID,
        token: str = DEFAULT_TOKEN,
        today: date | None = None,
    ) -> None:
        self.default_company_id = company_id
        self.tokens: set[str] = {token}
        self.fixed_today = today
        self.companies: dict[int, CompanyBook] = {}
        self._next_id = FIRST_ID
        self._next_row_id = 1
        self.add_company(company_id)

    def today(self) -> date:
        return self.fixed_today or date.today()

    def next_id(self) -> int:
        value = self._next_id
        self._next_id += 1
        return value

    def next_row_id(self) -> int:
        value = self._next_row_id
        self._next_row_id += 1
        return value

    def take_ids(self, count: int) -> range:
        """Reserve ``count`` consecutive record ids (bulk seeding)."""
        start = self._next_id
        self._next_id += count
        return range(start, start + count)

    def take_row_ids(self, count: int) -> range:
        start = self._next_row_id
        self._next_row_id += count
        return range(start, start + count)

    def add_company(self, company_id: int, name: str | None = None) -> CompanyBook:
        book = self.companies.get(company_id)
        if book is None:
            book = CompanyBook(company_id, name or f"Simulated company {company_id}")
            self.companies[company_id] = book
        return book

    def company(self, company_id: int | None = None) -> CompanyBook:
        """The book of ``company_id`` (default: the default company); ``KeyError`` if unknown."""
        return self.companies[self.default_company_id if company_id is None else company_id]

    def reset(self) -> None:
        """Forget every record and company except an empty default company."""
        self.companies.clear()
        self._next_id = FIRST_ID
        self._next_row_id = 1
        self.add_company(self.default_company_id)

    def summary(self) -> dict[str, Any]:
        return {
            "default-company-id": self.default_company_id,
            "today": self.today().isoformat(),
            "companies": {str(cid): book.counts() for cid, book in self.companies.items()},
        }

    def dump(self, company_id: int | None = None, resource: str | None = None) -> dict[str, Any]:
        """Every record (of one company and/or resource when given), for inspection."""
        books = [self.company(company_id)] if company_id is not None else list(self.companies.values())
        return {
            str(book.company_id): {
                name: list(table)
                for name, table in book.tables.items()
                if resource is None or name == resource
            }
            for book in books
        }
