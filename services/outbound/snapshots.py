"""Snapshots: the full mapped state of one Kleer record, as the outbound events carry it.

A ``Snapshot`` is what the poller puts in a ``Kleer{Kind}Changed`` event and
what the pusher writes to HubSpot: the Kleer id, the HubSpot properties (all
strings, from ``libs.mapping``), the parents it is associated with in HubSpot
(an invoice's client, a line item's invoice or agreement, a project's client, a
deal that spawned the record) and the fingerprint of the properties.

Pure functions over plain data; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from libs.mapping.convert import fingerprint, to_hubspot
from libs.mapping.line_items import LineItem, line_items_for_agreement, line_items_for_invoice
from libs.mapping.model import Mappings
from libs.mapping.objects import (
    AGREEMENT,
    CLIENT,
    DEALS,
    FIRST,
    HUBSPOT_OBJECT_FOR,
    INVOICE,
    KLEER_OBJECT_TYPES,
    LINE_ITEM,
    PRODUCT,
    PROJECT,
    RECURRING,
    ROW,
    line_item_id,
)
from libs.records import RecordRef

#: The Kleer kinds, in the order a full sync pushes them (parents before children).
KINDS: tuple[str, ...] = (CLIENT, PRODUCT, PROJECT, AGREEMENT, INVOICE, LINE_ITEM)
assert set(KINDS) == set(KLEER_OBJECT_TYPES)

DEAL = "deal"  # a parent known only by its HubSpot id (the deal a workflow action started from)

_KIND_NAMES: dict[str, str] = {
    CLIENT: "Client",
    PRODUCT: "Product",
    INVOICE: "Invoice",
    AGREEMENT: "Agreement",
    PROJECT: "Project",
    LINE_ITEM: "LineItem",
}
_HUBSPOT_NAMES: dict[str, str] = {
    "companies": "Company",
    "products": "Product",
    "invoices": "Invoice",
    "subscriptions": "Subscription",
    "projects": "Project",
    "line_items": "LineItem",
}
CHANGED, REMOVED, PUSH_REQUESTED = "Changed", "Removed", "PushRequested"
_ACTIONS = (CHANGED, REMOVED, PUSH_REQUESTED)
_BY_EVENT_TYPE: dict[str, tuple[str, str]] = {
    f"Kleer{name}{action}": (kind, action) for kind, name in _KIND_NAMES.items() for action in _ACTIONS
}

# Where a record names the record it belongs to: kind -> (parent kind, path).
_PARENT_PATHS: dict[str, tuple[str, tuple[str, ...]]] = {
    INVOICE: (CLIENT, ("client-ref", "id")),
    AGREEMENT: (CLIENT, ("client-ref", "id")),
    PROJECT: (CLIENT, ("client", "id")),
}
# Records whose invoice-date bounds the invoice history window.
_DATED_KINDS = (INVOICE,)
_STRING = frozenset({str})


def changed_type(kind: str) -> str:
    return f"Kleer{_KIND_NAMES[kind]}{CHANGED}"


def removed_type(kind: str) -> str:
    return f"Kleer{_KIND_NAMES[kind]}{REMOVED}"


def push_requested_type(kind: str) -> str:
    """``Kleer{Kind}PushRequested``: push this snapshot even if HubSpot already has it (replay)."""
    return f"Kleer{_KIND_NAMES[kind]}{PUSH_REQUESTED}"


# A ``HubSpot…Upserted`` event carries what HubSpot holds from us as ``properties``, or, when that is the
# snapshot of the change event that caused the upsert, that event's id under this key.
PROPERTIES_FROM = "properties_from"


def upserted_type(hubspot_object: str) -> str:
    return f"HubSpot{_HUBSPOT_NAMES[hubspot_object]}Upserted"


def archived_type(hubspot_object: str) -> str:
    return f"HubSpot{_HUBSPOT_NAMES[hubspot_object]}Archived"


def parse_event_type(event_type: str) -> tuple[str, str] | None:
    """``KleerInvoiceChanged`` -> ``("invoice", "Changed")``; None for any other type."""
    return _BY_EVENT_TYPE.get(event_type)


def hubspot_object_of(kind: str) -> str:
    return HUBSPOT_OBJECT_FOR[kind].name


@dataclass(frozen=True, order=True)
class ParentRef:
    """A record a snapshot is associated with: a Kleer record, or a HubSpot record known by id (deals)."""

    kind: str
    kleer_id: str | None = None
    hubspot_id: str | None = None

    @property
    def key(self) -> str:
        """``client:77`` for a Kleer parent, ``deal#123`` for a HubSpot-only one."""
        return (
            f"{self.kind}:{self.kleer_id}" if self.kleer_id is not None else f"{self.kind}#{self.hubspot_id}"
        )

    @property
    def hubspot_object(self) -> str:
        return DEALS.name if self.kind == DEAL else hubspot_object_of(self.kind)

    def to_json(self) -> dict[str, str]:
        body = {"kind": self.kind}
        if self.kleer_id is not None:
            body["kleer_id"] = self.kleer_id
        if self.hubspot_id is not None:
            body["hubspot_id"] = self.hubspot_id
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ParentRef:
        kleer_id, hubspot_id = body.get("kleer_id"), body.get("hubspot_id")
        return cls(
            str(body["kind"]),
            None if kleer_id is None else str(kleer_id),
            None if hubspot_id is None else str(hubspot_id),
        )


@dataclass(frozen=True)
class Snapshot:
    """The mapped state of one Kleer record (see the module docstring)."""

    kind: str
    kleer_id: str
    properties: Mapping[str, str]
    fingerprint: str
    parents: tuple[ParentRef, ...] = ()
    record_date: str | None = field(default=None, compare=False)  # invoice-date, for the history window

    @property
    def hubspot_object(self) -> str:
        return hubspot_object_of(self.kind)

    @property
    def ref(self) -> RecordRef:
        return RecordRef("kleer", self.kind, self.kleer_id)

    def stream(self, connection: str) -> str:
        return self.ref.stream(connection)

    def with_parents(self, extra: Sequence[ParentRef]) -> Snapshot:
        parents = tuple(dict.fromkeys((*self.parents, *extra)))
        return Snapshot(
            self.kind, self.kleer_id, self.properties, self.fingerprint, parents, self.record_date
        )

    def to_event_data(self) -> dict[str, Any]:
        return {
            "kleer_id": self.kleer_id,
            "kind": self.kind,
            "hubspot_object": self.hubspot_object,
            "properties": dict(self.properties),
            "parents": [p.to_json() for p in self.parents],
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_event_data(cls, data: Mapping[str, Any]) -> Snapshot:
        properties = data.get("properties") or {}
        if type(properties) is not dict or not _STRING.issuperset(map(type, properties.values())):
            properties = {str(k): "" if v is None else str(v) for k, v in properties.items()}
        return cls(
            kind=str(data["kind"]),
            kleer_id=str(data["kleer_id"]),
            properties=properties,  # the poller's: strings already (JSON keys are)
            fingerprint=str(data.get("fingerprint") or ""),
            parents=tuple(ParentRef.from_json(p) for p in data.get("parents") or ()),
        )


def removal_event_data(kind: str, kleer_id: str) -> dict[str, Any]:
    return {"kleer_id": kleer_id, "kind": kind, "hubspot_object": hubspot_object_of(kind)}


# --- building snapshots from Kleer records -------------------------------------------------------


def _path(record: Mapping[str, Any], path: Sequence[str]) -> object:
    current: object = record
    for key in path:
        if not isinstance(current, Mapping):
            return None
        current = current.get(key)
    return current


def parents_of(kind: str, record: Mapping[str, Any]) -> tuple[ParentRef, ...]:
    """The Kleer parents a record names (an invoice's, agreement's or project's client)."""
    spec = _PARENT_PATHS.get(kind)
    if spec is None:
        return ()
    parent_kind, path = spec
    value = _path(record, path)
    if value is None or value == "" or isinstance(value, bool | dict | list):
        return ()
    return (ParentRef(parent_kind, str(value)),)


def record_date_of(kind: str, record: Mapping[str, Any]) -> str | None:
    if kind not in _DATED_KINDS:
        return None
    value = record.get("invoice-date")
    return str(value)[:10] if isinstance(value, str) and value else None


def record_snapshot(kind: str, record: Mapping[str, Any], *, mappings: Mappings | None = None) -> Snapshot:
    """The snapshot of a client, product, invoice, agreement or project. Raises ``MappingError``."""
    properties = to_hubspot(kind, record, mappings=mappings)
    return Snapshot(
        kind=kind,
        kleer_id=str(record["id"]),
        properties=properties,
        fingerprint=fingerprint(kind, properties),
        parents=parents_of(kind, record),
        record_date=record_date_of(kind, record),
    )


def line_item_snapshot(item: LineItem, record_date: str | None = None) -> Snapshot:
    return Snapshot(
        kind=LINE_ITEM,
        kleer_id=item.kleer_id,
        properties=item.properties,
        fingerprint=fingerprint(LINE_ITEM, item.properties),
        parents=(ParentRef(item.parent_type, item.parent_id),),
        record_date=record_date,
    )


def line_item_snapshots(
    parent_kind: str, record: Mapping[str, Any], *, mappings: Mappings | None = None
) -> list[Snapshot]:
    """Line item snapshots of an invoice's rows or an agreement's rows. Raises ``MappingError``."""
    if parent_kind == INVOICE:
        items = line_items_for_invoice(record, mappings=mappings)
    elif parent_kind == AGREEMENT:
        items = line_items_for_agreement(record, mappings=mappings)
    else:
        raise ValueError(f"only invoices and agreements have line items, not {parent_kind!r}")
    date = record_date_of(parent_kind, record)
    return [line_item_snapshot(item, date) for item in items]


def line_item_ids(parent_kind: str, record: Mapping[str, Any]) -> list[str]:
    """The stable line item ids a parent's rows have, without mapping them (cheap)."""
    parent_id = record.get("id")
    if parent_id is None:
        return []

    def count(key: str) -> int:
        rows = record.get(key)
        return len(rows) if isinstance(rows, list) else 0

    if parent_kind == INVOICE:
        return [line_item_id(parent_id, ROW, n) for n in range(1, count("rows") + 1)]
    return [line_item_id(parent_id, RECURRING, n) for n in range(1, count("recurring-rows") + 1)] + [
        line_item_id(parent_id, FIRST, n) for n in range(1, count("first-invoice-rows") + 1)
    ]


def snapshots_for_push(
    kind: str,
    record: Mapping[str, Any],
    *,
    mappings: Mappings | None = None,
    deal_id: str | None = None,
) -> list[Snapshot]:
    """Everything to push for one Kleer record: the record, then its line items (invoices, agreements).

    ``deal_id``: the HubSpot deal the record was created from (workflow actions);
    the record is then associated with that deal too. Raises ``MappingError``.
    """
    main = record_snapshot(kind, record, mappings=mappings)
    if deal_id:
        main = main.with_parents([ParentRef(DEAL, hubspot_id=str(deal_id))])
    if kind in (INVOICE, AGREEMENT):
        return [main, *line_item_snapshots(kind, record, mappings=mappings)]
    return [main]
