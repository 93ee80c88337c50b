"""Record conversion both ways, and the change-detection fingerprint.

Pure functions over plain data. Each takes the mappings to use as the keyword
``mappings``; when omitted, the built-in defaults apply.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

import orjson

from libs.mapping.computed import COMPUTED
from libs.mapping.errors import MappingError, TransformError
from libs.mapping.loader import resolve
from libs.mapping.model import FieldMapping, Mappings, ObjectMapping
from libs.mapping.objects import INBOUND_OBJECT_TYPES, KLEER_ID, resolve_object_type

#: Bump when the fingerprint input format changes (every record then looks changed once).
FINGERPRINT_VERSION = 1


def _get_path(record: Mapping[str, object], field: FieldMapping, object_type: str) -> object:
    current: object = record
    walked: list[str] = []
    for key in field.path:
        if current is None:
            return None
        if not isinstance(current, Mapping):
            raise MappingError(
                f"expected an object at {'.'.join(walked)!r}",
                object_type=object_type,
                property=field.hubspot_property,
                kleer_path=field.kleer,
                value=current,
                direction="to_hubspot",
            )
        current = current.get(key)
        walked.append(key)
    return current


def _source_value(record: Mapping[str, object], field: FieldMapping, object_type: str) -> object:
    if field.compute is not None:
        return COMPUTED[field.compute](record)
    return _get_path(record, field, object_type)


# Per object mapping, its outbound fields with what to_hubspot needs of each, looked up once: the field's
# properties (direction test, path split, transform look-up) were a third of its cost per record. Keyed by
# id() with the mapping held, so an id cannot be reused while its entry lives.
_OutboundField = tuple[
    str, Callable[[Mapping[str, object]], object] | None, str | None, tuple[str, ...], object, Any, Any, FieldMapping
]
_PLANS: dict[int, tuple[ObjectMapping, tuple[_OutboundField, ...]]] = {}
_MAX_PLANS = 64


def _outbound_plan(mapping: ObjectMapping) -> tuple[_OutboundField, ...]:
    cached = _PLANS.get(id(mapping))
    if cached is not None and cached[0] is mapping:
        return cached[1]
    plan = tuple(
        (
            field.hubspot_property,
            COMPUTED[field.compute] if field.compute is not None else None,
            field.path[0] if field.compute is None and len(field.path) == 1 else None,
            field.path,
            field.default,
            field.codec.encode,
            field.values,
            field,
        )
        for field in mapping.fields
        if field.writes_hubspot
    )
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[id(mapping)] = (mapping, plan)
    return plan


def to_hubspot(
    object_type: str, kleer_record: Mapping[str, object], *, mappings: Mappings | None = None
) -> dict[str, str]:
    """Map a Kleer record (kebab-case JSON as the Kleer API returns it) to HubSpot properties.

    Contract:
    - The result has one entry for every ``two_way`` and ``to_hubspot`` field of
      the object type, always including ``kleer_id``; every value is a string.
    - A missing, null or empty source value (a missing nested object such as a
      null ``address`` included) becomes the field's ``default`` if it has one,
      else ``""``, which clears the HubSpot property.
    - Text is passed through unchanged (any length, any script); öre become
      exact decimal strings (``12950`` -> ``"129.50"``); dates ``YYYY-MM-DD``;
      booleans ``"true"``/``"false"``.
    - Raises ``MappingError`` naming the object type, Kleer field and HubSpot
      property when a value cannot be converted (e.g. ``payment-days: "abc"``,
      an unknown enum value, a malformed currency code) or the record has no id.
    """
    kleer_type = resolve_object_type(object_type)
    mapping = resolve(mappings).object(kleer_type)
    if not isinstance(kleer_record, Mapping):
        raise MappingError("a Kleer record must be a JSON object", object_type=kleer_type, value=kleer_record)
    result: dict[str, str] = {}
    for prop, compute, key, path, default, encode, values, field in _outbound_plan(mapping):
        if compute is not None:
            value = compute(kleer_record)
        elif key is not None:
            value = kleer_record.get(key)  # a top-level field: no path to walk
        else:
            value = kleer_record
            for part in path:  # plain JSON objects walked inline; anything else the careful way
                if type(value) is dict:
                    value = value.get(part)
                elif value is None:
                    break
                else:
                    value = _get_path(kleer_record, field, kleer_type)
                    break
        if (value is None or value == "") and default is not None:
            value = default
        try:
            result[prop] = encode(value, values)
        except TransformError as exc:
            raise MappingError(
                str(exc),
                object_type=kleer_type,
                property=field.hubspot_property,
                kleer_path=field.source,
                value=value,
                direction="to_hubspot",
            ) from exc
    if not result.get(KLEER_ID):
        raise MappingError(
            "the record has no id, so it cannot be upserted",
            object_type=kleer_type,
            property=KLEER_ID,
            direction="to_hubspot",
        )
    return result


def _set_path(body: dict[str, object], path: tuple[str, ...], value: object) -> None:
    target = body
    for key in path[:-1]:
        child = target.setdefault(key, {})
        assert isinstance(child, dict)  # inbound paths never overlap (checked by the loader)
        target = child
    target[path[-1]] = value


def to_kleer(
    object_type: str,
    hubspot_properties: Mapping[str, str | None],
    *,
    changed: Collection[str] = (),
    mappings: Mappings | None = None,
) -> dict[str, object]:
    """Map HubSpot properties to a Kleer request body (kebab-case, nested), for clients and projects.

    Contract:
    - Only ``two_way`` and ``to_kleer`` fields are written. The body never
      contains the Kleer ``id`` (the caller addresses the record by ``kleer_id``)
      nor fields that only flow to HubSpot (e.g. a project's ``client``).
    - A field is read from its canonical property, then its aliases, taking the
      first non-empty value. Properties named in ``changed`` (those the
      triggering webhooks reported) are tried first, so an edit to a synonym
      such as ``email`` wins over the stale canonical ``invoice_email``.
    - A field none of whose properties appear in ``hubspot_properties`` is left
      out (not read = not touched). If they appear but are all empty (``""`` or
      ``None``): the field's ``default`` is written if it has one; a text field
      becomes ``""`` (clears it in Kleer); any other field is left out.
    - Values are typed for Kleer: öre as ``int`` (``"129.5"`` -> ``12950``,
      rounded half away from zero beyond two decimals), whole numbers as
      ``int``, decimals as ``Decimal`` (the Kleer client encodes them as JSON
      numbers), dates as ``"YYYY-MM-DD"``, booleans as ``bool``.
    - Raises ``MappingError`` naming the property when a value cannot be
      parsed, when a ``required`` field (a client's or project's name) is
      missing or blank, or for an object type without inbound sync.
    """
    kleer_type = resolve_object_type(object_type)
    if kleer_type not in INBOUND_OBJECT_TYPES:
        raise MappingError(
            f"HubSpot -> Kleer sync exists only for {', '.join(INBOUND_OBJECT_TYPES)}",
            object_type=kleer_type,
            direction="to_kleer",
        )
    mapping = resolve(mappings).object(kleer_type)
    if isinstance(changed, str):  # one property name, not its characters
        changed = (changed,)
    body: dict[str, object] = {}
    for field in mapping.fields:
        if not field.writes_kleer:
            continue
        present = [p for p in field.hubspot_properties if p in hubspot_properties]
        preferred = [p for p in present if p in changed] + [p for p in present if p not in changed]
        chosen = next((p for p in preferred if not field.codec.is_empty(hubspot_properties[p])), None)
        value: object
        if not present:
            if field.required:
                raise MappingError(
                    "is required but was not read from HubSpot",
                    object_type=kleer_type,
                    property=field.hubspot_property,
                    kleer_path=field.kleer,
                    direction="to_kleer",
                )
            continue
        if chosen is None:
            if field.default is not None:
                value = field.default
            elif field.codec.keeps_blank:
                value = ""
            else:
                continue
        else:
            raw = hubspot_properties[chosen]
            assert raw is not None  # not empty
            try:
                decoder = field.codec.decode
                assert decoder is not None  # the loader only lets decodable transforms flow to Kleer
                value = decoder(raw, field.values)
            except TransformError as exc:
                raise MappingError(
                    str(exc),
                    object_type=kleer_type,
                    property=chosen,
                    kleer_path=field.kleer,
                    value=raw,
                    direction="to_kleer",
                ) from exc
        if field.required and (value is None or (isinstance(value, str) and not value.strip())):
            raise MappingError(
                "is required and must not be empty",
                object_type=kleer_type,
                property=field.hubspot_property,
                kleer_path=field.kleer,
                value=value,
                direction="to_kleer",
            )
        _set_path(body, field.path, value)
    return body


def fingerprint(object_type: str, mapped: Mapping[str, str]) -> str:
    """A stable hex SHA-256 of mapped HubSpot properties, for change detection.

    Independent of key order; changes when any key or value changes (``""``
    differs from a missing key). The object type is part of the input, named as
    a Kleer type or the HubSpot object it syncs to (``client`` and
    ``companies`` give the same hash). Pass the output of ``to_hubspot``. Raises
    ``MappingError`` if a key or value is not a string.
    """
    kleer_type = resolve_object_type(object_type)
    for key, value in mapped.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise MappingError(
                "fingerprints take string property values (the output of to_hubspot)",
                object_type=kleer_type,
                property=str(key),
                value=value,
            )
    return hashlib.sha256(_fingerprint_input([FINGERPRINT_VERSION, kleer_type, sorted(mapped.items())])).hexdigest()


def _fingerprint_input(payload: list[object]) -> bytes:
    """The hashed bytes: compact JSON, non-ASCII as UTF-8.

    orjson writes the same bytes as ``json.dumps(payload, ensure_ascii=False, separators=(",", ":"))``
    encoded as UTF-8 for every list of strings, ints and (str, str) pairs (``tests/unit/mapping/
    test_convert.py`` checks it over arbitrary text), at a fraction of the cost: stored fingerprints stay
    valid across the switch. A lone surrogate is not valid UTF-8 for orjson: that (rare) value takes the
    stdlib path, whose bytes it always had.
    """
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8", "surrogatepass")
