"""The HubSpot state a Kleer book implies, computed with ``libs.mapping`` alone, and the diff with HubSpot.

An independent oracle: it uses the mapping library (the specification of
what each field becomes) and the design's rules (certified, non-credit
invoices only; line items from invoice rows and agreement rows; the
associations invoice/subscription/project -> company and invoice/subscription
-> line items), not the outbound services' own planning code.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from libs.mapping import (
    MappingError,
    line_items_for_agreement,
    line_items_for_invoice,
    should_sync_invoice,
    to_hubspot,
)

# Kleer simulator resource name -> (Kleer object type, HubSpot object).
RESOURCES: dict[str, tuple[str, str]] = {
    "client": ("client", "companies"),
    "product": ("product", "products"),
    "client-project": ("project", "projects"),
    "client-invoice": ("invoice", "invoices"),
    "client-agreement": ("agreement", "subscriptions"),
}
OBJECTS: tuple[str, ...] = ("companies", "products", "projects", "invoices", "subscriptions", "line_items")
# (from object, to object) pairs whose associations must match exactly.
ASSOCIATION_PAIRS: tuple[tuple[str, str], ...] = (
    ("invoices", "companies"),
    ("subscriptions", "companies"),
    ("projects", "companies"),
    ("invoices", "line_items"),
    ("subscriptions", "line_items"),
)
REMOVED_FLAG = "kleer_deleted"

Key = tuple[str, str]  # (HubSpot object, kleer_id)


@dataclass
class ExpectedRecord:
    hubspot_object: str
    kleer_id: str
    properties: dict[str, str]
    kleer_parent: tuple[str, str] | None = None  # (kleer kind, id) this record names, e.g. ("client", "77")


@dataclass
class ExpectedState:
    records: dict[Key, ExpectedRecord] = field(default_factory=dict)
    # (from object, to object) -> from kleer_id -> set of to kleer_ids
    associations: dict[tuple[str, str], dict[str, set[str]]] = field(default_factory=lambda: defaultdict(dict))
    unmappable: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, id, reason)
    left_out: dict[Key, str] = field(default_factory=dict)  # Kleer records that do not sync, and why

    def count(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for obj, _ in self.records:
            counts[obj] += 1
        return dict(counts)


def expected_state(
    book: Mapping[str, Iterable[Mapping[str, Any]]], pushed_invoices: Iterable[str] = ()
) -> ExpectedState:
    """What HubSpot must hold for a Kleer book (``{resource: [records]}`` as the Kleer simulator dumps it).

    ``pushed_invoices``: invoices a workflow action created (as drafts) and pushed to HubSpot at once, as
    the user's document promises; they belong in HubSpot although the poller syncs certified ones only.
    """
    state = ExpectedState()
    pushed = set(pushed_invoices)
    for resource, (kind, obj) in RESOURCES.items():
        for record in book.get(resource, ()):
            kleer_id = str(record["id"])
            if kind == "invoice" and not should_sync_invoice(record) and kleer_id not in pushed:
                state.left_out[(obj, kleer_id)] = (
                    "a credit invoice" if record.get("debit-invoice-nr") else "a draft (not certified)")
                continue
            try:
                properties = to_hubspot(kind, record)
            except MappingError as exc:
                state.unmappable.append((kind, kleer_id, str(exc)))
                continue
            state.records[(obj, kleer_id)] = ExpectedRecord(obj, kleer_id, properties)
            client_id = _client_of(kind, record)
            if client_id is not None:
                state.associations[(obj, "companies")][kleer_id] = {client_id}
            if kind in ("invoice", "agreement"):
                try:
                    items = line_items_for_invoice(record) if kind == "invoice" else line_items_for_agreement(record)
                except MappingError as exc:
                    state.unmappable.append(("line_item", kleer_id, str(exc)))
                    continue
                for item in items:
                    state.records[("line_items", item.kleer_id)] = ExpectedRecord("line_items", item.kleer_id,
                                                                                  item.properties)
                state.associations[(obj, "line_items")][kleer_id] = {item.kleer_id for item in items}
    return state


def _client_of(kind: str, record: Mapping[str, Any]) -> str | None:
    ref = record.get("client-ref") if kind in ("invoice", "agreement") else record.get("client") if kind == "project" else None
    if isinstance(ref, Mapping) and ref.get("id") not in (None, ""):
        return str(ref["id"])
    return None


def same_value(expected: str, actual: str | None) -> bool:
    """HubSpot keeps strings as sent; an empty string clears (reads back as empty or absent).
    Numbers compare by value, so HubSpot writing "129.5" for "129.50" is not a divergence."""
    actual = actual or ""
    if expected == actual:
        return True
    try:
        return Decimal(expected) == Decimal(actual)
    except (InvalidOperation, ValueError):
        return False


@dataclass
class StateDiff:
    """Divergences between the expected and the actual HubSpot state (empty lists: they agree)."""

    missing: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    associations: list[str] = field(default_factory=list)
    compared_records: int = 0
    compared_fields: int = 0
    compared_associations: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.fields or self.unexpected or self.associations)

    def problems(self, limit: int = 25) -> list[str]:
        out: list[str] = []
        for label, items in (("missing", self.missing), ("duplicate", self.duplicates), ("field", self.fields),
                             ("unexpected", self.unexpected), ("association", self.associations)):
            out.extend(f"{label}: {item}" for item in items[:limit])
            if len(items) > limit:
                out.append(f"{label}: ... and {len(items) - limit} more")
        return out

    def summary(self) -> dict[str, int]:
        return {"missing": len(self.missing), "duplicates": len(self.duplicates), "fields": len(self.fields),
                "unexpected": len(self.unexpected), "associations": len(self.associations),
                "compared_records": self.compared_records, "compared_fields": self.compared_fields,
                "compared_associations": self.compared_associations}


@dataclass
class HubSpotIndex:
    """HubSpot records by (object, kleer_id), HubSpot id -> kleer_id, and records without a kleer_id."""

    by_key: dict[Key, list[dict[str, Any]]]
    kleer_id_of: dict[tuple[str, str], str]  # (object, hubspot id) -> kleer_id
    unlinked: dict[str, list[dict[str, Any]]]

    @classmethod
    def build(cls, data: Mapping[str, list[dict[str, Any]]]) -> HubSpotIndex:
        by_key: dict[Key, list[dict[str, Any]]] = defaultdict(list)
        kleer_id_of: dict[tuple[str, str], str] = {}
        unlinked: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for obj in OBJECTS:
            for record in data.get(obj, ()):
                kleer_id = (record.get("properties") or {}).get("kleer_id")
                if kleer_id:
                    by_key[(obj, kleer_id)].append(record)
                    kleer_id_of[(obj, str(record["id"]))] = kleer_id
                else:
                    unlinked[obj].append(record)
        return cls(dict(by_key), kleer_id_of, dict(unlinked))

    def hubspot_id(self, obj: str, kleer_id: str) -> str | None:
        found = self.by_key.get((obj, kleer_id))
        return str(found[0]["id"]) if found else None


def diff_records(expected: ExpectedState, index: HubSpotIndex) -> StateDiff:
    """Records and fields: every expected record once with every mapped value; nothing else with a kleer_id
    unless flagged ``kleer_deleted=true``."""
    diff = StateDiff()
    for key, want in sorted(expected.records.items()):
        found = index.by_key.get(key, [])
        obj, kleer_id = key
        if not found:
            diff.missing.append(f"{obj} kleer_id={kleer_id}")
            continue
        if len(found) > 1:
            diff.duplicates.append(f"{obj} kleer_id={kleer_id}: HubSpot ids {[r['id'] for r in found]}")
        props = found[0].get("properties") or {}
        diff.compared_records += 1
        if props.get(REMOVED_FLAG) == "true" and REMOVED_FLAG not in want.properties:
            diff.fields.append(f"{obj} kleer_id={kleer_id} (HubSpot {found[0]['id']}) {REMOVED_FLAG}: flagged as "
                               "deleted in Kleer, but Kleer has the record")
        for name, value in sorted(want.properties.items()):
            diff.compared_fields += 1
            if not same_value(value, props.get(name)):
                diff.fields.append(f"{obj} kleer_id={kleer_id} (HubSpot {found[0]['id']}) {name}: "
                                   f"expected {value!r}, HubSpot has {props.get(name)!r}")
    for key, found in sorted(index.by_key.items()):
        if key in expected.records:
            continue
        props = found[0].get("properties") or {}
        if props.get(REMOVED_FLAG) == "true":
            continue
        why = expected.left_out.get(key)
        if why is None and key[0] == "line_items":
            why = expected.left_out.get(("invoices", key[1].split("-", 1)[0]))
            why = f"a row of {why}" if why else None
        reason = f"the Kleer record is {why}, which does not sync" if why else "not in the Kleer book"
        diff.unexpected.append(f"{key[0]} kleer_id={key[1]} (HubSpot {found[0]['id']}): {reason}, and it is not "
                               "flagged kleer_deleted")
    return diff


def diff_associations(
    expected: ExpectedState,
    index: HubSpotIndex,
    actual: Mapping[tuple[str, str], Mapping[str, set[str]]],
    diff: StateDiff,
) -> None:
    """``actual``: (from object, to object) -> from HubSpot id -> to HubSpot ids."""
    for pair in ASSOCIATION_PAIRS:
        from_obj, to_obj = pair
        wanted = expected.associations.get(pair, {})
        links = actual.get(pair, {})
        for from_kleer, to_kleers in sorted(wanted.items()):
            from_id = index.hubspot_id(from_obj, from_kleer)
            if from_id is None:
                continue  # reported as a missing record
            want_ids = {index.hubspot_id(to_obj, k) or f"<missing {to_obj} {k}>" for k in to_kleers}
            have_ids = set(links.get(from_id, set()))
            diff.compared_associations += len(want_ids)
            if want_ids != have_ids:
                missing = sorted(want_ids - have_ids)
                extra = sorted(have_ids - want_ids)
                diff.associations.append(
                    f"{from_obj} kleer_id={from_kleer} (HubSpot {from_id}) -> {to_obj}: missing {missing}, "
                    f"unexpected {extra}"
                )
