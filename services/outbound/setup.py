"""``kleer-sync hubspot setup``: our property group and every custom property the mappings need.

For each HubSpot object we write (and deals) it reads the existing groups and
properties first and creates only what is missing, so it is safe to run twice
and from two pods at once. What it creates: the ``kleer`` property group;
``kleer_id`` (unique) on every synced object; the other custom properties of the
mappings (``libs.mapping.properties.custom_properties``); ``kleer_invoice_id``,
``kleer_agreement_id`` and ``kleer_project_id`` on deals; and the removal flag
``kleer_deleted`` on every synced object (set when a record is deleted in Kleer,
see ``planning.RemovalPolicy``). A property that exists with another type or
uniqueness is reported, never changed: fix it by hand in HubSpot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from libs.hubspot.client import HubSpotClient
from libs.hubspot.models import EnsureReport, PropertyGroupSpec, PropertySpec
from libs.hubspot.objects import ObjectType
from libs.mapping.model import Mappings, PropertyDefinition
from libs.mapping.objects import HUBSPOT_OBJECT_FOR, PROPERTY_GROUP
from libs.mapping.properties import custom_properties
from services.outbound.pusher import REMOVED_FLAG

REMOVED_FLAG_SPEC = PropertySpec(
    name=REMOVED_FLAG,
    label="Deleted in Kleer",
    type="bool",
    field_type="booleancheckbox",
    description="Set by kleer-sync when the Kleer record behind this one was deleted.",
    options=(
        {"label": "Yes", "value": "true", "displayOrder": 0},
        {"label": "No", "value": "false", "displayOrder": 1},
    ),
)


def _spec(definition: PropertyDefinition) -> PropertySpec:
    body: Mapping[str, Any] = definition.to_api()
    return PropertySpec(
        name=str(body["name"]),
        label=str(body["label"]),
        type=str(body["type"]),
        field_type=str(body["fieldType"]),
        group_name=str(body.get("groupName") or PROPERTY_GROUP.name),
        has_unique_value=bool(body.get("hasUniqueValue", False)),
        description=str(body.get("description") or ""),
        options=tuple(body.get("options") or ()),
    )


def required_properties(mappings: Mappings | None = None) -> dict[str, list[PropertySpec]]:
    """Property specs per HubSpot object name, in creation order."""
    wanted: dict[str, list[PropertySpec]] = {
        name: [_spec(d) for d in definitions]
        for name, definitions in custom_properties(mappings=mappings).items()
    }
    for hubspot_object in HUBSPOT_OBJECT_FOR.values():
        specs = wanted.setdefault(hubspot_object.name, [])
        if all(s.name != REMOVED_FLAG for s in specs):
            specs.append(REMOVED_FLAG_SPEC)
    return wanted


async def setup_hubspot(
    client: HubSpotClient, mappings: Mappings | None = None, objects: Sequence[str] | None = None
) -> dict[str, EnsureReport]:
    """Create our group and the missing properties on every object; returns what was done per object."""
    group = PropertyGroupSpec(PROPERTY_GROUP.name, PROPERTY_GROUP.label)
    reports: dict[str, EnsureReport] = {}
    for name, specs in required_properties(mappings).items():
        if objects is not None and name not in objects:
            continue
        reports[name] = await client.ensure_properties(ObjectType(name), specs, group=group)
    return reports


def describe(reports: Mapping[str, EnsureReport]) -> str:
    lines = []
    for name, report in reports.items():
        parts = [f"{len(report.created)} created", f"{len(report.existing)} already there"]
        if report.group_created:
            parts.insert(0, f"group {PROPERTY_GROUP.name!r} created")
        line = f"{name}: " + ", ".join(parts)
        if report.mismatched:
            line += f"; DIFFERENT TYPE OR UNIQUENESS, fix by hand in HubSpot: {', '.join(report.mismatched)}"
        lines.append(line)
    return "\n".join(lines)
