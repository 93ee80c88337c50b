"""The loaded, validated mappings: frozen dataclasses, no behaviour beyond look-ups.

A ``Mappings`` holds one ``ObjectMapping`` per Kleer object type; each has the
ordered ``FieldMapping``s (one per HubSpot property written outbound or read
inbound) and the trigger properties. Build one with ``load_mappings``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from libs.mapping.objects import PROPERTY_GROUP, HubSpotObject, resolve_object_type
from libs.mapping.transforms import TRANSFORMS, EnumTable, Transform


class Direction(StrEnum):
    """Which way a field flows. ``two_way`` fields are the ones inbound sync writes to Kleer."""

    TWO_WAY = "two_way"
    TO_HUBSPOT = "to_hubspot"
    TO_KLEER = "to_kleer"


@dataclass(frozen=True)
class PropertyOption:
    label: str
    value: str
    display_order: int

    def to_api(self) -> dict[str, object]:
        return {"label": self.label, "value": self.value, "displayOrder": self.display_order}


@dataclass(frozen=True)
class PropertyDefinition:
    """A HubSpot property our setup step creates (``POST /crm/v3/properties/{object}``)."""

    hubspot_object: str
    name: str
    label: str
    type: str
    field_type: str
    group_name: str = PROPERTY_GROUP.name
    has_unique_value: bool = False
    description: str = ""
    options: tuple[PropertyOption, ...] = ()

    def to_api(self) -> dict[str, object]:
        """The request body HubSpot's properties API expects."""
        body: dict[str, object] = {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "groupName": self.group_name,
            "hasUniqueValue": self.has_unique_value,
        }
        if self.description:
            body["description"] = self.description
        if self.options:
            body["options"] = [o.to_api() for o in self.options]
        return body


@dataclass(frozen=True)
class FieldMapping:
    """One HubSpot property and where its value comes from / goes to in Kleer.

    Exactly one of ``kleer`` (a dotted path into the Kleer record, e.g.
    ``address.zip-code``) and ``compute`` (a named derived value such as
    ``agreement_mrr``, outbound only) is set. ``default`` is a Kleer-side value
    used when the source is empty. ``aliases`` are other HubSpot properties
    that hold the same fact (read inbound, never written).
    """

    hubspot_property: str
    direction: Direction
    transform: str
    kleer: str | None = None
    compute: str | None = None
    values: EnumTable | None = None
    default: object = None
    aliases: tuple[str, ...] = ()
    required: bool = False
    label: str = ""
    custom: PropertyDefinition | None = None

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.kleer.split(".")) if self.kleer else ()

    @property
    def source(self) -> str:
        """The Kleer path, or ``=name`` for a computed value (for messages)."""
        return self.kleer if self.kleer else f"={self.compute}"

    @property
    def codec(self) -> Transform:
        return TRANSFORMS[self.transform]

    @property
    def writes_hubspot(self) -> bool:
        return self.direction in (Direction.TWO_WAY, Direction.TO_HUBSPOT)

    @property
    def writes_kleer(self) -> bool:
        return self.direction in (Direction.TWO_WAY, Direction.TO_KLEER)

    @property
    def hubspot_properties(self) -> tuple[str, ...]:
        """The canonical property first, then its aliases (the inbound reading order)."""
        return (self.hubspot_property, *self.aliases)


@dataclass(frozen=True)
class ObjectMapping:
    object_type: str
    hubspot_object: HubSpotObject
    fields: tuple[FieldMapping, ...]
    triggers: tuple[str, ...]

    def field(self, prop: str) -> FieldMapping:
        """The field whose canonical property (or alias) is ``prop``; ``KeyError`` if none."""
        for candidate in self.fields:
            if prop in candidate.hubspot_properties:
                return candidate
        raise KeyError(f"{self.object_type}: no field maps HubSpot property {prop!r}")

    @property
    def mapped_properties(self) -> tuple[str, ...]:
        """Every mapped HubSpot property (canonical and aliases), in file order, no duplicates."""
        seen: dict[str, None] = {}
        for f in self.fields:
            for prop in f.hubspot_properties:
                seen.setdefault(prop, None)
        return tuple(seen)


@dataclass(frozen=True)
class Mappings:
    """All object mappings, as loaded from ``source`` (``"<defaults>"`` or a file path)."""

    objects: tuple[ObjectMapping, ...]
    source: str = "<defaults>"
    _index: dict[str, ObjectMapping] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for obj in self.objects:
            self._index[obj.object_type] = obj

    def object(self, object_type: str) -> ObjectMapping:
        """The mapping of a Kleer object type (or of the HubSpot object it syncs to)."""
        kleer_type = resolve_object_type(object_type)
        try:
            return self._index[kleer_type]
        except KeyError:
            raise KeyError(f"no mapping for object type {kleer_type!r} in {self.source}") from None
