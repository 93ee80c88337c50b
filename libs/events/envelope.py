"""The event envelope.

An event is a fact (past tense: ``KleerClientChanged``) or a recorded command
(imperative: ``UpdateKleerClient``). ``NewEvent`` is what a writer appends;
``RecordedEvent`` is what the log hands back, with its stream, version and
commit-ordered global ``position``.

Metadata keys (all optional, all strings): ``correlation_id`` (one id for a
whole chain of cause and effect), ``causation_id`` (the ``event_id`` of the
event that caused this one), ``actor`` (who: ``poller``, ``pusher``,
``webhook``, ``user:alice``), ``source`` (``kleer``, ``hubspot``, ``replay``),
``schema_version``.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import orjson

JSONDict = dict[str, Any]


class EventDataError(ValueError):
    """Event data or metadata that cannot be stored (not a JSON object, not serialisable)."""


def new_event_id() -> uuid.UUID:
    """A time-ordered UUID (version 7, RFC 9562): unix milliseconds, then 74 random bits.

    Ids made one after another sort one after another, so the log's unique
    index on event_id takes them at its right edge (one cached page) instead
    of at a random leaf per event, as version 4 ids would.
    """
    millis = time.time_ns() // 1_000_000
    rand = _random_80_bits()
    event_id = _new_uuid(uuid.UUID)  # what UUID(int=...) makes, without its argument checks (3x faster)
    _set(event_id, "int", (millis & _MILLIS_MASK) << 80 | _VERSION | (rand >> 62 & 0xFFF) << 64 | _VARIANT
         | rand & _RAND_B_MASK)
    _set(event_id, "is_safe", _UNKNOWN_SAFETY)
    return event_id


def parse_uuid(text: str) -> uuid.UUID:
    """``uuid.UUID(text)`` at 60 % of its cost for the canonical form (every event id on the wire): the same
    checks (32 hex digits once the dashes are gone, as ``int(…, 16)`` reads them), without its other spellings'
    string work. Anything else goes to ``uuid.UUID``, which accepts or refuses it as ever."""
    if type(text) is str and len(text) == 36:
        digits = text.replace("-", "")
        if len(digits) == 32:
            parsed = _new_uuid(uuid.UUID)
            _set(parsed, "int", int(digits, 16))
            _set(parsed, "is_safe", _UNKNOWN_SAFETY)
            return parsed
    return uuid.UUID(text)


_MILLIS_MASK = (1 << 48) - 1
_RAND_B_MASK = (1 << 62) - 1
_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62  # RFC 9562
_new_uuid = uuid.UUID.__new__
_set = object.__setattr__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown
_RANDOM_BYTES = 10 * 4096  # one getrandom call per 4,096 ids, not one per id (the pusher makes 5,000 a batch)
_random = threading.local()  # one pool per thread, so no two callers ever get the same bytes


def _random_80_bits() -> int:
    """80 bits from ``os.urandom``, drawn for 4,096 ids at a time per thread (a forked child draws anew)."""
    pool = _random
    try:
        offset = pool.offset
    except AttributeError:  # this thread's first id
        offset = _RANDOM_BYTES
    if offset >= _RANDOM_BYTES:
        pool.buffer = os.urandom(_RANDOM_BYTES)
        offset = 0
    pool.offset = offset + 10
    return int.from_bytes(pool.buffer[offset : offset + 10], "big")


def _draw_anew_after_fork() -> None:
    global _random
    _random = threading.local()


os.register_at_fork(after_in_child=_draw_anew_after_fork)


@dataclass(frozen=True, slots=True)
class NewEvent:
    type: str
    data: JSONDict
    metadata: JSONDict = field(default_factory=dict)
    event_id: uuid.UUID = field(default_factory=new_event_id)

    def caused_by(self, cause: RecordedEvent, **extra: Any) -> NewEvent:
        """The same event with correlation and causation taken from ``cause``."""
        return NewEvent(self.type, self.data, {**self.metadata, **causation(cause), **extra}, self.event_id)


def causation(cause: RecordedEvent, cause_id: str | None = None) -> JSONDict:
    """The metadata that ties an event to ``cause``: its correlation (the chain's) and causation ids.

    ``cause_id``: ``str(cause.event_id)``, if the caller has made it already.
    """
    cause_id = cause_id or str(cause.event_id)
    return {"correlation_id": cause.metadata.get("correlation_id") or cause_id, "causation_id": cause_id}


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    position: int
    event_id: uuid.UUID
    stream: str
    version: int
    type: str
    data: JSONDict
    metadata: JSONDict
    recorded_at: datetime

    def to_json(self) -> bytes:
        """The wire form published to Kafka."""
        return _wire(self.position, self.event_id, self.stream, self.version, self.type,
                     orjson.dumps(self.data), orjson.dumps(self.metadata), self.recorded_at)

    @classmethod
    def from_json(cls, raw: bytes) -> RecordedEvent:
        try:
            obj = orjson.loads(raw)
            data, metadata = obj["data"], obj["metadata"]
            if type(data) is not dict or type(metadata) is not dict:
                raise TypeError("data and metadata must be JSON objects")
            return recorded_event(
                int(obj["position"]),
                parse_uuid(obj["event_id"]),
                str(obj["stream"]),
                int(obj["version"]),
                str(obj["type"]),
                data,
                metadata,
                datetime.fromisoformat(obj["recorded_at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise EventDataError(f"not an event envelope: {exc}") from exc


_RECORDED_FIELDS = ("position", "event_id", "stream", "version", "type", "data", "metadata", "recorded_at")


def wire_json(
    position: int, event_id: uuid.UUID, stream: str, version: int, event_type: str,
    data: str, metadata: str, recorded_at: datetime,
) -> bytes:
    """``RecordedEvent.to_json()`` of a stored event, from its documents as JSON text (as Postgres returns
    jsonb): the relay publishes what it read without decoding and encoding the documents again."""
    return _wire(position, event_id, stream, version, event_type, data.encode(), metadata.encode(), recorded_at)


def _wire(
    position: int, event_id: uuid.UUID, stream: str, version: int, event_type: str,
    data: bytes, metadata: bytes, recorded_at: datetime,
) -> bytes:
    """The Kafka envelope, its documents already JSON: the one place its layout is written."""
    return b"".join((
        b'{"position":', str(position).encode(), b',"event_id":"', str(event_id).encode(),
        b'","stream":', orjson.dumps(stream), b',"version":', str(version).encode(),
        b',"type":', orjson.dumps(event_type), b',"data":', data, b',"metadata":', metadata,
        b',"recorded_at":"', recorded_at.isoformat().encode(), b'"}',
    ))


def _recorded_event_maker() -> Callable[..., RecordedEvent]:
    """``RecordedEvent(position, event_id, stream, version, type, data, metadata, recorded_at)``, made faster.

    RecordedEvent is a frozen slots dataclass: its __init__ sets every field through
    object.__setattr__, which was half the client's cost of reading the log (the relay's, the
    pusher's and replay's hot paths). This sets the slots directly: the same object with the same
    fields, still frozen afterwards. If RecordedEvent's fields ever differ, it is __init__.
    """
    if tuple(f.name for f in fields(RecordedEvent)) != _RECORDED_FIELDS or "__slots__" not in vars(RecordedEvent):
        return RecordedEvent
    setters = tuple(vars(RecordedEvent)[name].__set__ for name in _RECORDED_FIELDS)
    set_position, set_event_id, set_stream, set_version, set_type, set_data, set_metadata, set_recorded_at = setters
    new = object.__new__

    def make(
        position: int, event_id: uuid.UUID, stream: str, version: int, type: str,
        data: JSONDict, metadata: JSONDict, recorded_at: datetime,
    ) -> RecordedEvent:
        event: RecordedEvent = new(RecordedEvent)
        set_position(event, position)
        set_event_id(event, event_id)
        set_stream(event, stream)
        set_version(event, version)
        set_type(event, type)
        set_data(event, data)
        set_metadata(event, metadata)
        set_recorded_at(event, recorded_at)
        return event

    return make


recorded_event = _recorded_event_maker()


def encode_json_object(value: Any, what: str, event_type: str) -> str:
    """Serialise event data/metadata, or raise ``EventDataError`` naming the event type."""
    if not isinstance(value, dict):
        raise EventDataError(f"{event_type}: {what} must be a JSON object, got {type(value).__name__}")
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        raise EventDataError(f"{event_type}: {what} is not JSON-serialisable: {exc}") from exc
