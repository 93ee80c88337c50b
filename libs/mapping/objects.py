"""Object identities on both sides, and the HubSpot association types we write.

One home for: the Kleer object type names used throughout kleer-sync
(``client``, ``product``, ``invoice``, ``agreement``, ``project``,
``line_item``), the HubSpot object each maps to (path name and type id), the
property names every record carries (``kleer_id``) and the deal properties that
link a deal to the Kleer records it spawned, and the association type ids.

Association type ids are HUBSPOT_DEFINED ids from HubSpot's associations v4
documentation, as recorded in ``shared/hubspot-api.md``. Project ⇄ company
(1236 / 1237) and project ⇄ deal (1238 / 1239) are not in that file; they come
from HubSpot's Projects API (beta) reference, which lists PROJECT_TO_COMPANY
1236, COMPANY_TO_PROJECT 1237, PROJECT_TO_DEAL 1238, DEAL_TO_PROJECT 1239. If
a portal rejects them, the documented fallback is the label-free "default"
association endpoint (``PUT /crm/v4/objects/{from}/{id}/associations/default/{to}/{id}``),
which needs no type id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

# --- Kleer object types (the names used in the mappings file and in stream names) ---
CLIENT = "client"
PRODUCT = "product"
INVOICE = "invoice"
AGREEMENT = "agreement"
PROJECT = "project"
LINE_ITEM = "line_item"

KLEER_OBJECT_TYPES: tuple[str, ...] = (CLIENT, PRODUCT, INVOICE, AGREEMENT, PROJECT, LINE_ITEM)
#: Object types HubSpot may write back to Kleer (webhooks and workflow actions).
INBOUND_OBJECT_TYPES: tuple[str, ...] = (CLIENT, PROJECT)

# --- Line item kinds and their stable ids ---
ROW = "row"
RECURRING = "recurring"
FIRST = "first"
LINE_ITEM_KINDS: tuple[str, ...] = (ROW, RECURRING, FIRST)


def line_item_id(parent_id: object, kind: str, number: int) -> str:
    """Stable line item id: ``{invoice-id}-row-{n}``, ``{agreement-id}-recurring-{n}``, ``{agreement-id}-first-{n}``.

    ``number`` is the 1-based position of the row in its Kleer list.
    """
    if kind not in LINE_ITEM_KINDS:
        raise ValueError(f"unknown line item kind {kind!r}; expected one of {', '.join(LINE_ITEM_KINDS)}")
    if number < 1:
        raise ValueError(f"line item numbers start at 1, got {number}")
    return f"{parent_id}-{kind}-{number}"


# --- HubSpot objects ---
@dataclass(frozen=True)
class HubSpotObject:
    """A HubSpot CRM object: its API path name, type id and singular (webhook) name."""

    name: str
    type_id: str
    singular: str

    def __str__(self) -> str:
        return self.name


COMPANIES = HubSpotObject("companies", "0-2", "company")
DEALS = HubSpotObject("deals", "0-3", "deal")
PRODUCTS = HubSpotObject("products", "0-7", "product")
LINE_ITEMS = HubSpotObject("line_items", "0-8", "line_item")
INVOICES = HubSpotObject("invoices", "0-53", "invoice")
SUBSCRIPTIONS = HubSpotObject("subscriptions", "0-69", "subscription")
# Projects live under /crm/objects/v3/projects/... in HubSpot's spec (see hubspot-api.md).
PROJECTS = HubSpotObject("projects", "0-970", "project")

HUBSPOT_OBJECTS: tuple[HubSpotObject, ...] = (
    COMPANIES,
    DEALS,
    PRODUCTS,
    LINE_ITEMS,
    INVOICES,
    SUBSCRIPTIONS,
    PROJECTS,
)

#: Kleer object type -> the HubSpot object it syncs to.
HUBSPOT_OBJECT_FOR: Mapping[str, HubSpotObject] = MappingProxyType(
    {
        CLIENT: COMPANIES,
        PRODUCT: PRODUCTS,
        INVOICE: INVOICES,
        AGREEMENT: SUBSCRIPTIONS,
        PROJECT: PROJECTS,
        LINE_ITEM: LINE_ITEMS,
    }
)
#: HubSpot object name -> Kleer object type (deals have none: they are never synced as records).
KLEER_OBJECT_FOR: Mapping[str, str] = MappingProxyType({h.name: k for k, h in HUBSPOT_OBJECT_FOR.items()})


def hubspot_object(name: str) -> HubSpotObject:
    """Look up a HubSpot object by path name (``companies``), singular (``company``) or type id (``0-2``)."""
    for obj in HUBSPOT_OBJECTS:
        if name in (obj.name, obj.type_id, obj.singular):
            return obj
    known = ", ".join(o.name for o in HUBSPOT_OBJECTS)
    raise ValueError(f"unknown HubSpot object {name!r}; expected one of {known} (or their type ids)")


def resolve_object_type(name: str) -> str:
    """Return the Kleer object type for a Kleer type name or the HubSpot object it maps to.

    Accepts ``client``, ``companies``, ``company`` or ``0-2`` alike (webhooks name
    projects by type id ``0-970``). Raises ``ValueError`` naming the valid choices.
    """
    if name in KLEER_OBJECT_TYPES:
        return name
    try:
        obj = hubspot_object(name)
    except ValueError:
        obj = None
    if obj is not None and obj.name in KLEER_OBJECT_FOR:
        return KLEER_OBJECT_FOR[obj.name]
    raise ValueError(
        f"unknown object type {name!r}; expected a Kleer object type ({', '.join(KLEER_OBJECT_TYPES)}) "
        "or the HubSpot object it syncs to"
    )


# --- Properties with a fixed meaning (one home for their names) ---
KLEER_ID = "kleer_id"
DEAL_KLEER_INVOICE_ID = "kleer_invoice_id"
DEAL_KLEER_AGREEMENT_ID = "kleer_agreement_id"
DEAL_KLEER_PROJECT_ID = "kleer_project_id"
#: Line item property holding the Kleer product id (product rows).
LINE_ITEM_KLEER_PRODUCT_ID = "kleer_product_id"


@dataclass(frozen=True)
class PropertyGroup:
    """The HubSpot property group our custom properties live in (create it before the properties)."""

    name: str
    label: str

    def to_api(self) -> dict[str, object]:
        """Body for ``POST /crm/v3/properties/{object}/groups``."""
        return {"name": self.name, "label": self.label, "displayOrder": -1}


PROPERTY_GROUP = PropertyGroup("kleer", "Kleer")


# --- Associations ---
@dataclass(frozen=True)
class AssociationType:
    """A HUBSPOT_DEFINED association type, with the id of the opposite direction."""

    from_object: HubSpotObject
    to_object: HubSpotObject
    type_id: int
    reverse_type_id: int
    category: str = "HUBSPOT_DEFINED"

    def spec(self) -> dict[str, object]:
        """The ``types`` entry of an associations v4 batch create input."""
        return {"associationCategory": self.category, "associationTypeId": self.type_id}

    def reverse(self) -> AssociationType:
        return AssociationType(
            self.to_object, self.from_object, self.reverse_type_id, self.type_id, self.category
        )


INVOICE_TO_COMPANY = AssociationType(INVOICES, COMPANIES, 179, 180)
INVOICE_TO_LINE_ITEM = AssociationType(INVOICES, LINE_ITEMS, 409, 410)
INVOICE_TO_DEAL = AssociationType(INVOICES, DEALS, 175, 176)
SUBSCRIPTION_TO_COMPANY = AssociationType(SUBSCRIPTIONS, COMPANIES, 297, 298)
SUBSCRIPTION_TO_LINE_ITEM = AssociationType(SUBSCRIPTIONS, LINE_ITEMS, 301, 302)
DEAL_TO_COMPANY = AssociationType(DEALS, COMPANIES, 341, 342)
DEAL_TO_LINE_ITEM = AssociationType(DEALS, LINE_ITEMS, 19, 20)
PROJECT_TO_COMPANY = AssociationType(PROJECTS, COMPANIES, 1236, 1237)
PROJECT_TO_DEAL = AssociationType(PROJECTS, DEALS, 1238, 1239)

ASSOCIATION_TYPES: tuple[AssociationType, ...] = (
    INVOICE_TO_COMPANY,
    INVOICE_TO_LINE_ITEM,
    INVOICE_TO_DEAL,
    SUBSCRIPTION_TO_COMPANY,
    SUBSCRIPTION_TO_LINE_ITEM,
    DEAL_TO_COMPANY,
    DEAL_TO_LINE_ITEM,
    PROJECT_TO_COMPANY,
    PROJECT_TO_DEAL,
)


def association_type(from_object: str, to_object: str) -> AssociationType:
    """The association type from one HubSpot object to another (either direction of the table).

    Objects may be named by path name, singular or type id. Raises ``KeyError``
    when we do not write that association. Answered from a cache: the pusher asks once per link (140,000
    line items in the outbound benchmark), and the table never changes.
    """
    return _association_type(from_object, to_object)


@lru_cache(maxsize=256)
def _association_type(from_object: str, to_object: str) -> AssociationType:
    src, dst = hubspot_object(from_object), hubspot_object(to_object)
    for assoc in ASSOCIATION_TYPES:
        if (assoc.from_object, assoc.to_object) == (src, dst):
            return assoc
        if (assoc.to_object, assoc.from_object) == (src, dst):
            return assoc.reverse()
    raise KeyError(f"no association type from {src.name} to {dst.name} is defined in libs/mapping/objects.py")
