"""Deciding one Kleer write from HubSpot's current values: pure, no I/O.

``plan_write`` merges, field by field, three versions of the record (see
``services.inbound.merge``): what HubSpot held after the last sync (the
*base*, from the event log: the pusher's last upsert, or HubSpot's values when
inbound sync last wrote Kleer), HubSpot's current values and Kleer's current
record. HubSpot's edits reach Kleer; Kleer's changes that HubSpot has not
received yet are kept; a field both changed differently is a conflict settled
by the policy. Every field read from HubSpot goes to Kleer (with the merged
value), but only when something differs.

It also says what the outbound side must do afterwards, so both systems end
with the merged state:

- if the merged record holds values HubSpot lacks (Kleer's unpushed changes,
  or Kleer won a conflict), or a snapshot other than the merged one still
  waits for the pusher (it would overwrite HubSpot's edit), or the log holds
  no push of the record and no change waiting for one, ``snapshot`` is
  the merged record mapped as the poller maps it, to be appended as a
  ``Kleer{Kind}Changed`` event with its fingerprint stored;
- otherwise, after a write, ``new_fingerprint`` is stored so the next poll does
  not bounce HubSpot's own edit back (only when the poller had seen Kleer's
  record as it was: else the poller must still push what it has not seen).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from libs.mapping.convert import fingerprint, to_hubspot, to_kleer
from libs.mapping.errors import MappingError
from libs.mapping.loader import resolve
from libs.mapping.model import FieldMapping, Mappings
from services.inbound.merge import ABSENT, Merge, Side, three_way_merge
from services.inbound.options import ConflictPolicy
from services.outbound.snapshots import Snapshot, record_snapshot


@dataclass(frozen=True)
class SyncBase:
    """What the event log knows of a record's last sync (all optional: a record may never have synced)."""

    properties: Mapping[str, str | None] | None = None  # HubSpot's properties after the last sync
    changed: tuple[str, ...] = ()  # the properties that sync's webhooks named (read first, as then)
    pushed_fingerprint: str | None = None  # fingerprint of the pusher's last upsert
    pending_fingerprint: str | None = None  # a Kleer change recorded after that upsert (waits for the pusher)


@dataclass(frozen=True)
class WritePlan:
    body: dict[str, Any]  # every field read from HubSpot, with its merged value
    write: bool  # send the body to Kleer (it differs from Kleer's record)
    needed: bool  # same as ``write`` (kept for callers that ask whether Kleer was up to date)
    conflict: bool
    winner: str | None  # "hubspot" | "kleer" when conflict
    conflicts: tuple[str, ...]  # HubSpot properties (canonical) both sides changed differently
    kleer_values: dict[str, str]  # Kleer's record mapped to HubSpot properties (before the write)
    hubspot_values: dict[str, str]  # Kleer's record with all of HubSpot's values, mapped the same way (conflicts)
    # Append this as ``Kleer{Kind}Changed`` (and store its fingerprint): HubSpot must get the merged record.
    snapshot: Snapshot | None
    # Store this after writing; None leaves the stored one, so the next poll pushes Kleer's record
    # (Kleer had changes the poller has not seen, or it was never polled).
    new_fingerprint: str | None


def mapped_values(kleer_type: str, record: Mapping[str, Any], mappings: Mappings) -> dict[str, str] | None:
    """The record as the outbound sync sees it (``to_hubspot``), or None when it cannot be mapped."""
    try:
        return to_hubspot(kleer_type, record, mappings=mappings)
    except MappingError:
        return None


def apply_update(record: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """The record after a Kleer update with ``body`` (top-level fields replace the stored ones)."""
    return {**record, **body}


def _comparable(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def body_differs(record: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """True when writing ``body`` would change the record (nested objects compared by the body's keys)."""
    for key, value in body.items():
        current = record.get(key)
        if isinstance(value, Mapping):
            if not isinstance(current, Mapping):
                if any(v not in (None, "") for v in value.values()):
                    return True
                continue
            if any(_comparable(current.get(k)) != _comparable(v) for k, v in value.items()):
                return True
        elif _comparable(current) != _comparable(value):
            if not (current is None and value == ""):
                return True
    return False


def inbound_fields(kleer_type: str, properties: Mapping[str, Any], mappings: Mappings) -> list[FieldMapping]:
    """The fields inbound sync writes to Kleer that these HubSpot properties hold (read = present)."""
    return [
        f
        for f in resolve(mappings).object(kleer_type).fields
        if f.writes_kleer and any(p in properties for p in f.hubspot_properties)
    ]


def field_values(
    kleer_type: str,
    properties: Mapping[str, str | None],
    fields: Sequence[FieldMapping],
    *,
    changed: Sequence[str] = (),
    mappings: Mappings,
) -> dict[str, Any]:
    """Per field (keyed by its canonical HubSpot property): the Kleer value ``to_kleer`` gives it.

    ``ABSENT`` where ``to_kleer`` leaves the field out (an empty number or date: nothing to write).
    Raises ``MappingError`` when a value cannot be converted.
    """
    return _values(to_kleer(kleer_type, properties, changed=changed, mappings=mappings), fields)


def _values(body: Mapping[str, Any], fields: Sequence[FieldMapping]) -> dict[str, Any]:
    return {f.hubspot_property: _at(body, f.path) for f in fields}


def _at(record: Mapping[str, Any], path: Sequence[str]) -> Any:
    current: Any = record
    for key in path:
        if not isinstance(current, Mapping) or key not in current:
            return ABSENT
        current = current[key]
    return current


def _set(body: dict[str, Any], path: Sequence[str], value: Any) -> None:
    target = body
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def _base_values(
    kleer_type: str,
    base: SyncBase,
    fields: Sequence[FieldMapping],
    mappings: Mappings,
) -> dict[str, Any] | None:
    if base.properties is None:
        return None
    try:
        return field_values(kleer_type, base.properties, fields, changed=base.changed, mappings=mappings)
    except MappingError:
        return None


def _kleer_values(
    kleer_type: str, mapped: Mapping[str, str] | None, fields: Sequence[FieldMapping], mappings: Mappings
) -> dict[str, Any] | None:
    """Kleer's record as inbound sync would read it back from HubSpot (so values compare like for like)."""
    if mapped is None:
        return None
    try:
        return field_values(kleer_type, mapped, fields, mappings=mappings)
    except MappingError:
        return None


def _merge(
    base: dict[str, Any] | None,
    hubspot: dict[str, Any],
    kleer: dict[str, Any] | None,
    policy: ConflictPolicy,
) -> Merge[str]:
    if kleer is None:  # Kleer's record cannot be mapped: nothing to compare with, HubSpot's values go
        return three_way_merge(hubspot, hubspot, hubspot)
    winner = Side.KLEER if policy is ConflictPolicy.KLEER_WINS else Side.HUBSPOT
    return three_way_merge(base, hubspot, kleer, winner=winner)


def plan_write(
    kleer_type: str,
    current: Mapping[str, Any],
    hubspot: Mapping[str, str | None],
    *,
    changed: Sequence[str] = (),
    base: SyncBase | None = None,
    stored_fingerprint: str | None,
    policy: ConflictPolicy,
    mappings: Mappings,
) -> WritePlan:
    """Decide the write (see the module docstring).

    ``current``: Kleer's record; ``hubspot``: HubSpot's current properties (``changed``: those its
    webhooks named); ``base``: the record's last sync; ``stored_fingerprint``: the poller's.

    Without a base (the record never went through a sync the log recorded), the poller's fingerprint
    stands in: if Kleer is as the poller last saw it and nothing waits for the pusher, HubSpot's
    values are the only edit; otherwise every field the two sides hold differently is a conflict.
    Raises ``MappingError`` when HubSpot's values cannot be mapped to Kleer.
    """
    # The log knows the record and holds no push of it, and no change waiting for the pusher: HubSpot has
    # none of Kleer's one-way fields. Say the handlers that created the Kleer client were stopped before
    # they committed its first snapshot, and the poller took the fingerprint they stored for seen.
    unpushed = base is not None and base.pushed_fingerprint is None and base.pending_fingerprint is None
    base = base or SyncBase()
    fields = inbound_fields(kleer_type, hubspot, mappings)
    hubspot_body = to_kleer(kleer_type, hubspot, changed=changed, mappings=mappings)
    theirs = _values(hubspot_body, fields)
    kleer_mapped = mapped_values(kleer_type, current, mappings)
    ours = _kleer_values(kleer_type, kleer_mapped, fields, mappings)
    current_fp = fingerprint(kleer_type, kleer_mapped) if kleer_mapped else None
    polled = stored_fingerprint is not None and current_fp is not None and current_fp == stored_fingerprint
    common = _base_values(kleer_type, base, fields, mappings)
    if common is None and (stored_fingerprint is None or polled) and base.pending_fingerprint is None:
        common = ours
    merge = _merge(common, theirs, ours, policy)

    body: dict[str, Any] = {}
    for f in fields:
        value = merge.values.get(f.hubspot_property, ABSENT)
        if value is ABSENT:
            continue
        if ours is not None and value == ours.get(f.hubspot_property, ABSENT):
            value = _at(current, f.path)  # Kleer's own value, exactly as Kleer holds it
            if value is ABSENT or value is None:
                continue
        _set(body, f.path, value)
    write = body_differs(current, body)

    conflict = bool(merge.conflicts)
    winner = (Side.KLEER if policy is ConflictPolicy.KLEER_WINS else Side.HUBSPOT).value if conflict else None
    hubspot_values = (mapped_values(kleer_type, apply_update(current, hubspot_body), mappings) or {}) if conflict else {}

    pending = base.pending_fingerprint
    merged: Snapshot | None = None
    if write or merge.kleer_ahead or pending is not None or unpushed:
        try:
            merged = record_snapshot(kleer_type, apply_update(current, body) if write else current, mappings=mappings)
        except MappingError:
            merged = None
    stale_waiting = pending is not None and merged is not None and pending not in (
        base.pushed_fingerprint,
        merged.fingerprint,
    )
    snapshot = merged if merged is not None and (merge.kleer_ahead or stale_waiting or unpushed) else None
    if snapshot is not None:
        new_fingerprint: str | None = snapshot.fingerprint
    elif write and polled and merged is not None:
        new_fingerprint = merged.fingerprint
    else:
        new_fingerprint = None
    return WritePlan(
        body=body,
        write=write,
        needed=write,
        conflict=conflict,
        winner=winner,
        conflicts=merge.conflicts,
        kleer_values=kleer_mapped or {},
        hubspot_values=hubspot_values,
        snapshot=snapshot,
        new_fingerprint=new_fingerprint,
    )


def changed_fields(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, dict[str, str | None]]:
    """Per HubSpot property whose value differs: {"kleer": before, "hubspot": after}."""
    keys = sorted(set(before) | set(after))
    return {
        k: {"kleer": before.get(k), "hubspot": after.get(k)} for k in keys if before.get(k) != after.get(k)
    }


def event_json(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body for an event's data: Decimals as exact strings."""

    def convert(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, Mapping):
            return {k: convert(v) for k, v in value.items()}
        return value

    return {k: convert(v) for k, v in body.items()}
