"""The Kleer resources kleer-sync uses and the paging contract of their lists: defined once here.

Every resource lives under ``{base}/company/{company-id}/``. A list is read
with ``GET {path}?offset=O&limit=L`` and answers

    {"<list_key>": [record, ...], "offset": O, "limit": n_returned, "size": total}

(the JSON form of Kleer's ``paged-result``: ``limit`` is what the server used,
which may be lower than asked and always equals the number of records
returned; ``size`` is the total number of records matching the filters).
Records in list answers are complete: invoices carry their ``rows``,
agreements their ``first-invoice-rows`` and ``recurring-rows``.
"""

from __future__ import annotations

from dataclasses import dataclass

COMPANY_ROUTE = "/company/{company-id}"
OFFSET_PARAM = "offset"
LIMIT_PARAM = "limit"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Resource:
    """One Kleer resource: its name, URL path below the company and list answer key."""

    name: str  # kebab-case name, also the JSON key of a list answer and the XML element of one record
    path: str  # below /company/{company-id}/
    xml_list_tag: str  # the XML element wrapping a list answer

    @property
    def list_key(self) -> str:
        return self.name

    @property
    def collection_route(self) -> str:
        """Route template of the collection (list, PUT create), e.g. ``/company/{company-id}/client``."""
        return f"{COMPANY_ROUTE}/{self.path}"

    @property
    def item_route(self) -> str:
        """Route template of one record (GET, POST update, DELETE)."""
        return f"{COMPANY_ROUTE}/{self.path}/{{id}}"


CLIENT = Resource("client", "client", "clients")
PRODUCT = Resource("product", "product", "products")
INVOICE = Resource("client-invoice", "client/invoice", "client-invoices")
AGREEMENT = Resource("client-agreement", "client/agreement", "client-agreements")
PROJECT = Resource("client-project", "client-project", "client-projects")

RESOURCES: tuple[Resource, ...] = (CLIENT, PRODUCT, INVOICE, AGREEMENT, PROJECT)
BY_NAME: dict[str, Resource] = {r.name: r for r in RESOURCES}

# List filters Kleer documents for client invoices (invoice date range, inclusive, and a free-text query).
INVOICE_FROM_DATE_PARAM = "from-date"
INVOICE_TO_DATE_PARAM = "to-date"
INVOICE_QUERY_PARAM = "query"
