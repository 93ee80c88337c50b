"""Load, merge and validate the mappings file (the only I/O in ``libs.mapping``).

``load_mappings(None)`` returns the built-in defaults
(``libs/mapping/default_mappings.yaml``). ``load_mappings(path)`` lays the
user's file over the defaults, per object type:

- a field whose ``property`` matches a default field replaces it (same position);
- a field with a new ``property`` is appended;
- ``{property: x, remove: true}`` drops the default field for ``x``;
- ``replace_fields: true`` drops all default fields of that object first;
- ``triggers:`` replaces the object's trigger list.

Everything is validated after merging; the first problem raises
``MappingsFileError`` naming the file the offending entry came from, the
object type and the field, and saying what to change.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from libs.mapping.computed import COMPUTED
from libs.mapping.errors import MappingsFileError, TransformError
from libs.mapping.model import (
    Direction,
    FieldMapping,
    Mappings,
    ObjectMapping,
    PropertyDefinition,
    PropertyOption,
)
from libs.mapping.objects import (
    CLIENT,
    HUBSPOT_OBJECT_FOR,
    INBOUND_OBJECT_TYPES,
    KLEER_ID,
    KLEER_OBJECT_TYPES,
    PROJECT,
    PROPERTY_GROUP,
    HubSpotObject,
    hubspot_object,
)
from libs.mapping.seed import TRIGGER_PROPERTIES
from libs.mapping.transforms import TRANSFORMS, EnumOption, EnumTable

DEFAULT_SOURCE = "libs/mapping/default_mappings.yaml"
FORMAT_VERSION = 1

_TOP_KEYS = ("version", "objects")
_OBJECT_KEYS = ("hubspot_object", "fields", "triggers", "replace_fields")
_FIELD_KEYS = (
    "property",
    "kleer",
    "compute",
    "direction",
    "transform",
    "values",
    "default",
    "aliases",
    "required",
    "custom",
    "label",
    "remove",
)
_CUSTOM_KEYS = ("label", "type", "field_type", "group", "unique", "description")
_PROPERTY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PATH_SEGMENT = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_HUBSPOT_TYPES = ("string", "number", "date", "datetime", "enumeration", "bool")
_FIELD_TYPES = (
    "text",
    "textarea",
    "number",
    "date",
    "select",
    "radio",
    "checkbox",
    "booleancheckbox",
    "phonenumber",
)


@dataclass
class _RawField:
    source: str
    position: int
    data: dict[str, Any]

    @property
    def property(self) -> str:
        return str(self.data.get("property", ""))

    def where(self) -> str:
        name = self.data.get("property")
        return f"#{self.position} ({name})" if name else f"#{self.position}"


@dataclass
class _RawObject:
    source: str
    fields: list[_RawField]
    triggers: list[str] | None


# ---------------------------------------------------------------- reading
def _read_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise MappingsFileError(
            f"is not valid YAML{at}: {problem}",
            source=source,
            fix="fix the YAML syntax (indentation, quotes, colons)",
        ) from exc


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}allowed: {', '.join(choices)}"


def _parse_document(document: Any, source: str) -> dict[str, _RawObject]:
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise MappingsFileError(
            "the top level must be a mapping",
            source=source,
            fix="start the file with `version: 1` and `objects:`",
        )
    for key in document:
        if key not in _TOP_KEYS:
            raise MappingsFileError(
                f"unknown top-level key {key!r}", source=source, fix=_suggest(str(key), _TOP_KEYS)
            )
    version = document.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise MappingsFileError(
            f"unsupported format version {version!r}", source=source, fix=f"set `version: {FORMAT_VERSION}`"
        )
    objects = document.get("objects") or {}
    if not isinstance(objects, dict):
        raise MappingsFileError(
            "`objects` must be a mapping of object type to its settings",
            source=source,
            fix=f"use object types as keys: {', '.join(KLEER_OBJECT_TYPES)}",
        )
    return {str(name): _parse_object(str(name), body, source) for name, body in objects.items()}


def _parse_object(object_type: str, body: Any, source: str) -> _RawObject:
    if object_type not in KLEER_OBJECT_TYPES:
        raise MappingsFileError(
            f"unknown object type {object_type!r}",
            source=source,
            fix=_suggest(object_type, KLEER_OBJECT_TYPES),
        )
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise MappingsFileError(
            "must be a mapping with `fields`",
            source=source,
            object_type=object_type,
            fix="add `fields:` with a list",
        )
    for key in body:
        if key not in _OBJECT_KEYS:
            raise MappingsFileError(
                f"unknown key {key!r}",
                source=source,
                object_type=object_type,
                fix=_suggest(str(key), _OBJECT_KEYS),
            )
    expected = HUBSPOT_OBJECT_FOR[object_type]
    named = body.get("hubspot_object")
    if named is not None and _hubspot_object_or_none(str(named)) != expected:
        raise MappingsFileError(
            f"hubspot_object {named!r} does not match: {object_type} always syncs to {expected.name}",
            source=source,
            object_type=object_type,
            fix=f"write `hubspot_object: {expected.name}` or leave it out",
        )
    fields = body.get("fields") or []
    if not isinstance(fields, list):
        raise MappingsFileError(
            "`fields` must be a list",
            source=source,
            object_type=object_type,
            fix="write each field as `- property: ...`",
        )
    raw_fields = []
    for position, data in enumerate(fields, start=1):
        if not isinstance(data, dict):
            raise MappingsFileError(
                "each field must be a mapping",
                source=source,
                object_type=object_type,
                field=f"#{position}",
                fix="write it as `- {property: ..., kleer: ...}`",
            )
        raw_fields.append(_RawField(source, position, data))
    triggers = body.get("triggers")
    if triggers is not None:
        if object_type not in INBOUND_OBJECT_TYPES:
            raise MappingsFileError(
                "has no inbound sync, so it cannot have triggers",
                source=source,
                object_type=object_type,
                fix=f"remove `triggers` (only {', '.join(INBOUND_OBJECT_TYPES)} sync inbound)",
            )
        if not isinstance(triggers, list) or not all(
            isinstance(t, str) and _PROPERTY_NAME.match(t) for t in triggers
        ):
            raise MappingsFileError(
                "`triggers` must be a list of HubSpot property names",
                source=source,
                object_type=object_type,
                fix="list internal names such as `name`, `orgno`",
            )
    if body.get("replace_fields") not in (None, True, False):
        raise MappingsFileError(
            "`replace_fields` must be true or false",
            source=source,
            object_type=object_type,
            fix="write true or false",
        )
    if body.get("replace_fields"):
        raw_fields.insert(0, _RawField(source, 0, {"__replace__": True}))
    return _RawObject(source, raw_fields, triggers)


def _hubspot_object_or_none(name: str) -> HubSpotObject | None:
    try:
        return hubspot_object(name)
    except ValueError:
        return None


# ---------------------------------------------------------------- merging
def _merge(base: dict[str, _RawObject], overlay: dict[str, _RawObject]) -> dict[str, _RawObject]:
    merged = {name: _RawObject(obj.source, list(obj.fields), obj.triggers) for name, obj in base.items()}
    for name, extra in overlay.items():
        target = merged.setdefault(name, _RawObject(extra.source, [], None))
        target.source = extra.source  # object-level problems are now the overlay's to fix
        for raw in extra.fields:
            if raw.data.get("__replace__"):
                target.fields = []
                continue
            prop = raw.data.get("property")
            index = next((i for i, f in enumerate(target.fields) if f.data.get("property") == prop), None)
            if raw.data.get("remove") is True:
                if index is None:
                    raise MappingsFileError(
                        f"cannot remove property {prop!r}: no field maps it",
                        source=raw.source,
                        object_type=name,
                        field=raw.where(),
                        fix="check the property name, or delete this entry",
                    )
                del target.fields[index]
            elif index is None:
                target.fields.append(raw)
            else:
                target.fields[index] = raw
        if extra.triggers is not None:
            target.triggers = extra.triggers
    return merged


# ---------------------------------------------------------------- building
class _FieldBuilder:
    def __init__(self, object_type: str, raw: _RawField) -> None:
        self.object_type = object_type
        self.raw = raw
        self.data = raw.data

    def fail(self, problem: str, fix: str) -> MappingsFileError:
        return MappingsFileError(
            problem, source=self.raw.source, object_type=self.object_type, field=self.raw.where(), fix=fix
        )

    def build(self) -> FieldMapping:
        for key in self.data:
            if key not in _FIELD_KEYS:
                raise self.fail(f"unknown key {key!r}", _suggest(str(key), _FIELD_KEYS))
        if self.data.get("remove") not in (None, False):
            raise self.fail(
                "`remove` only works in a user file over a default field", "delete the `remove` key"
            )
        prop = self._property_name(self.data.get("property"), "property")
        direction = self._direction()
        transform = self._transform()
        kleer, compute = self._source(direction)
        values = self._values(transform, direction)
        field = FieldMapping(
            hubspot_property=prop,
            direction=direction,
            transform=transform,
            kleer=kleer,
            compute=compute,
            values=values,
            aliases=self._aliases(prop, direction),
            required=self._flag("required"),
            label="",
        )
        default = self._default(field)
        custom = self._custom(field)
        label = self.data.get("label")
        if label is not None and not isinstance(label, str):
            raise self.fail("`label` must be text", "quote the label")
        label = label or (custom.label if custom else prop)
        return FieldMapping(
            hubspot_property=prop,
            direction=direction,
            transform=transform,
            kleer=kleer,
            compute=compute,
            values=values,
            default=default,
            aliases=field.aliases,
            required=field.required,
            label=label,
            custom=custom,
        )

    def _property_name(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not _PROPERTY_NAME.match(value):
            raise self.fail(
                f"`{key}` must be a HubSpot internal property name, got {value!r}",
                "use the lowercase internal name (letters, digits, underscores), e.g. `vat_number`",
            )
        return value

    def _flag(self, key: str) -> bool:
        value = self.data.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(
                f"`{key}` must be true or false, got {value!r}", f"write `{key}: true` or leave it out"
            )
        return value

    def _direction(self) -> Direction:
        value = self.data.get("direction", Direction.TO_HUBSPOT.value)
        choices = [d.value for d in Direction]
        if value not in choices:
            raise self.fail(f"unknown direction {value!r}", _suggest(str(value), choices))
        direction = Direction(value)
        if direction != Direction.TO_HUBSPOT and self.object_type not in INBOUND_OBJECT_TYPES:
            raise self.fail(
                f"{self.object_type} only syncs Kleer -> HubSpot, so direction {value} is impossible",
                f"use `direction: to_hubspot` (inbound sync exists for {', '.join(INBOUND_OBJECT_TYPES)} only)",
            )
        return direction

    def _transform(self) -> str:
        value = self.data.get("transform", "text")
        if value not in TRANSFORMS:
            raise self.fail(f"unknown transform {value!r}", _suggest(str(value), list(TRANSFORMS)))
        return str(value)

    def _source(self, direction: Direction) -> tuple[str | None, str | None]:
        kleer, compute = self.data.get("kleer"), self.data.get("compute")
        if (kleer is None) == (compute is None):
            raise self.fail(
                "needs exactly one of `kleer` (a Kleer field path) and `compute`",
                "add `kleer: <path>` such as `address.zip-code`, or `compute: <name>`",
            )
        if compute is not None:
            if compute not in COMPUTED:
                raise self.fail(f"unknown computed value {compute!r}", _suggest(str(compute), list(COMPUTED)))
            if direction != Direction.TO_HUBSPOT:
                raise self.fail(
                    "a computed value can only be written to HubSpot", "use `direction: to_hubspot`"
                )
            return None, str(compute)
        if not isinstance(kleer, str) or not all(_PATH_SEGMENT.match(part) for part in kleer.split(".")):
            raise self.fail(
                f"`kleer` must be a dotted path of kebab-case keys, got {kleer!r}",
                "write it like `payment-days` or `address.zip-code`",
            )
        if (
            direction != Direction.TO_HUBSPOT
            and TRANSFORMS[str(self.data.get("transform", "text"))].decode is None
        ):
            raise self.fail(
                f"transform {self.data.get('transform')!r} only works Kleer -> HubSpot",
                "use `ore_to_decimal` for öre amounts, or `direction: to_hubspot`",
            )
        return kleer, None

    def _values(self, transform: str, direction: Direction) -> EnumTable | None:
        values = self.data.get("values")
        if transform != "enum":
            if values is not None:
                raise self.fail(
                    "`values` only applies to `transform: enum`", "remove `values` or set `transform: enum`"
                )
            return None
        options: list[EnumOption] = []
        if isinstance(values, dict):
            for kleer_value, hubspot_value in values.items():
                options.append(EnumOption(str(kleer_value), str(hubspot_value), str(kleer_value)))
        elif isinstance(values, list):
            for entry in values:
                if not isinstance(entry, dict) or "kleer" not in entry or "hubspot" not in entry:
                    raise self.fail(
                        "each enum value must have `kleer` and `hubspot`",
                        "write `- {kleer: Mail, hubspot: mail}`",
                    )
                options.append(
                    EnumOption(
                        str(entry["kleer"]), str(entry["hubspot"]), str(entry.get("label", entry["kleer"]))
                    )
                )
        else:
            raise self.fail(
                "`transform: enum` needs a `values` table", "add `values: {KleerValue: hubspot_value, ...}`"
            )
        if not options:
            raise self.fail("the enum `values` table is empty", "list at least one value")
        table = EnumTable(tuple(options))
        kleer_values = [o.kleer for o in options]
        if len(set(kleer_values)) != len(kleer_values):
            raise self.fail(
                "the enum `values` table lists a Kleer value twice", "keep one entry per Kleer value"
            )
        if direction != Direction.TO_HUBSPOT and not table.is_invertible():
            raise self.fail(
                "a two-way enum must map each Kleer value to its own HubSpot value",
                "give every entry a distinct `hubspot` value",
            )
        return table

    def _aliases(self, prop: str, direction: Direction) -> tuple[str, ...]:
        aliases = self.data.get("aliases")
        if aliases is None:
            return ()
        if direction == Direction.TO_HUBSPOT:
            raise self.fail(
                "`aliases` are read inbound, but this field only flows to HubSpot", "remove `aliases`"
            )
        if not isinstance(aliases, list):
            raise self.fail(
                "`aliases` must be a list of property names", "write `aliases: [email, kleer_email]`"
            )
        names = tuple(self._property_name(a, "aliases") for a in aliases)
        if prop in names or len(set(names)) != len(names):
            raise self.fail(
                "`aliases` repeat a property", "list each synonym once, without the field's own property"
            )
        return names

    def _default(self, field: FieldMapping) -> object:
        if "default" not in self.data:
            return None
        value = self.data["default"]
        if isinstance(value, float) or isinstance(value, dict | list):
            raise self.fail(
                f"`default` must be text, a whole number or true/false, got {value!r}",
                "write money as öre (an integer) and decimals as quoted text",
            )
        try:
            field.codec.encode(value, field.values)
        except TransformError as exc:
            raise self.fail(
                f"`default` {value!r} does not fit transform {field.transform}: {exc}", "fix the default"
            ) from exc
        return value

    def _custom(self, field: FieldMapping) -> PropertyDefinition | None:
        spec = self.data.get("custom")
        if spec is None or spec is False:
            return None
        if spec is True:
            spec = {}
        if not isinstance(spec, dict):
            raise self.fail("`custom` must be true or a mapping", "write `custom: {label: ...}`")
        for key in spec:
            if key not in _CUSTOM_KEYS:
                raise self.fail(f"unknown key custom.{key}", _suggest(str(key), _CUSTOM_KEYS))
        if field.hubspot_property.startswith("hs_"):
            raise self.fail(
                f"{field.hubspot_property!r} is a HubSpot property (hs_ prefix); we cannot create it",
                "remove `custom`, or pick a name without the hs_ prefix",
            )
        codec = field.codec
        prop_type = spec.get("type", codec.hubspot_type)
        field_type = spec.get("field_type", codec.field_type)
        if prop_type not in _HUBSPOT_TYPES:
            raise self.fail(f"unknown custom.type {prop_type!r}", _suggest(str(prop_type), _HUBSPOT_TYPES))
        if field_type not in _FIELD_TYPES:
            raise self.fail(
                f"unknown custom.field_type {field_type!r}", _suggest(str(field_type), _FIELD_TYPES)
            )
        unique = spec.get("unique", False)
        if not isinstance(unique, bool):
            raise self.fail("`custom.unique` must be true or false", "write `unique: true` or leave it out")
        options: tuple[PropertyOption, ...] = ()
        if prop_type == "enumeration":
            if field.values is None:
                raise self.fail(
                    "an enumeration property needs an enum `values` table", "set `transform: enum`"
                )
            seen: dict[str, str] = {}
            for option in field.values.options:
                seen.setdefault(option.hubspot, option.label)
            options = tuple(PropertyOption(label, value, i) for i, (value, label) in enumerate(seen.items()))
        elif prop_type == "bool":
            options = (PropertyOption("Yes", "true", 0), PropertyOption("No", "false", 1))
        return PropertyDefinition(
            hubspot_object=HUBSPOT_OBJECT_FOR[self.object_type].name,
            name=field.hubspot_property,
            label=str(spec.get("label") or field.hubspot_property.replace("_", " ").capitalize()),
            type=str(prop_type),
            field_type=str(field_type),
            group_name=str(spec.get("group", PROPERTY_GROUP.name)),
            has_unique_value=unique,
            description=str(spec.get("description", "")),
            options=options,
        )


def _build_object(object_type: str, raw: _RawObject) -> ObjectMapping:
    fields: list[FieldMapping] = []
    sources: dict[str, _RawField] = {}
    for raw_field in raw.fields:
        built = _FieldBuilder(object_type, raw_field).build()
        for prop in built.hubspot_properties:
            if prop in sources:
                other = sources[prop]
                raise MappingsFileError(
                    f"HubSpot property {prop!r} is mapped twice (also by field {other.where()} in {other.source})",
                    source=raw_field.source,
                    object_type=object_type,
                    field=raw_field.where(),
                    fix="keep one field per HubSpot property (aliases count too)",
                )
            sources[prop] = raw_field
        fields.append(built)
    _check_kleer_id(object_type, fields, raw, sources)
    _check_inbound_paths(object_type, fields, sources)
    triggers = _triggers(object_type, fields, raw)
    return ObjectMapping(object_type, HUBSPOT_OBJECT_FOR[object_type], tuple(fields), triggers)


def _check_kleer_id(
    object_type: str, fields: list[FieldMapping], raw: _RawObject, sources: Mapping[str, _RawField]
) -> None:
    id_field = next((f for f in fields if f.hubspot_property == KLEER_ID), None)
    if id_field is None or id_field.direction != Direction.TO_HUBSPOT:
        raise MappingsFileError(
            f"every object needs a `{KLEER_ID}` field written to HubSpot (upserts are keyed on it)",
            source=raw.source,
            object_type=object_type,
            field=KLEER_ID,
            fix=f"add `- {{property: {KLEER_ID}, kleer: id, custom: {{unique: true}}}}`",
        )
    if id_field.custom is None or not id_field.custom.has_unique_value:
        raise MappingsFileError(
            f"`{KLEER_ID}` must be a custom property with unique values",
            source=sources[KLEER_ID].source,
            object_type=object_type,
            field=KLEER_ID,
            fix="set `custom: {label: Kleer ID, unique: true}`",
        )


def _check_inbound_paths(
    object_type: str, fields: list[FieldMapping], sources: Mapping[str, _RawField]
) -> None:
    written: dict[str, str] = {}
    for field in fields:
        if not field.writes_kleer or field.kleer is None:
            continue
        for path, prop in written.items():
            if (
                path == field.kleer
                or path.startswith(field.kleer + ".")
                or field.kleer.startswith(path + ".")
            ):
                # Blame the user's file when one of the two fields comes from it.
                blamed = next(
                    (p for p in (field.hubspot_property, prop) if sources[p].source != DEFAULT_SOURCE),
                    field.hubspot_property,
                )
                raise MappingsFileError(
                    f"Kleer field {field.kleer!r} is written inbound by both {prop!r} and {field.hubspot_property!r}",
                    source=sources[blamed].source,
                    object_type=object_type,
                    field=sources[blamed].where(),
                    fix="make one of them `direction: to_hubspot`, or list the other as an alias",
                )
        written[field.kleer] = field.hubspot_property


def _triggers(object_type: str, fields: list[FieldMapping], raw: _RawObject) -> tuple[str, ...]:
    if raw.triggers is not None:
        return tuple(dict.fromkeys(raw.triggers))
    if object_type == CLIENT:
        return TRIGGER_PROPERTIES
    if object_type == PROJECT:
        return tuple(
            dict.fromkeys(p for f in fields if f.direction == Direction.TWO_WAY for p in f.hubspot_properties)
        )
    return ()


def _build(raw_objects: Mapping[str, _RawObject], source: str) -> Mappings:
    missing = [t for t in KLEER_OBJECT_TYPES if t not in raw_objects]
    if missing:
        raise MappingsFileError(
            f"no mapping for {', '.join(missing)}",
            source=source,
            fix="every object type needs a `fields` list",
        )
    objects = tuple(_build_object(t, raw_objects[t]) for t in KLEER_OBJECT_TYPES)
    return Mappings(objects=objects, source=source)


# ---------------------------------------------------------------- public
@functools.cache
def _default_raw() -> dict[str, _RawObject]:
    text = resources.files("libs.mapping").joinpath("default_mappings.yaml").read_text(encoding="utf-8")
    return _parse_document(_read_yaml(text, DEFAULT_SOURCE), DEFAULT_SOURCE)


@functools.cache
def default_mappings() -> Mappings:
    """The built-in mappings (parsed once, on first use)."""
    return _build(_default_raw(), DEFAULT_SOURCE)


def parse_mappings(text: str, source: str = "<text>") -> Mappings:
    """Validate YAML text as a user mappings file over the defaults (no file access)."""
    overlay = _parse_document(_read_yaml(text, source), source)
    return _build(_merge(_default_raw(), overlay), source)


def load_mappings(path: str | None = None) -> Mappings:
    """Load the mappings: the defaults when ``path`` is None, else the file at ``path`` over the defaults.

    Raises ``MappingsFileError`` (naming the file, object type and field, and
    the fix) when the file cannot be read or is invalid.
    """
    if path is None:
        return default_mappings()
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise MappingsFileError(
            f"cannot be read: {exc.strerror or exc}",
            source=path,
            fix="check MAPPINGS_FILE points at a readable YAML file",
        ) from exc
    except UnicodeDecodeError as exc:
        raise MappingsFileError("is not UTF-8 text", source=path, fix="save the file as UTF-8") from exc
    return parse_mappings(text, path)


def resolve(mappings: Mappings | None) -> Mappings:
    """``mappings`` or, when None, the defaults (helper for the module-level functions)."""
    return default_mappings() if mappings is None else mappings
