"""A record's timeline, pure: recorded events in, readable entries out.

``build_timeline`` turns the events of a record's streams (its Kleer stream and
the linked HubSpot stream) plus the events they are causally linked to into
``Entry`` values: when, who (actor and source), what kind of step (poll change,
push, webhook, command, Kleer write, conflict, dead letter, replay), the
fields that changed (old → new) and the causation chain back to the first
cause.

Changed fields come from *consecutive snapshots* of the same stream:

- ``Kleer{Kind}Changed`` / ``…PushRequested`` carry the full mapped snapshot
  (``properties``); each is compared with the previous snapshot of its stream.
- ``HubSpot{Object}Upserted`` carries what HubSpot holds from us (or names the
  change event whose snapshot that is, ``properties_from``); compared with the
  previous write of its stream.
- ``WebhookReceived`` (a property change) is compared with the last value the
  timeline knows HubSpot held (from writes and earlier webhooks).
- A Kleer write (``Kleer{Kind}Updated``) lists the properties that triggered
  it: Kleer's last snapshot value → HubSpot's value.
- ``SyncConflict`` shows each disputed field as Kleer's value → HubSpot's.

No I/O here: ``services.operations.audit`` reads the events.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from libs.events.envelope import RecordedEvent
from services.outbound.snapshots import PROPERTIES_FROM


class Step(StrEnum):
    """What kind of step an event records."""

    POLL = "poll"  # the poller saw a Kleer change
    PUSH = "push"  # a HubSpot write (outcome of a push)
    PUSH_REQUEST = "push-request"  # a forced push was asked for (replay)
    WEBHOOK = "webhook"  # HubSpot told us about a change
    COMMAND = "command"  # an imperative request (UpdateKleerClient, CreateKleerInvoice...)
    KLEER_WRITE = "kleer-write"  # the outcome of a Kleer API call
    HUBSPOT = "hubspot"  # other HubSpot facts (deletions, merges)
    SKIPPED = "skipped"  # inbound decided nothing needed doing (echo, up to date)
    CONFLICT = "conflict"
    DEAD_LETTER = "dead-letter"
    REPLAY = "replay"
    OTHER = "other"


_EXACT: dict[str, Step] = {
    "WebhookReceived": Step.WEBHOOK,
    "SyncConflict": Step.CONFLICT,
    "InboundEchoIgnored": Step.SKIPPED,
    "InboundSyncSkipped": Step.SKIPPED,
}
_PATTERNS: tuple[tuple[re.Pattern[str], Step], ...] = (
    (re.compile(r"^Kleer[A-Za-z]+(Changed|Removed)$"), Step.POLL),
    (re.compile(r"^Kleer[A-Za-z]+PushRequested$"), Step.PUSH_REQUEST),
    (re.compile(r"^HubSpot[A-Za-z]+(Upserted|Archived)$"), Step.PUSH),
    (re.compile(r"^Kleer[A-Za-z]+(Updated|Created|Deactivated|Deleted)$"), Step.KLEER_WRITE),
    (re.compile(r"^(Update|Create|Delete|Deactivate)Kleer[A-Za-z]+$"), Step.COMMAND),
    (re.compile(r"^DeadLetter"), Step.DEAD_LETTER),
    (re.compile(r"^Replay"), Step.REPLAY),
    (re.compile(r"^HubSpot[A-Za-z]+"), Step.HUBSPOT),
)


def step_of(event_type: str) -> Step:
    """The kind of step an event type records (``Step.OTHER`` for types this module does not know)."""
    exact = _EXACT.get(event_type)
    if exact is not None:
        return exact
    for pattern, step in _PATTERNS:
        if pattern.match(event_type):
            return step
    return Step.OTHER


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field's old and new value (``None``: absent)."""

    field: str
    old: str | None
    new: str | None

    def to_json(self) -> dict[str, str | None]:
        return {"field": self.field, "old": self.old, "new": self.new}


@dataclass(frozen=True, slots=True)
class Link:
    """An event named in a causation chain."""

    position: int
    event_id: str
    type: str
    stream: str

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "event_id": self.event_id, "type": self.type, "stream": self.stream}


@dataclass(frozen=True)
class Entry:
    """One step of a record's timeline."""

    position: int
    event_id: str
    recorded_at: datetime
    stream: str
    type: str
    step: Step
    actor: str
    source: str
    summary: str
    changes: tuple[FieldChange, ...] = ()
    correlation_id: str | None = None
    causation_id: str | None = None
    chain: tuple[Link, ...] = ()  # the causes, nearest first
    related: bool = False  # pulled in by causation, not in the record's own streams

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "event_id": self.event_id,
            "recorded_at": self.recorded_at.isoformat(),
            "stream": self.stream,
            "type": self.type,
            "step": self.step.value,
            "actor": self.actor,
            "source": self.source,
            "summary": self.summary,
            "changes": [c.to_json() for c in self.changes],
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "causation_chain": [link.to_json() for link in self.chain],
            "related": self.related,
        }


# --- field changes ----------------------------------------------------------------------------------------


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_changes(before: Mapping[str, object] | None, after: Mapping[str, object]) -> tuple[FieldChange, ...]:
    """Fields whose value differs between two snapshots, sorted by name (``before=None``: all are new).

    An empty string and an absent value are the same (HubSpot holds "" for unset).
    """
    old = before or {}
    changes = []
    for name in sorted(set(old) | set(after)):
        a, b = _text(old.get(name)) or None, _text(after.get(name)) or None
        if a != b:
            changes.append(FieldChange(name, a, b))
    return tuple(changes)


def _snapshot(data: Mapping[str, Any], by_id: Mapping[str, RecordedEvent]) -> dict[str, object] | None:
    properties = data.get("properties")
    if properties is None and isinstance(source := data.get(PROPERTIES_FROM), str) and source in by_id:
        properties = by_id[source].data.get("properties")  # an upsert of the snapshot its cause carries
    return dict(properties) if isinstance(properties, Mapping) else None


@dataclass
class _State:
    """What the walk through the events has seen so far."""

    snapshots: dict[tuple[str, str], dict[str, object]] = field(default_factory=dict)  # (stream, family)
    kleer_values: dict[str, str | None] = field(default_factory=dict)  # last Kleer snapshot, as HubSpot props
    hubspot_values: dict[str, str | None] = field(default_factory=dict)  # what HubSpot is known to hold


def _changes(
    event: RecordedEvent, step: Step, state: _State, by_id: Mapping[str, RecordedEvent]
) -> tuple[FieldChange, ...]:
    data = event.data
    if step in (Step.POLL, Step.PUSH_REQUEST, Step.PUSH):
        snapshot = _snapshot(data, by_id)
        if snapshot is None:
            return ()
        family = "hubspot-write" if step is Step.PUSH else "kleer-snapshot"
        key = (event.stream, family)
        previous = state.snapshots.get(key)
        if step is Step.PUSH and "kleer_deleted" in snapshot and previous is not None:
            snapshot = {**previous, **snapshot}  # a removal flag is a partial write
        state.snapshots[key] = snapshot
        if step is Step.PUSH:
            state.hubspot_values.update({k: _text(v) for k, v in snapshot.items()})
        else:
            state.kleer_values.update({k: _text(v) for k, v in snapshot.items()})
        return field_changes(previous, snapshot)
    if step is Step.WEBHOOK:
        prop = data.get("propertyName")
        if not isinstance(prop, str):
            return ()
        new = _text(data.get("propertyValue"))
        old = state.hubspot_values.get(prop)
        state.hubspot_values[prop] = new
        return (FieldChange(prop, old, new),) if old != new else ()
    if step is Step.CONFLICT:
        disputed = data.get("fields")
        if not isinstance(disputed, Mapping):
            return ()
        return tuple(
            FieldChange(str(name), _text(sides.get("kleer")), _text(sides.get("hubspot")))
            for name, sides in sorted(disputed.items())
            if isinstance(sides, Mapping)
        )
    if step is Step.KLEER_WRITE:
        props = data.get("changed_properties")
        if not isinstance(props, list):
            return ()
        changes = []
        for prop in (p for p in props if isinstance(p, str)):
            old, new = state.kleer_values.get(prop), state.hubspot_values.get(prop)
            if old != new:
                changes.append(FieldChange(prop, old, new))
            state.kleer_values[prop] = new
        return tuple(changes)
    return ()


# --- summaries --------------------------------------------------------------------------------------------


def summarize(event: RecordedEvent, step: Step) -> str:
    """One line saying what happened, from the event's data."""
    data = event.data
    if step is Step.WEBHOOK:
        subscription = data.get("subscriptionType", "")
        source = data.get("changeSource")
        parts = [str(subscription)]
        if data.get("propertyName"):
            parts.append(f"property {data['propertyName']}")
        if source:
            parts.append(f"changeSource {source}")
        return ", ".join(parts)
    if step is Step.PUSH:
        target = f"{data.get('hubspot_object', 'record')} {data.get('hubspot_id', '?')}"
        if event.type.endswith("Archived"):
            return f"archived {target}"
        props = data.get("properties") or {}
        if isinstance(props, Mapping) and props.get("kleer_deleted") == "true" and len(props) == 1:
            return f"flagged {target} kleer_deleted=true"
        return f"{'created' if data.get('created') else 'updated'} {target}"
    if step is Step.POLL:
        if event.type.endswith("Removed"):
            return f"{data.get('kind', 'record')} {data.get('kleer_id', '?')} no longer listed by Kleer"
        return f"Kleer {data.get('kind', 'record')} {data.get('kleer_id', '?')} changed"
    if step is Step.PUSH_REQUEST:
        return f"push of {data.get('kind', 'record')} {data.get('kleer_id', '?')} requested"
    if step is Step.CONFLICT:
        return f"both sides changed; policy {data.get('policy', '?')}, {data.get('winner', '?')} wins"
    if step is Step.KLEER_WRITE:
        via = f" from {data['hubspot_object']} {data['hubspot_id']}" if data.get("hubspot_id") else ""
        verb = event.type.removeprefix("Kleer")
        return f"Kleer {verb}{via}"
    if step is Step.SKIPPED:
        return f"nothing written: {data.get('reason', '?')}"
    if step is Step.DEAD_LETTER:
        entry = data.get("dead_letter_id")
        if event.type == "DeadLettered":
            return f"parked as dead letter {entry} by {data.get('source', '?')}: {data.get('reason', '')}"
        if event.type.endswith("RedriveFailed"):
            return f"redrive of dead letter {entry} failed: {data.get('error', '')}"
        return f"dead letter {entry} {event.type.removeprefix('DeadLetter').lower()} by {data.get('actor', '?')}"
    if step is Step.REPLAY:
        run = data.get("run_id", "?")
        if event.type == "ReplayCompleted":
            return f"replay {run} completed: {data.get('pushed', 0)} pushed, {data.get('failed', 0)} failed"
        return f"replay {run}: {event.type.removeprefix('Replay').lower()}"
    return ", ".join(f"{k}={_text(v)}" for k, v in list(data.items())[:4] if not isinstance(v, dict | list))


# --- chains and the timeline ------------------------------------------------------------------------------


def causation_chain(event: RecordedEvent, by_id: Mapping[str, RecordedEvent], limit: int = 20) -> tuple[Link, ...]:
    """The known causes of ``event``, nearest first (stops at an unknown cause or a cycle)."""
    chain: list[Link] = []
    seen = {str(event.event_id)}
    cause_id = event.metadata.get("causation_id")
    while isinstance(cause_id, str) and cause_id not in seen and len(chain) < limit:
        seen.add(cause_id)
        cause = by_id.get(cause_id)
        if cause is None:
            chain.append(Link(0, cause_id, "?", "?"))  # recorded, but outside what was read
            break
        chain.append(Link(cause.position, cause_id, cause.type, cause.stream))
        cause_id = cause.metadata.get("causation_id")
    return tuple(chain)


def build_timeline(events: Iterable[RecordedEvent], own_streams: Sequence[str]) -> list[Entry]:
    """Entries in log order for ``events`` (the record's and the causally linked ones), deduplicated."""
    unique = {str(e.event_id): e for e in events}
    ordered = sorted(unique.values(), key=lambda e: e.position)
    own = set(own_streams)
    state = _State()
    entries = []
    for event in ordered:
        step = step_of(event.type)
        meta = event.metadata
        entries.append(
            Entry(
                position=event.position,
                event_id=str(event.event_id),
                recorded_at=event.recorded_at,
                stream=event.stream,
                type=event.type,
                step=step,
                actor=str(meta.get("actor") or "?"),
                source=str(meta.get("source") or ""),
                summary=summarize(event, step),
                changes=_changes(event, step, state, unique),
                correlation_id=_text(meta.get("correlation_id")),
                causation_id=_text(meta.get("causation_id")),
                chain=causation_chain(event, unique),
                related=event.stream not in own,
            )
        )
    return entries
