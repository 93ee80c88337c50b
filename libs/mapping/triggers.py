"""Which HubSpot property changes start an inbound sync, and which mapped properties are "One-way".

From the user's document: inbound sync starts when a *trigger* property
changes, and then all mapped fields go to Kleer. A mapped property that is not
a trigger shows the "One-way" badge: it still syncs both ways, but a change to
it alone starts nothing.
"""

from __future__ import annotations

from libs.mapping.loader import resolve
from libs.mapping.model import Mappings
from libs.mapping.objects import INBOUND_OBJECT_TYPES, hubspot_object, resolve_object_type
from libs.mapping.seed import TRIGGER_PROPERTIES

__all__ = [
    "TRIGGER_PROPERTIES",
    "hubspot_properties_to_read",
    "is_trigger",
    "one_way_properties",
    "trigger_properties",
]


def _inbound_type(object_type: str) -> str | None:
    """The Kleer type if it syncs inbound; None for other known objects; ValueError for unknown names."""
    try:
        kleer_type = resolve_object_type(object_type)
    except ValueError:
        hubspot_object(object_type)  # raises ValueError for names that are no object at all
        return None
    return kleer_type if kleer_type in INBOUND_OBJECT_TYPES else None


def trigger_properties(object_type: str, *, mappings: Mappings | None = None) -> tuple[str, ...]:
    """The trigger properties of an object type, in configured order.

    Companies (``client``): the user's list (``TRIGGER_PROPERTIES``) unless the
    mappings file sets ``triggers``. Projects: every ``two_way`` project
    property unless configured. Objects without inbound sync (and deals): ``()``.
    """
    kleer_type = _inbound_type(object_type)
    if kleer_type is None:
        return ()
    return resolve(mappings).object(kleer_type).triggers


def is_trigger(object_type: str, property: str, *, mappings: Mappings | None = None) -> bool:
    """True when a change to ``property`` on this object type starts an inbound sync.

    ``object_type`` may be a Kleer type or a HubSpot object name / type id
    (``companies``, ``0-970``). Always False for objects without inbound sync;
    ``ValueError`` for a name that is no object at all.
    """
    return property in trigger_properties(object_type, mappings=mappings)


def one_way_properties(object_type: str, *, mappings: Mappings | None = None) -> tuple[str, ...]:
    """Mapped HubSpot properties that are not triggers (they get the "One-way" badge), in mapping order.

    Mapped = every field's property and aliases, whatever its direction
    (``kleer_id`` included). For objects without inbound sync this is every
    mapped property.
    """
    kleer_type = resolve_object_type(object_type)
    triggers = set(trigger_properties(kleer_type, mappings=mappings))
    return tuple(p for p in resolve(mappings).object(kleer_type).mapped_properties if p not in triggers)


def hubspot_properties_to_read(object_type: str, *, mappings: Mappings | None = None) -> tuple[str, ...]:
    """Properties to request when reading a record of this type from HubSpot (mapped properties and aliases)."""
    return resolve(mappings).object(resolve_object_type(object_type)).mapped_properties
