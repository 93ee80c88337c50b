"""HubSpot webhook events: parsing and validating a request body, and how each event is recorded.

Pure functions over bytes and plain data. The intake calls ``parse_webhook_body``
on the raw body of a verified request; every problem is a ``MalformedWebhook``
(answered 400 with its message), never an unexpected exception. An accepted
event becomes one ``WebhookReceived`` event in the log, in the stream of the
HubSpot record it is about, with an ``event_id`` derived from HubSpot's
``eventId`` so that a redelivery is a no-op.
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from libs.events.envelope import NewEvent
from libs.records import RecordRef

WEBHOOK_RECEIVED = "WebhookReceived"
SCHEMA_VERSION = "1"

#: HubSpot sends at most 100 events per request; we take up to this many.
MAX_EVENTS_PER_REQUEST = 1000
MAX_INT = 2**63 - 1
MAX_PROPERTY_VALUE_CHARS = 65_536

# Namespace of the event ids of recorded webhook events (uuid5 over portal and HubSpot eventId).
WEBHOOK_NAMESPACE = uuid.UUID("6f0d3c2e-52a4-4a8e-9a51-6b1f0c1e4b10")
_NAMESPACE_BYTES = WEBHOOK_NAMESPACE.bytes

_SUBSCRIPTION_TYPE = re.compile(r"^[a-z][a-z_]{0,40}\.[A-Za-z][A-Za-z_]{0,60}$")
_OBJECT_TYPE_ID = re.compile(r"^\d{1,4}-\d{1,12}$")
_PROPERTY_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")


class MalformedWebhook(ValueError):
    """The body is not a HubSpot webhook batch; ``index`` is the offending event's position, if any."""

    def __init__(self, message: str, index: int | None = None, field: str | None = None) -> None:
        self.message = message
        self.index = index
        self.field = field
        where = f"event {index}" + (f", field {field!r}" if field else "") + ": " if index is not None else ""
        super().__init__(where + message)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": "malformed_webhook", "message": str(self)}
        if self.index is not None:
            body["index"] = self.index
        if self.field is not None:
            body["field"] = self.field
        return body


# field name -> (kind, required). kinds: id (0..2^63-1 int), text (bounded string), value (property value).
_FIELDS: dict[str, tuple[str, bool]] = {
    "eventId": ("id", True),
    "subscriptionType": ("subscription", True),
    "portalId": ("id", True),
    "objectId": ("id", True),
    "subscriptionId": ("id", False),
    "appId": ("id", False),
    "occurredAt": ("id", False),
    "attemptNumber": ("id", False),
    "propertyName": ("property", False),
    "propertyValue": ("value", False),
    "changeSource": ("text", False),
    "sourceId": ("text", False),
    "objectTypeId": ("object_type_id", False),
    "changeFlag": ("text", False),
    # company.merge / object.merge
    "primaryObjectId": ("id", False),
    "newObjectId": ("id", False),
    "mergedObjectIds": ("id_list", False),
    "numberOfPropertiesMoved": ("id", False),
}


_REQUIRED = tuple(name for name, (_, required) in _FIELDS.items() if required)


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One validated HubSpot webhook event (the fields kleer-sync reads; others are dropped)."""

    event_id: int
    subscription_type: str
    portal_id: int
    object_id: int
    raw: Mapping[str, Any]

    @property
    def object_kind(self) -> str:
        """``company``, ``deal``, ... or for ``object.*`` events the type id (``0-970``)."""
        prefix = self.subscription_type.split(".", 1)[0]
        if prefix == "object":
            return str(self.raw.get("objectTypeId") or "object")
        return prefix

    @property
    def change(self) -> str:
        """``propertyChange``, ``creation``, ``deletion``, ``merge``, ..."""
        return self.subscription_type.split(".", 1)[1]

    @property
    def property_name(self) -> str | None:
        value = self.raw.get("propertyName")
        return value if isinstance(value, str) else None

    @property
    def property_value(self) -> str | None:
        value = self.raw.get("propertyValue")
        return value if isinstance(value, str) else None

    @property
    def change_source(self) -> str | None:
        value = self.raw.get("changeSource")
        return value if isinstance(value, str) else None

    @property
    def source_id(self) -> str | None:
        value = self.raw.get("sourceId")
        return value if isinstance(value, str) else None

    @property
    def occurred_at(self) -> int:
        value = self.raw.get("occurredAt")
        return value if isinstance(value, int) else 0

    def record(self) -> RecordRef:
        return RecordRef("hubspot", record_kind(self.object_kind), str(self.object_id))

    def stream(self, connection: str) -> str:
        """``record().stream(connection)`` without building the ``RecordRef`` (the intake's hot path)."""
        return f"{connection}/hubspot-{record_kind(self.object_kind)}/{self.object_id}"

    def log_event_id(self) -> uuid.UUID:
        return webhook_event_id(self.portal_id, self.event_id)

    def to_new_event(self, received_at_ms: int) -> NewEvent:
        """The ``WebhookReceived`` event recording this webhook event."""
        event_id = webhook_event_id(self.portal_id, self.event_id)
        data = dict(self.raw)
        data["receivedAt"] = received_at_ms
        return NewEvent(WEBHOOK_RECEIVED, data, {**_METADATA, "correlation_id": str(event_id)}, event_id)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> WebhookEvent:
        """Rebuild from a recorded ``WebhookReceived`` event's data (validates again)."""
        return _validate_event({k: v for k, v in data.items() if k != "receivedAt"}, 0)


_METADATA = {"actor": "webhook", "source": "hubspot", "schema_version": SCHEMA_VERSION}

_KINDS = {"0-2": "company", "0-3": "deal", "0-7": "product", "0-8": "line_item", "0-53": "invoice",
          "0-69": "subscription", "0-970": "project"}


@functools.lru_cache(maxsize=1024)
def record_kind(object_kind: str) -> str:
    """The record kind in stream names: ``company``, ``project``... (``object-2-123`` for custom objects)."""
    if object_kind in _KINDS:
        return _KINDS[object_kind]
    if _OBJECT_TYPE_ID.match(object_kind):
        return "object-" + object_kind
    return object_kind.lower()


def webhook_event_id(portal_id: int, hubspot_event_id: int) -> uuid.UUID:
    """The log event_id of a HubSpot webhook event: the same for every delivery of that event.

    ``uuid5(WEBHOOK_NAMESPACE, "portal:eventId")``, computed inline (the intake's hot path): the version
    and variant bits are set on the integer, as ``uuid.UUID(bytes=..., version=5)`` does at twice the cost.
    """
    digest = hashlib.sha1(_NAMESPACE_BYTES + f"{portal_id}:{hubspot_event_id}".encode()).digest()
    return uuid.UUID(int=int.from_bytes(digest[:16], "big") & _VERSION_MASK | _VERSION_5)


# uuid5 bits (RFC 9562): version 0b0101 in bits 76-79, variant 0b10 in bits 62-63.
_VERSION_MASK = ~(0xF << 76 | 0x3 << 62)
_VERSION_5 = 0x5 << 76 | 0x2 << 62


def parse_webhook_body(body: bytes) -> list[WebhookEvent]:
    """Parse and validate a webhook request body (a JSON array of event objects)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedWebhook(f"the body is not valid UTF-8 JSON: {exc.msg}") from None
    if not isinstance(document, list):
        raise MalformedWebhook(f"the body must be a JSON array of events, got {_kind(document)}")
    if not document:
        raise MalformedWebhook("the body is an empty array: there is no event to record")
    if len(document) > MAX_EVENTS_PER_REQUEST:
        raise MalformedWebhook(f"{len(document)} events in one request; at most {MAX_EVENTS_PER_REQUEST}")
    return [_validate_event(item, i) for i, item in enumerate(document)]


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _validate_event(item: object, index: int) -> WebhookEvent:
    if not isinstance(item, dict):
        raise MalformedWebhook(f"each event must be an object, got {_kind(item)}", index)
    for name in _REQUIRED:
        if item.get(name) is None:
            raise MalformedWebhook("is required", index, name)
    clean: dict[str, Any] = {}
    for name, value in item.items():
        spec = _FIELDS.get(name)
        if spec is None or value is None:
            continue  # fields we do not read are dropped
        kind = spec[0]
        # The common cases, checked inline: a whole number in range; a short string (no NUL) that is free
        # text or matches its kind's pattern. Anything else goes through _check, which names the problem.
        if kind == "id":
            if type(value) is int and 0 <= value <= MAX_INT:
                clean[name] = value
                continue
        elif type(value) is str and len(value) <= 200 and "\x00" not in value and (
            kind == "text" or kind == "value" or (kind in _PATTERNS and _matches(kind, value))
        ):
            clean[name] = value
            continue
        clean[name] = _check(kind, value, index, name)
    subscription_type = clean["subscriptionType"]
    if subscription_type.startswith("object.") and "objectTypeId" not in clean:
        raise MalformedWebhook("object.* events need an objectTypeId such as '0-970'", index, "objectTypeId")
    return WebhookEvent(
        event_id=clean["eventId"],
        subscription_type=subscription_type,
        portal_id=clean["portalId"],
        object_id=clean["objectId"],
        raw=clean,
    )


_PATTERNS = {"subscription": _SUBSCRIPTION_TYPE, "object_type_id": _OBJECT_TYPE_ID, "property": _PROPERTY_NAME}


@functools.lru_cache(maxsize=4096)
def _matches(kind: str, value: str) -> bool:
    """``value`` matches the pattern of ``kind`` (cached: subscription types and property names repeat)."""
    return _PATTERNS[kind].match(value) is not None


def _check(kind: str, value: object, index: int, name: str) -> Any:
    if kind == "id":
        if isinstance(value, bool) or not isinstance(value, int):
            raise MalformedWebhook(f"must be a whole number, got {_kind(value)}", index, name)
        if not 0 <= value <= MAX_INT:
            raise MalformedWebhook(f"must be between 0 and {MAX_INT}", index, name)
        return value
    if kind == "id_list":
        if not isinstance(value, list) or len(value) > 1000:
            raise MalformedWebhook("must be an array of at most 1000 ids", index, name)
        return [_check("id", v, index, name) for v in value]
    if kind == "value" and isinstance(value, int | float) and not isinstance(value, bool):
        # HubSpot sends strings; tolerate a number by its JSON text.
        value = orjson.dumps(value).decode()
    if not isinstance(value, str):
        raise MalformedWebhook(f"must be a string, got {_kind(value)}", index, name)
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL; HubSpot never sends it. Keep the event, mark the spot.
        value = value.replace("\x00", "\ufffd")
    if kind == "subscription":
        if not _SUBSCRIPTION_TYPE.match(value):
            raise MalformedWebhook("must look like 'company.propertyChange'", index, name)
    elif kind == "object_type_id":
        if not _OBJECT_TYPE_ID.match(value):
            raise MalformedWebhook("must look like '0-970'", index, name)
    elif kind == "property":
        if not _PROPERTY_NAME.match(value):
            raise MalformedWebhook("must be a HubSpot property name (letters, digits, _ . -)", index, name)
    elif kind == "value":
        if len(value) > MAX_PROPERTY_VALUE_CHARS:
            raise MalformedWebhook(f"is longer than {MAX_PROPERTY_VALUE_CHARS} characters", index, name)
    elif len(value) > 200:
        raise MalformedWebhook("is longer than 200 characters", index, name)
    return value
