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
import time
import uuid
from dataclasses import dataclass, field
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
    rand = int.from_bytes(os.urandom(10), "big")
    return uuid.UUID(
        int=(millis & _MILLIS_MASK) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62 | rand & _RAND_B_MASK
    )


_MILLIS_MASK = (1 << 48) - 1
_RAND_B_MASK = (1 << 62) - 1


@dataclass(frozen=True, slots=True)
class NewEvent:
    type: str
    data: JSONDict
    metadata: JSONDict = field(default_factory=dict)
    event_id: uuid.UUID = field(default_factory=new_event_id)

    def caused_by(self, cause: RecordedEvent, **extra: Any) -> NewEvent:
        """The same event with correlation and causation taken from ``cause``."""
        metadata = {
            **self.metadata,
            "correlation_id": cause.metadata.get("correlation_id") or str(cause.event_id),
            "causation_id": str(cause.event_id),
            **extra,
        }
        return NewEvent(self.type, self.data, metadata, self.event_id)


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
        return orjson.dumps(
            {
                "position": self.position,
                "event_id": str(self.event_id),
                "stream": self.stream,
                "version": self.version,
                "type": self.type,
                "data": self.data,
                "metadata": self.metadata,
                "recorded_at": self.recorded_at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> RecordedEvent:
        try:
            obj = orjson.loads(raw)
            return cls(
                position=int(obj["position"]),
                event_id=uuid.UUID(obj["event_id"]),
                stream=str(obj["stream"]),
                version=int(obj["version"]),
                type=str(obj["type"]),
                data=dict(obj["data"]),
                metadata=dict(obj["metadata"]),
                recorded_at=datetime.fromisoformat(obj["recorded_at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise EventDataError(f"not an event envelope: {exc}") from exc


def encode_json_object(value: Any, what: str, event_type: str) -> str:
    """Serialise event data/metadata, or raise ``EventDataError`` naming the event type."""
    if not isinstance(value, dict):
        raise EventDataError(f"{event_type}: {what} must be a JSON object, got {type(value).__name__}")
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        raise EventDataError(f"{event_type}: {what} is not JSON-serialisable: {exc}") from exc
