"""The simulated portal's CRM data: records, properties and groups, unique indexes.

Plain in-memory structures, no I/O. Every write takes a ``Source`` (who made
it: ``INTEGRATION`` for API writes, ``CRM_UI`` for the simulator's UI edits)
and, when change tracking is on, reports ``Change`` objects that the webhook
dispatcher turns into events.

Batch semantics follow HubSpot: request-level problems (malformed JSON, more
than 100 inputs, a property that does not exist, duplicate ids in one batch)
reject the whole request with 400; problems of one input (an invalid value, a
unique-value conflict, an unknown id) leave the other inputs to succeed and
make the answer a 207 with per-input ``errors``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from libs.hubspot.objects import OBJECTS, ObjectType
from sim.hubspot.associations import AssociationStore
from sim.hubspot.errors import ApiError, batch_error, not_found, validation_error
from sim.hubspot.schema import (
    FIELD_TYPES,
    PROPERTY_TYPES,
    PropertyDef,
    ValueProblem,
    built_in_properties,
    check_property_name,
    check_value,
    default_group,
    default_groups,
)

BATCH_LIMIT = 100
_ANY, _CHECK, _READ_ONLY = 0, 1, 2

# Properties returned when a read names none.
_DEFAULT_READ: dict[ObjectType, tuple[str, ...]] = {
    ObjectType.COMPANIES: ("name", "domain"),
    ObjectType.DEALS: ("dealname", "amount", "closedate", "pipeline", "dealstage"),
    ObjectType.PRODUCTS: ("name", "description", "price"),
    ObjectType.LINE_ITEMS: ("name", "quantity", "price", "amount"),
    ObjectType.INVOICES: ("hs_number", "hs_currency"),
    ObjectType.SUBSCRIPTIONS: ("hs_name", "hs_status"),
    ObjectType.PROJECTS: ("hs_name", "hs_status"),
}
_SYSTEM_READ = ("createdate", "hs_lastmodifieddate", "hs_object_id")


def now_iso() -> str:
    moment = datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


class Source(NamedTuple):
    """Who made a change: HubSpot's ``changeSource`` and ``sourceId``."""

    change_source: str
    source_id: str


@dataclass(frozen=True)
class Change:
    kind: str  # "creation" | "propertyChange" | "deletion" | "merge"
    object_type: ObjectType
    object_id: int
    property_name: str | None
    value: str | None
    occurred_at: int
    source: Source
    merged_ids: tuple[int, ...] = ()  # merge: the records folded into object_id


class Record:
    __slots__ = ("created_at", "id", "properties", "updated_at")

    def __init__(self, record_id: int, properties: dict[str, str], at: str) -> None:
        self.id = record_id
        self.properties = properties
        self.created_at = at
        self.updated_at = at

    def to_json(self, names: Iterable[str] | None, include_all: bool = False) -> dict[str, Any]:
        props = self.properties
        shown = dict(props) if include_all else {n: props.get(n) for n in names or ()}
        return {
            "id": str(self.id),
            "properties": shown,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "archived": False,
        }


class BatchAnswer(NamedTuple):
    results: list[dict[str, Any]]
    errors: list[dict[str, Any]]


_Cleaned = tuple[dict[str, str], list[ValueProblem]]


def _problems_message(problems: list[ValueProblem]) -> str:
    return "Property values were not valid: " + orjson.dumps([p.to_json() for p in problems]).decode()


class CrmStore:
    """Records, properties and groups of one portal."""

    def __init__(self, *, strict_value_types: bool = False, shuffle_results: bool = True) -> None:
        self.strict_value_types = strict_value_types
        self.shuffle_results = shuffle_results
        self.on_change: Callable[[list[Change]], None] | None = None
        self.non_string_values = 0
        self.reset()

    # --- lifecycle --------------------------------------------------------------

    def reset(self) -> None:
        """Back to a fresh portal: HubSpot's properties only, no records."""
        at = now_iso()
        self.properties: dict[ObjectType, dict[str, PropertyDef]] = {
            t: built_in_properties(t, at) for t in ObjectType
        }
        self.groups: dict[ObjectType, dict[str, dict[str, Any]]] = {t: default_groups(t) for t in ObjectType}
        self.non_string_values = 0
        self._plans: dict[ObjectType, dict[str, int]] = {}
        self.wipe()

    def wipe(self) -> None:
        """Drop every record and association; keep properties and groups."""
        self.records: dict[ObjectType, dict[int, Record]] = {t: {} for t in ObjectType}
        self._ids: dict[ObjectType, list[int]] = {t: [] for t in ObjectType}
        self.unique: dict[ObjectType, dict[str, dict[str, int]]] = {
            t: {n: {} for n, p in self.properties[t].items() if p.has_unique_value} for t in ObjectType
        }
        self._next_id = 10_001
        self.archived_count = 0
        self.associations = AssociationStore()

    def counts(self) -> dict[str, int]:
        return {t.value: len(r) for t, r in self.records.items()}

    # --- properties -------------------------------------------------------------

    def create_property(self, object_type: ObjectType, body: Any) -> PropertyDef:
        if not isinstance(body, dict):
            raise validation_error("Invalid input JSON: expected a property definition object.")
        name = body.get("name")
        problem = check_property_name(name)
        if problem:
            raise validation_error(problem)
        assert isinstance(name, str)
        if name in self.properties[object_type]:
            raise ApiError(409, "OBJECT_ALREADY_EXISTS", f"Property named '{name}' already exists.")
        prop_type, field_type = body.get("type"), body.get("fieldType")
        if prop_type not in PROPERTY_TYPES:
            raise validation_error(f"Property type {prop_type!r} is invalid; use one of {sorted(PROPERTY_TYPES)}.")
        if field_type not in FIELD_TYPES:
            raise validation_error(f"Field type {field_type!r} is invalid; use one of {sorted(FIELD_TYPES)}.")
        label = body.get("label")
        if not isinstance(label, str) or not label:
            raise validation_error("A property needs a non-empty 'label'.")
        group = body.get("groupName") or default_group(object_type)
        if group not in self.groups[object_type]:
            raise validation_error(f"Property group '{group}' does not exist for {object_type.value}.")
        unique = body.get("hasUniqueValue", False)
        if not isinstance(unique, bool):
            raise validation_error("'hasUniqueValue' must be a boolean.")
        options = body.get("options") or []
        if prop_type == "enumeration" and not options:
            raise validation_error("Enumeration properties need 'options'.")
        if not isinstance(options, list) or not all(isinstance(o, dict) and "value" in o for o in options):
            raise validation_error("'options' must be a list of {label, value} objects.")
        at = now_iso()
        prop = PropertyDef(
            name=name,
            label=label,
            type=str(prop_type),
            field_type=str(field_type),
            group_name=str(group),
            has_unique_value=unique,
            description=str(body.get("description") or ""),
            options=options,
            display_order=int(body.get("displayOrder", -1)) if isinstance(body.get("displayOrder", -1), int) else -1,
            created_at=at,
            updated_at=at,
        )
        if unique:
            self.unique[object_type][name] = {}  # a new property has no values yet
        self.properties[object_type][name] = prop
        self._plans.pop(object_type, None)
        return prop

    def update_property(self, object_type: ObjectType, name: str, body: Any) -> PropertyDef:
        prop = self.get_property(object_type, name)
        if not isinstance(body, dict):
            raise validation_error("Invalid input JSON: expected an object.")
        if prop.hubspot_defined and set(body) - {"label", "description", "options", "displayOrder"}:
            raise validation_error(f"Property '{name}' is defined by HubSpot; only its label can change.")
        if "label" in body and isinstance(body["label"], str):
            prop.label = body["label"]
        if "description" in body and isinstance(body["description"], str):
            prop.description = body["description"]
        if "options" in body and isinstance(body["options"], list):
            prop.options = body["options"]
        if "groupName" in body:
            if body["groupName"] not in self.groups[object_type]:
                raise validation_error(f"Property group '{body['groupName']}' does not exist.")
            prop.group_name = str(body["groupName"])
        prop.updated_at = now_iso()
        self._plans.pop(object_type, None)
        return prop

    def archive_property(self, object_type: ObjectType, name: str) -> None:
        prop = self.get_property(object_type, name)
        if prop.hubspot_defined:
            raise validation_error(f"Property '{name}' is defined by HubSpot and cannot be archived.")
        del self.properties[object_type][name]
        self._plans.pop(object_type, None)
        self.unique[object_type].pop(name, None)
        for record in self.records[object_type].values():
            record.properties.pop(name, None)

    def get_property(self, object_type: ObjectType, name: str) -> PropertyDef:
        prop = self.properties[object_type].get(name)
        if prop is None:
            raise not_found(f"Unable to find property {name} for object type {object_type.value}")
        return prop

    def create_group(self, object_type: ObjectType, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise validation_error("Invalid input JSON: expected a property group object.")
        name = body.get("name")
        problem = check_property_name(name)
        if problem:
            raise validation_error(problem.replace("Property name", "Group name"))
        assert isinstance(name, str)
        if name in self.groups[object_type]:
            raise ApiError(409, "OBJECT_ALREADY_EXISTS", f"Property group named '{name}' already exists.")
        label = body.get("label")
        if not isinstance(label, str) or not label:
            raise validation_error("A property group needs a non-empty 'label'.")
        order = body.get("displayOrder", -1)
        group = {"name": name, "label": label, "displayOrder": order if isinstance(order, int) else -1,
                 "archived": False}
        self.groups[object_type][name] = group
        return group

    # --- values ---

    def _plan(self, object_type: ObjectType) -> dict[str, int]:
        """Per property: 0 = any string goes, 1 = check the value, 2 = read-only (cached; hot path)."""
        plan = self._plans.get(object_type)
        if plan is None:
            plan = {}
            for name, prop in self.properties[object_type].items():
                if prop.read_only:
                    plan[name] = _READ_ONLY
                elif prop.type != "string":
                    plan[name] = _CHECK
                else:
                    plan[name] = _ANY
            self._plans[object_type] = plan
        return plan

    def _clean(self, object_type: ObjectType, props: Any, unknown: set[str]) -> _Cleaned:
        """Strings for every value, and the per-input problems; unknown names go to ``unknown``.

        Returns ``props`` itself when every value is already a valid string (the common case).
        """
        if props is None:
            return {}, []
        if type(props) is not dict:
            raise validation_error("Invalid input JSON: 'properties' must be an object of strings.")
        plan = self._plan(object_type)
        problems: list[ValueProblem] = []
        clean: dict[str, str] = props
        copied = False
        for name, value in props.items():
            need = plan.get(name)
            if need == _ANY and type(value) is str:
                continue
            if not copied:
                clean = dict(props)
                copied = True
            if need is None:
                unknown.add(name)
                del clean[name]
                continue
            if type(value) is not str:
                value = self._coerce(name, value, problems)
                if value is None:
                    del clean[name]
                    continue
                clean[name] = value
            if need == _READ_ONLY:
                problems.append(ValueProblem(name, "READ_ONLY_VALUE",
                                             f"{name} is a read only property; its value cannot be set."))
                del clean[name]
                continue
            if need == _CHECK:
                problem = check_value(self.properties[object_type][name], value)
                if problem:
                    problems.append(problem)
                    del clean[name]
        return clean, problems

    def _coerce(self, name: str, value: Any, problems: list[ValueProblem]) -> str | None:
        if isinstance(value, dict | list):
            raise validation_error(
                f"Invalid input JSON on line 1: property '{name}' has an object or array value; "
                "property values are strings."
            )
        self.non_string_values += 1
        if self.strict_value_types:
            problems.append(ValueProblem(name, "INVALID_TYPE", f"{name} must be a string, got {value!r}."))
            return None
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    @staticmethod
    def _raise_unknown(object_type: ObjectType, unknown: set[str]) -> None:
        problems = [
            ValueProblem(n, "PROPERTY_DOESNT_EXIST", f'Property "{n}" does not exist') for n in sorted(unknown)
        ]
        raise validation_error(_problems_message(problems))

    # --- writes -------------------------------------------------------------------

    def _new_record(self, object_type: ObjectType, at: str) -> Record:
        record_id = self._next_id
        self._next_id += 1
        record = Record(record_id, {"hs_object_id": str(record_id), "createdate": at, "hs_lastmodifieddate": at}, at)
        self.records[object_type][record_id] = record
        self._ids[object_type].append(record_id)
        return record

    def _unique_conflict(self, object_type: ObjectType, record_id: int | None, clean: dict[str, str]) -> str | None:
        indexes = self.unique[object_type]
        for name, index in indexes.items():
            value = clean.get(name)
            if value:
                owner = index.get(value)
                if owner is not None and owner != record_id:
                    return f'A {object_type.value} record with "{name}" = "{value}" already exists ({owner}).'
        return None

    def _apply(self, object_type: ObjectType, record: Record, clean: dict[str, str], at: str,
               changes: list[Change] | None, source: Source, occurred: int) -> None:
        props = record.properties
        indexes = self.unique[object_type]
        changed = False
        for name, value in clean.items():
            old = props.get(name)
            if old == value:
                continue
            if value == "":
                if old is None:
                    continue
                del props[name]
            else:
                props[name] = value
            changed = True
            if name in indexes:
                index = indexes[name]
                if old:
                    index.pop(old, None)
                if value:
                    index[value] = record.id
            if changes is not None:
                changes.append(Change("propertyChange", object_type, record.id, name, value, occurred, source))
        if changed:
            props["hs_lastmodifieddate"] = at
            record.updated_at = at

    def _emit(self, changes: list[Change] | None) -> None:
        if changes and self.on_change is not None:
            self.on_change(changes)

    def _tracking(self) -> list[Change] | None:
        return [] if self.on_change is not None else None

    def _create(self, object_type: ObjectType, clean: dict[str, str], at: str, changes: list[Change] | None,
                source: Source, occurred: int) -> Record:
        record = self._new_record(object_type, at)
        if changes is not None:
            changes.append(Change("creation", object_type, record.id, None, None, occurred, source))
        self._apply(object_type, record, clean, at, changes, source, occurred)
        record.properties["hs_lastmodifieddate"] = at
        record.updated_at = at
        return record

    def _result(self, record: Record, clean: dict[str, str], extra: dict[str, Any] | None) -> dict[str, Any]:
        props = record.properties
        shown = dict(clean)
        shown["createdate"] = props["createdate"]
        shown["hs_lastmodifieddate"] = props["hs_lastmodifieddate"]
        shown["hs_object_id"] = props["hs_object_id"]
        result = {"id": str(record.id), "properties": shown, "createdAt": record.created_at,
                  "updatedAt": record.updated_at, "archived": False}
        if extra:
            result.update(extra)
        return result

    def _finish(self, answer: BatchAnswer) -> BatchAnswer:
        if self.shuffle_results and len(answer.results) > 1:
            random.shuffle(answer.results)
        return answer

    @staticmethod
    def parse_inputs(body: Any, *, limit: int = BATCH_LIMIT) -> list[Any]:
        if not isinstance(body, dict):
            raise validation_error("Invalid input JSON: expected an object with 'inputs'.")
        inputs = body.get("inputs")
        if not isinstance(inputs, list):
            raise validation_error("Invalid input JSON: 'inputs' must be a list.")
        if len(inputs) > limit:
            raise validation_error(
                f"Batch input size {len(inputs)} exceeds the maximum of {limit} inputs.",
                context={"limit": [str(limit)]},
            )
        for item in inputs:
            if not isinstance(item, dict):
                raise validation_error("Invalid input JSON: every input must be an object.")
        return inputs

    def batch_create(self, object_type: ObjectType, body: Any, source: Source) -> BatchAnswer:
        inputs = self.parse_inputs(body)
        unknown: set[str] = set()
        cleaned = [self._clean(object_type, item.get("properties"), unknown) for item in inputs]
        if unknown:
            self._raise_unknown(object_type, unknown)
        at, occurred = now_iso(), now_ms()
        changes = self._tracking()
        answer = BatchAnswer([], [])
        for item, (clean, problems) in zip(inputs, cleaned, strict=True):
            trace = _trace(item)
            context = {"objectWriteTraceId": [trace]} if trace is not None else {}
            if problems:
                answer.errors.append(batch_error("VALIDATION_ERROR", _problems_message(problems),
                                                 {**context, "properties": [p.name for p in problems]}))
                continue
            conflict = self._unique_conflict(object_type, None, clean)
            if conflict:
                answer.errors.append(batch_error("CONFLICT", conflict, context))
                continue
            record = self._create(object_type, clean, at, changes, source, occurred)
            answer.results.append(self._result(record, clean, {"objectWriteTraceId": trace} if trace else None))
        self._emit(changes)
        return self._finish(answer)

    def _find(self, object_type: ObjectType, id_value: str, id_property: str | None) -> Record | None:
        if id_property in (None, "", "hs_object_id"):
            try:
                return self.records[object_type].get(int(id_value))
            except ValueError:
                return None
        assert id_property is not None
        found = self.unique[object_type][id_property].get(id_value)
        return None if found is None else self.records[object_type].get(found)

    def _check_id_property(self, object_type: ObjectType, id_property: Any) -> str | None:
        if id_property in (None, "", "hs_object_id"):
            return None
        if not isinstance(id_property, str):
            raise validation_error("'idProperty' must be a string.")
        prop = self.properties[object_type].get(id_property)
        if prop is None:
            raise validation_error(f"Property '{id_property}' does not exist; idProperty must name a unique property.")
        if not prop.has_unique_value:
            raise validation_error(f"Property '{id_property}' is not unique; idProperty needs hasUniqueValue.")
        return id_property

    @staticmethod
    def _input_id(item: dict[str, Any]) -> str:
        value = item.get("id")
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value:
            raise validation_error("Invalid input JSON: every input needs a non-empty string 'id'.")
        return value

    def batch_update(self, object_type: ObjectType, body: Any, source: Source) -> BatchAnswer:
        return self._update_or_upsert(object_type, body, source, upsert=False)

    def batch_upsert(self, object_type: ObjectType, body: Any, source: Source) -> BatchAnswer:
        return self._update_or_upsert(object_type, body, source, upsert=True)

    def _update_or_upsert(self, object_type: ObjectType, body: Any, source: Source, *, upsert: bool) -> BatchAnswer:
        inputs = self.parse_inputs(body)
        unknown: set[str] = set()
        checked_id_properties: dict[Any, str | None] = {}
        keys: list[tuple[str, str | None]] = []
        for item in inputs:
            raw_property = item.get("idProperty")
            if raw_property not in checked_id_properties:
                checked_id_properties[raw_property] = self._check_id_property(object_type, raw_property)
            keys.append((self._input_id(item), checked_id_properties[raw_property]))
        if len(set(keys)) != len(keys):
            seen: set[tuple[str, str | None]] = set()
            dupes = sorted({k[0] for k in keys if k in seen or seen.add(k)})  # type: ignore[func-returns-value]
            raise validation_error(f"Duplicate IDs found in batch input: {dupes}. IDs must be unique")
        cleaned = [self._clean(object_type, item.get("properties"), unknown) for item in inputs]
        if unknown:
            self._raise_unknown(object_type, unknown)
        at, occurred = now_iso(), now_ms()
        changes = self._tracking()
        answer = BatchAnswer([], [])
        results, errors = answer.results, answer.errors
        for item, (id_value, id_property), (clean, problems) in zip(inputs, keys, cleaned, strict=True):
            trace = item.get("objectWriteTraceId")
            if problems:
                context = _context(id_value, trace)
                context["properties"] = [p.name for p in problems]
                errors.append(batch_error("VALIDATION_ERROR", _problems_message(problems), context))
                continue
            record = self._find(object_type, id_value, id_property)
            if record is None and not (upsert and id_property):
                errors.append(batch_error("OBJECT_NOT_FOUND", f"Could not find {object_type.value} with "
                                          f"{id_property or 'hs_object_id'} {id_value}.", _context(id_value, trace)))
                continue
            if id_property:
                clean = {**clean, id_property: id_value}
            conflict = self._unique_conflict(object_type, record.id if record else None, clean)
            if conflict:
                errors.append(batch_error("CONFLICT", conflict, _context(id_value, trace)))
                continue
            if record is None:
                record = self._create(object_type, clean, at, changes, source, occurred)
                new: bool | None = True
            else:
                self._apply(object_type, record, clean, at, changes, source, occurred)
                new = False if upsert else None
            result = self._result(record, clean, None)
            if trace is not None:
                result["objectWriteTraceId"] = str(trace)
            if new is not None:
                result["new"] = new
            results.append(result)
        self._emit(changes)
        return self._finish(answer)

    def batch_read(self, object_type: ObjectType, body: Any) -> BatchAnswer:
        inputs = self.parse_inputs(body)
        assert isinstance(body, dict)
        id_property = self._check_id_property(object_type, body.get("idProperty"))
        names = self._read_names(object_type, body.get("properties"))
        answer = BatchAnswer([], [])
        missing: list[str] = []
        seen: set[str] = set()
        for item in inputs:
            id_value = self._input_id(item)
            if id_value in seen:
                continue
            seen.add(id_value)
            record = self._find(object_type, id_value, id_property)
            if record is None:
                missing.append(id_value)
            else:
                answer.results.append(record.to_json(names))
        if missing:
            answer.errors.append(batch_error(
                "OBJECT_NOT_FOUND", "Could not get some " + object_type.value + " objects, they may be deleted "
                "or not exist. Check that ids are valid.", {"ids": missing}))
        return self._finish(answer)

    def batch_archive(self, object_type: ObjectType, body: Any, source: Source) -> None:
        inputs = self.parse_inputs(body)
        ids = [self._input_id(item) for item in inputs]
        changes = self._tracking()
        occurred = now_ms()
        for id_value in ids:
            self.archive(object_type, id_value, source, changes, occurred)
        self._emit(changes)

    def archive_one(self, object_type: ObjectType, id_value: str, source: Source) -> bool:
        """Archive one record (a deletion change when tracked); False if it did not exist."""
        changes = self._tracking()
        found = self.archive(object_type, id_value, source, changes)
        self._emit(changes)
        return found

    def archive(self, object_type: ObjectType, id_value: str, source: Source,
                changes: list[Change] | None = None, occurred: int | None = None) -> bool:
        record = self._find(object_type, id_value, None)
        if record is None:
            return False
        del self.records[object_type][record.id]
        for name, index in self.unique[object_type].items():
            value = record.properties.get(name)
            if value:
                index.pop(value, None)
        self.associations.remove_object(object_type, record.id)
        self.archived_count += 1
        if changes is not None:
            changes.append(Change("deletion", object_type, record.id, None, None, occurred or now_ms(), source))
        return True

    def merge(self, object_type: ObjectType, primary_id: str, merged_id: str, source: Source) -> Record:
        """Fold ``merged_id`` into ``primary_id`` as HubSpot's merge does: the primary keeps its id and
        values, gains the values it lacked, and lists the merged id in ``hs_merged_object_ids``; the
        merged record disappears. One ``merge`` change, no deletion."""
        primary = self.get_one(object_type, primary_id)
        merged = self.get_one(object_type, merged_id)
        if primary.id == merged.id:
            raise validation_error("A record cannot be merged into itself.")
        changes = self._tracking()
        occurred, at = now_ms(), now_iso()
        moved = {n: v for n, v in merged.properties.items()
                 if n not in primary.properties and n not in ("hs_object_id", "createdate", "hs_lastmodifieddate")
                 and n not in self.unique[object_type]}
        listed = [i for i in primary.properties.get("hs_merged_object_ids", "").split(";") if i]
        del self.records[object_type][merged.id]
        for name, index in self.unique[object_type].items():
            value = merged.properties.get(name)
            if value and index.get(value) == merged.id:
                del index[value]
        self.associations.remove_object(object_type, merged.id)
        primary.properties.update(moved)
        primary.properties["hs_merged_object_ids"] = ";".join([*listed, str(merged.id)])
        primary.properties["hs_lastmodifieddate"] = at
        primary.updated_at = at
        if changes is not None:
            changes.append(Change("merge", object_type, primary.id, None, None, occurred, source, (merged.id,)))
        self._emit(changes)
        return primary

    # --- single-record operations (also used by the UI simulation) ----------------

    def create_one(self, object_type: ObjectType, body: Any, source: Source) -> Record:
        if not isinstance(body, dict):
            raise validation_error("Invalid input JSON: expected an object with 'properties'.")
        unknown: set[str] = set()
        clean, problems = self._clean(object_type, body.get("properties"), unknown)
        if unknown:
            self._raise_unknown(object_type, unknown)
        if problems:
            raise validation_error(_problems_message(problems))
        conflict = self._unique_conflict(object_type, None, clean)
        if conflict:
            raise ApiError(409, "CONFLICT", conflict)
        changes = self._tracking()
        record = self._create(object_type, clean, now_iso(), changes, source, now_ms())
        self._emit(changes)
        return record

    def update_one(self, object_type: ObjectType, id_value: str, id_property: str | None, body: Any,
                   source: Source) -> Record:
        if not isinstance(body, dict):
            raise validation_error("Invalid input JSON: expected an object with 'properties'.")
        record = self.get_one(object_type, id_value, id_property)
        unknown: set[str] = set()
        clean, problems = self._clean(object_type, body.get("properties"), unknown)
        if unknown:
            self._raise_unknown(object_type, unknown)
        if problems:
            raise validation_error(_problems_message(problems))
        conflict = self._unique_conflict(object_type, record.id, clean)
        if conflict:
            raise ApiError(409, "CONFLICT", conflict)
        changes = self._tracking()
        self._apply(object_type, record, clean, now_iso(), changes, source, now_ms())
        self._emit(changes)
        return record

    def get_one(self, object_type: ObjectType, id_value: str, id_property: str | None = None) -> Record:
        checked = self._check_id_property(object_type, id_property)
        record = self._find(object_type, id_value, checked)
        if record is None:
            raise not_found(f"Object not found. objectId are usually numeric. ({object_type.value} {id_value})")
        return record

    # --- reads ------------------------------------------------------------------------

    def _read_names(self, object_type: ObjectType, requested: Any) -> list[str]:
        if isinstance(requested, str):
            requested = [p for p in requested.split(",") if p]
        if not requested:
            return [*_DEFAULT_READ[object_type], *_SYSTEM_READ]
        if not isinstance(requested, list):
            raise validation_error("'properties' must be a list of property names.")
        defs = self.properties[object_type]
        names = [str(n) for n in requested if isinstance(n, str) and n in defs]
        for n in _SYSTEM_READ:
            if n not in names:
                names.append(n)
        return names

    def read_names(self, object_type: ObjectType, requested: Any) -> list[str]:
        return self._read_names(object_type, requested)

    def page(self, object_type: ObjectType, after: int, limit: int) -> tuple[list[Record], int | None]:
        """Records with id > ``after`` in id order, and the cursor of the next page (or None)."""
        import bisect

        ids = self._ids[object_type]
        records = self.records[object_type]
        if len(ids) > 2 * len(records) + 64:
            ids[:] = [i for i in ids if i in records]
        start = bisect.bisect_right(ids, after)
        found: list[Record] = []
        position = start
        while position < len(ids) and len(found) < limit:
            record = records.get(ids[position])
            if record is not None:
                found.append(record)
            position += 1
        more = any(ids[i] in records for i in range(position, len(ids)))
        return found, (found[-1].id if found and more else None)

    def iter_records(self, object_type: ObjectType) -> Iterator[Record]:
        yield from list(self.records[object_type].values())

    def object_path(self, object_type: ObjectType) -> str:
        return OBJECTS[object_type].objects_base


def _context(id_value: str, trace: Any) -> dict[str, list[str]]:
    context = {"ids": [id_value]}
    if trace is not None:
        context["objectWriteTraceId"] = [str(trace)]
    return context


def _trace(item: dict[str, Any]) -> str | None:
    trace = item.get("objectWriteTraceId")
    return str(trace) if trace is not None else None
