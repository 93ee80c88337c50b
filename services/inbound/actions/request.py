"""A workflow action call as HubSpot sends it, and its input fields checked against the definition (pure).

``parse_request`` reads the JSON body (``callbackId``, ``origin``, ``context``,
``object``, ``inputFields``) and raises ``MalformedRequest`` when it is not a
call HubSpot could have made (answered 400). ``parse_inputs`` checks each
input value against the action's ``InputSpec`` and raises ``InputProblem``
naming the field for a missing required value or a wrongly typed one
(answered ``FAIL_CONTINUE``: a person has to fix the workflow).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from services.inbound.actions.catalog import (
    BOOL,
    DATE,
    ENUMERATION,
    NUMBER,
    STRING,
    ActionDefinition,
    InputSpec,
)

MAX_CALLBACK_ID_CHARS = 200
_CALLBACK_ID = re.compile(r"^[A-Za-z0-9._:\-]+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_TRUE, _FALSE = frozenset({"true", "yes", "1"}), frozenset({"false", "no", "0"})


class MalformedRequest(Exception):
    """The body is not a workflow action call (400)."""


class InputProblem(Exception):
    """An input field is missing or has a value of the wrong type; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class ActionRequest:
    callback_id: str
    object_type: str  # as HubSpot names it: DEAL, COMPANY
    object_id: str
    portal_id: int | None
    definition_id: str | None
    workflow_id: str | None
    properties: Mapping[str, str | None] = field(default_factory=dict)
    input_fields: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    return str(value)


def parse_request(body: bytes) -> ActionRequest:
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MalformedRequest("the body must be a JSON object")
    callback_id = raw.get("callbackId")
    if not isinstance(callback_id, str) or not callback_id:
        raise MalformedRequest("callbackId is missing")
    if len(callback_id) > MAX_CALLBACK_ID_CHARS or not _CALLBACK_ID.match(callback_id):
        raise MalformedRequest("callbackId has characters or a length HubSpot does not use")
    obj = raw.get("object")
    if not isinstance(obj, dict):
        raise MalformedRequest("object is missing")
    object_id = obj.get("objectId")
    if isinstance(object_id, bool) or not isinstance(object_id, int | str) or not str(object_id).isdigit():
        raise MalformedRequest("object.objectId must be a HubSpot record id")
    object_type = obj.get("objectType")
    if not isinstance(object_type, str) or not object_type:
        raise MalformedRequest("object.objectType is missing")
    properties = obj.get("properties") or {}
    inputs = raw.get("inputFields") or {}
    if not isinstance(properties, dict) or not isinstance(inputs, dict):
        raise MalformedRequest("object.properties and inputFields must be JSON objects")
    origin: dict[str, Any] = raw["origin"] if isinstance(raw.get("origin"), dict) else {}
    context: dict[str, Any] = raw["context"] if isinstance(raw.get("context"), dict) else {}
    portal = origin.get("portalId")
    return ActionRequest(
        callback_id=callback_id,
        object_type=object_type.upper(),
        object_id=str(object_id),
        portal_id=portal if isinstance(portal, int) and not isinstance(portal, bool) else None,
        definition_id=_text(origin.get("actionDefinitionId")),
        workflow_id=_text(context.get("workflowId")),
        properties={str(k): _text(v) for k, v in properties.items()},
        input_fields=dict(inputs),
        raw=raw,
    )


# --- inputs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """Checked input values: ``str``, ``Decimal``, ``bool`` or ``datetime.date``; absent when empty."""

    values: Mapping[str, object] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if isinstance(value, str) else None

    def number(self, name: str) -> Decimal | None:
        value = self.values.get(name)
        return value if isinstance(value, Decimal) else None

    def whole(self, name: str) -> int | None:
        value = self.number(name)
        return None if value is None else int(value)

    def date(self, name: str) -> dt.date | None:
        value = self.values.get(name)
        return value if isinstance(value, dt.date) else None

    def flag(self, name: str, default: bool = False) -> bool:
        """A yes/no input (a bool, or an enumeration of "true"/"false")."""
        value = self.values.get(name)
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return value.lower() in _TRUE
        return default

    def to_json(self) -> dict[str, object]:
        return {k: (v.isoformat() if isinstance(v, dt.date) else str(v) if isinstance(v, Decimal) else v)
                for k, v in self.values.items()}


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(spec: InputSpec, value: Any) -> Decimal:
    wrong = InputProblem(spec.name, f"Input field '{spec.name}' must be a number, got {_shown(value)}")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise wrong
    try:
        number = Decimal(str(value).strip().replace(" ", "").replace("\u00a0", ""))
    except InvalidOperation:
        raise wrong from None
    if not number.is_finite():
        raise wrong
    if spec.integer and number != number.to_integral_value():
        raise InputProblem(spec.name, f"Input field '{spec.name}' must be a whole number, got {_shown(value)}")
    if spec.decimals is not None and number != round(number, spec.decimals):
        raise InputProblem(
            spec.name, f"Input field '{spec.name}' allows at most {spec.decimals} decimals, got {_shown(value)}"
        )
    if spec.minimum is not None and number < spec.minimum:
        raise InputProblem(spec.name, f"Input field '{spec.name}' must be at least {spec.minimum}, got {number}")
    if spec.maximum is not None and number > spec.maximum:
        raise InputProblem(spec.name, f"Input field '{spec.name}' must be at most {spec.maximum}, got {number}")
    return number


def _date(spec: InputSpec, value: Any) -> dt.date:
    """``YYYY-MM-DD`` (a datetime's date part), or epoch milliseconds as HubSpot sends date properties."""
    wrong = InputProblem(
        spec.name, f"Input field '{spec.name}' must be a date (YYYY-MM-DD or epoch milliseconds), got {_shown(value)}"
    )
    if isinstance(value, bool):
        raise wrong
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        try:
            return dt.datetime.fromtimestamp(int(value) / 1000, tz=dt.UTC).date()
        except (OverflowError, OSError, ValueError):
            raise wrong from None
    if isinstance(value, str) and _DATE.match(value.strip()):
        try:
            return dt.date.fromisoformat(value.strip()[:10])
        except ValueError:
            raise wrong from None
    raise wrong


def check_input(spec: InputSpec, value: Any) -> object:
    """The typed value of one non-empty input, or ``InputProblem``."""
    if spec.type == NUMBER:
        return _number(spec, value)
    if spec.type == DATE:
        return _date(spec, value)
    if spec.type == BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise InputProblem(spec.name, f"Input field '{spec.name}' must be true or false, got {_shown(value)}")
    if isinstance(value, dict | list):
        raise InputProblem(spec.name, f"Input field '{spec.name}' must be text, got {_shown(value)}")
    text = str(value).strip() if not isinstance(value, bool) else str(value).lower()
    if spec.type == ENUMERATION:
        match = next((o for o in spec.options if o == text), None) or next(
            (o for o in spec.options if o.lower() == text.lower()), None
        )
        if match is None:
            raise InputProblem(
                spec.name,
                f"Input field '{spec.name}' must be one of {', '.join(spec.options)}, got {_shown(value)}",
            )
        return match
    assert spec.type == STRING
    if spec.max_length is not None and len(text) > spec.max_length:
        raise InputProblem(
            spec.name, f"Input field '{spec.name}' is longer than {spec.max_length} characters ({len(text)})"
        )
    return text


def parse_inputs(definition: ActionDefinition, raw: Mapping[str, Any]) -> Inputs:
    """Check every input field the definition declares (unknown ones are ignored).

    Raises ``InputProblem`` for the first field in definition order that is
    required but empty, or whose value does not fit its type and rules.
    """
    values: dict[str, object] = {}
    for spec in definition.inputs:
        value = raw.get(spec.name)
        if _empty(value):
            if spec.required:
                raise InputProblem(spec.name, f"Input field '{spec.name}' ({spec.label}) is required")
            continue
        values[spec.name] = check_input(spec, value)
    return Inputs(values)
