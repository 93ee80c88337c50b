"""Plain data the HubSpot client takes and returns: records, batch inputs and per-input outcomes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

_STRINGS = frozenset({str, type(None)})


@dataclass(frozen=True)
class HubSpotRecord:
    """One CRM record as HubSpot returns it; property values are strings (or None when unset)."""

    id: str
    properties: Mapping[str, str | None]
    created_at: str | None = None
    updated_at: str | None = None
    archived: bool = False

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> HubSpotRecord:
        props = raw.get("properties") or {}
        properties = dict(props)
        if not _STRINGS.issuperset(map(type, properties.values())):  # HubSpot sends strings (or null)
            properties = {str(k): (None if v is None else str(v)) for k, v in props.items()}
        return cls(
            id=str(raw.get("id")),
            properties=properties,
            created_at=raw.get("createdAt"),
            updated_at=raw.get("updatedAt"),
            archived=bool(raw.get("archived", False)),
        )


@dataclass(frozen=True)
class RecordInput:
    """One input of a batch write. ``id`` is the record id (update) or the ``id_property`` value (upsert)."""

    properties: Mapping[str, str]
    id: str | None = None


@dataclass(frozen=True)
class InputSucceeded:
    """The input at ``index`` (position in the caller's sequence) was written or read."""

    index: int
    id: str  # hs_object_id
    # The record, or HubSpot's JSON for it, read into a HubSpotRecord when ``record`` is first asked for:
    # a batch upsert's caller mostly wants the id alone, and a record per answer was a tenth of its CPU.
    answer: HubSpotRecord | Mapping[str, Any]
    new: bool | None = None  # upsert: True when created, False when updated

    @cached_property
    def record(self) -> HubSpotRecord:
        answer = self.answer
        return answer if isinstance(answer, HubSpotRecord) else HubSpotRecord.from_json(answer)


@dataclass(frozen=True)
class InputFailed:
    """The input at ``index`` failed; ``category``/``message`` are HubSpot's own words.

    ``whole_chunk`` is True when HubSpot refused the whole request the input
    travelled in (e.g. a property that does not exist), not this input alone.
    """

    index: int
    category: str
    message: str
    status: int | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    whole_chunk: bool = False


Outcome = InputSucceeded | InputFailed


@dataclass(frozen=True)
class BatchResult:
    """Per-input outcomes of a (chunked) batch call; every input index appears exactly once."""

    succeeded: tuple[InputSucceeded, ...] = ()
    failed: tuple[InputFailed, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed

    def ids(self) -> dict[int, str]:
        """Input index → hs_object_id, for the inputs that succeeded."""
        return {s.index: s.id for s in self.succeeded}

    def outcomes(self) -> dict[int, Outcome]:
        found: dict[int, Outcome] = {s.index: s for s in self.succeeded}
        found.update({f.index: f for f in self.failed})
        return found

    @staticmethod
    def merge(parts: Sequence[BatchResult]) -> BatchResult:
        succeeded = sorted((s for p in parts for s in p.succeeded), key=lambda s: s.index)
        failed = sorted((f for p in parts for f in p.failed), key=lambda f: f.index)
        return BatchResult(tuple(succeeded), tuple(failed))


@dataclass(frozen=True)
class PropertySpec:
    """A property the integration needs (``POST /crm/v3/properties/{type}``)."""

    name: str
    label: str
    type: str = "string"
    field_type: str = "text"
    group_name: str | None = None
    has_unique_value: bool = False
    description: str = ""
    options: tuple[Mapping[str, Any], ...] = ()

    def to_json(self, default_group: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "groupName": self.group_name or default_group,
            "hasUniqueValue": self.has_unique_value,
            "description": self.description,
        }
        if self.options:
            body["options"] = [dict(o) for o in self.options]
        return body


@dataclass(frozen=True)
class PropertyInfo:
    """A property as the portal defines it."""

    name: str
    label: str
    type: str
    field_type: str
    group_name: str
    has_unique_value: bool
    hubspot_defined: bool

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PropertyInfo:
        return cls(
            name=str(raw.get("name")),
            label=str(raw.get("label", "")),
            type=str(raw.get("type", "")),
            field_type=str(raw.get("fieldType", "")),
            group_name=str(raw.get("groupName", "")),
            has_unique_value=bool(raw.get("hasUniqueValue", False)),
            hubspot_defined=bool(raw.get("hubspotDefined", False)),
        )


@dataclass(frozen=True)
class PropertyGroupSpec:
    name: str
    label: str


@dataclass(frozen=True)
class EnsureReport:
    """What ``ensure_properties`` did: created, already there, or there but different (left alone)."""

    created: tuple[str, ...] = ()
    existing: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()  # same name, different type or uniqueness: fix by hand
    group_created: bool = False


@dataclass(frozen=True)
class AssociationInput:
    """``from_id`` → ``to_id``; ``type_id`` None means HubSpot's default association for the pair."""

    from_id: str
    to_id: str
    type_id: int | None = None


@dataclass(frozen=True)
class AssociationFailed:
    index: int
    category: str
    message: str
    whole_chunk: bool = False


@dataclass(frozen=True)
class AssociationResult:
    written: int = 0
    failed: tuple[AssociationFailed, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class Association:
    to_id: str
    type_ids: tuple[int, ...]
