"""Deciding one Kleer write from HubSpot's current values: pure, no I/O.

Given the Kleer record as it is now, the body ``to_kleer`` built from the
current HubSpot record, the fingerprint the outbound poller stored for the
record and the conflict policy, ``plan_write`` says whether to write, whether
this is a conflict (both sides changed since the last sync), who wins, and the
fingerprint to store afterwards so the next poll does not send the change back
to HubSpot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from libs.mapping.convert import fingerprint, to_hubspot
from libs.mapping.errors import MappingError
from libs.mapping.model import Mappings
from services.inbound.options import ConflictPolicy


@dataclass(frozen=True)
class WritePlan:
    body: dict[str, Any]
    write: bool  # send the body to Kleer
    needed: bool  # the body differs from Kleer's record
    conflict: bool
    winner: str | None  # "hubspot" | "kleer" when conflict
    kleer_values: dict[str, str]  # Kleer's record mapped to HubSpot properties (before the write)
    hubspot_values: dict[str, str]  # what Kleer would hold after the write, mapped the same way
    # Store this after writing; None leaves the stored one, so the next poll pushes Kleer's record
    # (Kleer had changes HubSpot has not seen, or it was never polled).
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


def plan_write(
    kleer_type: str,
    current: Mapping[str, Any],
    body: Mapping[str, Any],
    stored_fingerprint: str | None,
    policy: ConflictPolicy,
    mappings: Mappings,
) -> WritePlan:
    """Decide the write (see the module docstring).

    A conflict is: the poller stored a fingerprint, Kleer's record no longer
    has it (someone changed Kleer since the last poll), and HubSpot's values
    differ from Kleer's. Without a stored fingerprint (never polled) there is
    nothing to compare with, so HubSpot's edit is written.
    """
    after = apply_update(current, body)
    kleer_values = mapped_values(kleer_type, current, mappings) or {}
    hubspot_values = mapped_values(kleer_type, after, mappings) or {}
    needed = body_differs(current, body)
    current_fp = fingerprint(kleer_type, kleer_values) if kleer_values else None
    new_fp = fingerprint(kleer_type, hubspot_values) if hubspot_values else None
    conflict = (
        needed
        and stored_fingerprint is not None
        and stored_fingerprint != ""
        and current_fp is not None
        and current_fp != stored_fingerprint
    )
    if conflict and policy is ConflictPolicy.KLEER_WINS:
        return WritePlan(dict(body), False, needed, True, "kleer", kleer_values, hubspot_values, None)
    # Only a record the poller had fully seen becomes "seen" again after our write: HubSpot then
    # holds every mapped value. Otherwise Kleer has changes HubSpot lacks and the poller must push them.
    clean = stored_fingerprint is not None and current_fp is not None and current_fp == stored_fingerprint
    return WritePlan(
        dict(body),
        needed,
        needed,
        conflict,
        "hubspot" if conflict else None,
        kleer_values,
        hubspot_values,
        new_fp if clean and needed else None,
    )


def changed_fields(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, dict[str, str | None]]:
    """Per HubSpot property whose value differs: {"kleer": before, "hubspot": after}."""
    keys = sorted(set(before) | set(after))
    return {
        k: {"kleer": before.get(k), "hubspot": after.get(k)} for k in keys if before.get(k) != after.get(k)
    }


def kleer_json(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body with ``Decimal`` values as JSON numbers the Kleer client can encode (ints stay ints)."""

    def convert(value: Any) -> Any:
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        if isinstance(value, Mapping):
            return {k: convert(v) for k, v in value.items()}
        return value

    return {k: convert(v) for k, v in body.items()}


def event_json(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body for an event's data: Decimals as exact strings."""

    def convert(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, Mapping):
            return {k: convert(v) for k, v in value.items()}
        return value

    return {k: convert(v) for k, v in body.items()}
