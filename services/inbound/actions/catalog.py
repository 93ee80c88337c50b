"""The workflow action definitions kept as JSON in ``definitions/`` (one home): loaded, checked, rendered.

Each file ``definitions/<action>.json`` is the body HubSpot's automation v4
definitions API takes for one action, with two additions that are stripped
before it is sent:

- ``{PUBLIC_BASE_URL}`` in ``actionUrl``, replaced by the service's public base URL;
- ``x-rules`` on an input field: checks HubSpot cannot express
  (``integer``, ``minimum``, ``maximum``, ``maxLength``, ``decimals``).

The file name is the action's name and the last segment of its URL
(``POST /actions/<action>``). ``InputSpec`` is what the request parser checks
each input value against.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

BASE_URL_PLACEHOLDER = "{PUBLIC_BASE_URL}"
ACTIONS_PREFIX = "/actions/"
_EXTENSION_PREFIX = "x-"

CREATE_CLIENT = "create-client"
CREATE_INVOICE = "create-invoice"
CREATE_AGREEMENT = "create-agreement"
UPDATE_AGREEMENT = "update-agreement"
CREATE_PROJECT = "create-project"
ACTION_NAMES: tuple[str, ...] = (CREATE_CLIENT, CREATE_INVOICE, CREATE_AGREEMENT, UPDATE_AGREEMENT, CREATE_PROJECT)

# HubSpot input field types we use.
STRING, NUMBER, BOOL, ENUMERATION, DATE = "string", "number", "bool", "enumeration", "date"
_TYPES = (STRING, NUMBER, BOOL, ENUMERATION, DATE)


class DefinitionError(Exception):
    """A definition file is malformed (a bug in the repo, found at start-up and by the unit tests)."""


@dataclass(frozen=True)
class InputSpec:
    """One input field: its HubSpot type, options and our extra rules."""

    name: str
    type: str
    label: str
    required: bool = False
    options: tuple[str, ...] = ()
    integer: bool = False
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    max_length: int | None = None
    decimals: int | None = None


@dataclass(frozen=True)
class ActionDefinition:
    name: str
    label: str
    object_types: tuple[str, ...]  # COMPANY, DEAL
    inputs: tuple[InputSpec, ...]
    output_fields: tuple[str, ...]
    source: Mapping[str, Any]  # the file as loaded

    @property
    def path(self) -> str:
        return ACTIONS_PREFIX + self.name

    def action_url(self, public_base_url: str) -> str:
        return public_base_url.rstrip("/") + self.path

    def api_body(self, public_base_url: str) -> dict[str, Any]:
        """The body for HubSpot's definitions API: extensions stripped, the action URL filled in."""
        body: dict[str, Any] = _strip_extensions(copy.deepcopy(dict(self.source)))
        body["actionUrl"] = self.action_url(public_base_url)
        return body

    def input(self, name: str) -> InputSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)


def _strip_extensions(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_extensions(v) for k, v in value.items() if not str(k).startswith(_EXTENSION_PREFIX)}
    if isinstance(value, list):
        return [_strip_extensions(v) for v in value]
    return value


def _decimal(value: Any, where: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DefinitionError(f"{where} must be a number")
    return Decimal(str(value))


def parse_definition(name: str, body: Any) -> ActionDefinition:
    """Check one definition file's content and build its ``ActionDefinition``."""
    if not isinstance(body, dict):
        raise DefinitionError(f"{name}: a definition is a JSON object")
    url = body.get("actionUrl")
    if not isinstance(url, str) or url != BASE_URL_PLACEHOLDER + ACTIONS_PREFIX + name:
        raise DefinitionError(f"{name}: actionUrl must be {BASE_URL_PLACEHOLDER}{ACTIONS_PREFIX}{name}")
    object_types = body.get("objectTypes")
    if not isinstance(object_types, list) or not object_types or not all(isinstance(t, str) for t in object_types):
        raise DefinitionError(f"{name}: objectTypes must be a non-empty list of object type names")
    labels = (body.get("labels") or {}).get("en") or {}
    action_label = labels.get("actionName")
    if not isinstance(action_label, str) or not action_label:
        raise DefinitionError(f"{name}: labels.en.actionName is missing")
    input_labels = labels.get("inputFieldLabels") or {}
    inputs: list[InputSpec] = []
    for index, field in enumerate(body.get("inputFields") or []):
        where = f"{name}: inputFields[{index}]"
        type_definition = field.get("typeDefinition") if isinstance(field, dict) else None
        if not isinstance(type_definition, dict):
            raise DefinitionError(f"{where} has no typeDefinition")
        field_name, field_type = type_definition.get("name"), type_definition.get("type")
        if not isinstance(field_name, str) or not field_name:
            raise DefinitionError(f"{where} has no name")
        if field_type not in _TYPES:
            raise DefinitionError(f"{where} ({field_name}): type must be one of {', '.join(_TYPES)}")
        options = tuple(str(o.get("value")) for o in type_definition.get("options") or [])
        if field_type == ENUMERATION and not options:
            raise DefinitionError(f"{where} ({field_name}): an enumeration needs options")
        rules = field.get("x-rules") or {}
        inputs.append(
            InputSpec(
                name=field_name,
                type=field_type,
                label=str(input_labels.get(field_name) or field_name),
                required=bool(field.get("isRequired")),
                options=options,
                integer=bool(rules.get("integer")),
                minimum=_decimal(rules.get("minimum"), f"{where} x-rules.minimum"),
                maximum=_decimal(rules.get("maximum"), f"{where} x-rules.maximum"),
                max_length=rules.get("maxLength"),
                decimals=rules.get("decimals"),
            )
        )
    if len({spec.name for spec in inputs}) != len(inputs):
        raise DefinitionError(f"{name}: two input fields share a name")
    outputs = tuple(
        str(f["typeDefinition"]["name"]) for f in body.get("outputFields") or [] if isinstance(f, dict)
    )
    return ActionDefinition(name, action_label, tuple(object_types), tuple(inputs), outputs, body)


@functools.cache
def definitions() -> dict[str, ActionDefinition]:
    """Every action definition of the repo, by action name (read once)."""
    folder = importlib.resources.files("services.inbound.actions.definitions")
    found: dict[str, ActionDefinition] = {}
    for name in ACTION_NAMES:
        raw = (folder / f"{name}.json").read_bytes()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise DefinitionError(f"{name}.json is not JSON: {exc}") from exc
        found[name] = parse_definition(name, body)
    return found


def definition(name: str) -> ActionDefinition | None:
    return definitions().get(name)
