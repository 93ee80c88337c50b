"""HubSpot CRM object types, their ids and paths, and the association type ids we use.

One home for these facts (see ``shared/hubspot-api.md``): the client, the
simulator and the services import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ObjectType(StrEnum):
    """The CRM objects kleer-sync reads or writes; the value is HubSpot's path name."""

    COMPANIES = "companies"
    DEALS = "deals"
    PRODUCTS = "products"
    LINE_ITEMS = "line_items"
    INVOICES = "invoices"
    SUBSCRIPTIONS = "subscriptions"
    PROJECTS = "projects"


@dataclass(frozen=True)
class ObjectInfo:
    type: ObjectType
    type_id: str  # e.g. "0-2"
    objects_base: str  # the v3 objects endpoint prefix for this type
    webhook_name: str  # "company" → company.propertyChange; "object" → object.propertyChange + objectTypeId
    action_name: str  # objectType in workflow action payloads


OBJECTS: dict[ObjectType, ObjectInfo] = {
    ObjectType.COMPANIES: ObjectInfo(
        ObjectType.COMPANIES, "0-2", "/crm/v3/objects/companies", "company", "COMPANY"
    ),
    ObjectType.DEALS: ObjectInfo(ObjectType.DEALS, "0-3", "/crm/v3/objects/deals", "deal", "DEAL"),
    ObjectType.PRODUCTS: ObjectInfo(
        ObjectType.PRODUCTS, "0-7", "/crm/v3/objects/products", "product", "PRODUCT"
    ),
    ObjectType.LINE_ITEMS: ObjectInfo(
        ObjectType.LINE_ITEMS, "0-8", "/crm/v3/objects/line_items", "line_item", "LINE_ITEM"
    ),
    ObjectType.INVOICES: ObjectInfo(
        ObjectType.INVOICES, "0-53", "/crm/v3/objects/invoices", "object", "INVOICE"
    ),
    ObjectType.SUBSCRIPTIONS: ObjectInfo(
        ObjectType.SUBSCRIPTIONS, "0-69", "/crm/v3/objects/subscriptions", "object", "SUBSCRIPTION"
    ),
    # HubSpot's published spec puts projects under /crm/objects/v3/projects (note the order).
    ObjectType.PROJECTS: ObjectInfo(
        ObjectType.PROJECTS, "0-970", "/crm/objects/v3/projects", "object", "PROJECT"
    ),
}

_BY_ALIAS: dict[str, ObjectType] = {}
for _info in OBJECTS.values():
    _BY_ALIAS[_info.type.value] = _info.type
    _BY_ALIAS[_info.type_id] = _info.type
    _BY_ALIAS[_info.action_name.lower()] = _info.type
_BY_ALIAS.update({"company": ObjectType.COMPANIES, "deal": ObjectType.DEALS, "product": ObjectType.PRODUCTS,
                  "line_item": ObjectType.LINE_ITEMS, "lineitem": ObjectType.LINE_ITEMS,
                  "line_items": ObjectType.LINE_ITEMS, "invoice": ObjectType.INVOICES,
                  "subscription": ObjectType.SUBSCRIPTIONS, "project": ObjectType.PROJECTS})


def object_type(name: str) -> ObjectType | None:
    """The object type a path segment names (``companies``, ``company``, ``0-2``…), or None."""
    return _BY_ALIAS.get(name.lower())


# The property group HubSpot files an object's default properties under (used when a
# property spec names no group; the integration normally creates its own group).
DEFAULT_PROPERTY_GROUPS: dict[ObjectType, str] = {
    ObjectType.COMPANIES: "companyinformation",
    ObjectType.DEALS: "dealinformation",
    ObjectType.PRODUCTS: "productinformation",
    ObjectType.LINE_ITEMS: "lineiteminformation",
    ObjectType.INVOICES: "invoiceinformation",
    ObjectType.SUBSCRIPTIONS: "subscriptioninformation",
    ObjectType.PROJECTS: "projectinformation",
}


def api_name(kind: ObjectType) -> str:
    """The object type as written in properties and v4 association paths (the type id for projects)."""
    return OBJECTS[kind].type_id if kind is ObjectType.PROJECTS else kind.value


# Association type ids (HUBSPOT_DEFINED): (from, to) → id. Each direction has its own id.
ASSOCIATION_TYPE_IDS: dict[tuple[ObjectType, ObjectType], int] = {
    (ObjectType.INVOICES, ObjectType.COMPANIES): 179,
    (ObjectType.COMPANIES, ObjectType.INVOICES): 180,
    (ObjectType.INVOICES, ObjectType.LINE_ITEMS): 409,
    (ObjectType.LINE_ITEMS, ObjectType.INVOICES): 410,
    (ObjectType.INVOICES, ObjectType.DEALS): 175,
    (ObjectType.DEALS, ObjectType.INVOICES): 176,
    (ObjectType.SUBSCRIPTIONS, ObjectType.COMPANIES): 297,
    (ObjectType.COMPANIES, ObjectType.SUBSCRIPTIONS): 298,
    (ObjectType.SUBSCRIPTIONS, ObjectType.LINE_ITEMS): 301,
    (ObjectType.LINE_ITEMS, ObjectType.SUBSCRIPTIONS): 302,
    (ObjectType.DEALS, ObjectType.COMPANIES): 341,
    (ObjectType.COMPANIES, ObjectType.DEALS): 342,
    (ObjectType.DEALS, ObjectType.LINE_ITEMS): 19,
    (ObjectType.LINE_ITEMS, ObjectType.DEALS): 20,
}
HUBSPOT_DEFINED = "HUBSPOT_DEFINED"


def association_type_id(from_type: ObjectType, to_type: ObjectType) -> int | None:
    """The HUBSPOT_DEFINED type id for this direction, or None when the facts file gives none.

    For pairs without a known id (e.g. projects → companies) use the default
    association endpoints, which let HubSpot pick the type.
    """
    return ASSOCIATION_TYPE_IDS.get((from_type, to_type))
