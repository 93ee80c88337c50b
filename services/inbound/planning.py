"""What a batch of recorded webhook events asks for: pure decisions, no I/O.

``plan_batch`` keeps the events inbound sync handles (``company.*``, and
``object.*`` of projects ``0-970``), groups them per HubSpot record
(coalescing), drops echoes of our own writes that the event metadata reveals
(``changeSource`` ``INTEGRATION`` with our app id), keeps the latest change per
property, and decides per record:

- ``DELETE``: the record was deleted in HubSpot (wins over anything else);
- ``MERGE``: companies were merged into this one;
- ``SYNC``: a trigger property changed (or the record was created): read the
  current record and write every mapped field to Kleer (``created`` says a
  creation was seen, so an unlinked company may get a new Kleer client);
- ``SKIP``: nothing to do, with the reason (``echo``, ``no_trigger``).

Echoes the metadata does not reveal are found by the handler in the own-write
log (``services.own_writes.echoes``) and removed with ``drop_echoes``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from libs.events.envelope import RecordedEvent
from libs.mapping.objects import CLIENT, PROJECT
from services.inbound.webhook_events import WebhookEvent

COMPANIES = "companies"
PROJECTS = "projects"
PROJECT_TYPE_ID = "0-970"
INTEGRATION = "INTEGRATION"
# changeSource values that name a person or HubSpot's own automation: such a change is never our echo,
# whatever value it sets (a person may well set a value back to one we wrote earlier).
NOT_OURS_SOURCES = frozenset({
    "CRM_UI", "CRM_UI_BULK_ACTION", "MOBILE_IOS", "MOBILE_ANDROID", "IMPORT", "WORKFLOWS", "FORM", "MERGE",
})

#: HubSpot object -> Kleer object type, for the objects inbound sync handles.
KLEER_TYPE: Mapping[str, str] = {COMPANIES: CLIENT, PROJECTS: PROJECT}


class Action(StrEnum):
    SYNC = "sync"
    DELETE = "delete"
    MERGE = "merge"
    SKIP = "skip"


@dataclass(frozen=True)
class Change:
    property: str
    value: str
    occurred_at: int
    cause: RecordedEvent
    not_ours: bool = False  # the metadata names a person or HubSpot automation: the own-write log is not asked


@dataclass(frozen=True)
class RecordWork:
    """Everything a batch says about one HubSpot record."""

    connection: str
    hubspot_object: str
    hubspot_id: str
    events: tuple[RecordedEvent, ...]
    changes: tuple[Change, ...] = ()  # latest per property, echoes (by metadata) removed
    echoes: tuple[Change, ...] = ()
    created: bool = False
    deleted: bool = False
    merge: WebhookEvent | None = None

    @property
    def kleer_type(self) -> str:
        return KLEER_TYPE[self.hubspot_object]

    @property
    def cause(self) -> RecordedEvent:
        """The latest event of this record in the batch (the causation of the outcome)."""
        return self.events[-1]

    @property
    def changed_properties(self) -> tuple[str, ...]:
        return tuple(c.property for c in self.changes)

    @property
    def received_at(self) -> float:
        """Unix time the earliest of its webhook events was recorded."""
        return min(e.recorded_at.timestamp() for e in self.events)


@dataclass(frozen=True)
class Decision:
    work: RecordWork
    action: Action
    reason: str = ""
    triggers: tuple[str, ...] = field(default=())


def hubspot_object_of(event: WebhookEvent) -> str | None:
    """``companies`` / ``projects`` for events inbound sync handles, else None."""
    prefix = event.subscription_type.split(".", 1)[0]
    if prefix == "company":
        return COMPANIES
    if prefix == "object" and event.raw.get("objectTypeId") == PROJECT_TYPE_ID:
        return PROJECTS
    return None


def connection_of(recorded: RecordedEvent) -> str:
    return recorded.stream.split("/", 1)[0]


def is_metadata_echo(event: WebhookEvent, app_id: int | None) -> bool:
    """Our own API write, as the webhook's metadata says (changeSource INTEGRATION, sourceId our app)."""
    if event.change_source != INTEGRATION or app_id is None:
        return False
    source = event.source_id or ""
    return source == str(app_id) or source == f"app:{app_id}" or source.endswith(f":{app_id}")


def group_batch(
    events: Iterable[tuple[RecordedEvent, WebhookEvent]], app_id: int | None
) -> tuple[list[RecordWork], int]:
    """Group the handled events per record; returns (work per record, number of events not handled)."""
    grouped: dict[tuple[str, str, str], list[tuple[RecordedEvent, WebhookEvent]]] = {}
    ignored = 0
    for recorded, event in events:
        hubspot_object = hubspot_object_of(event)
        if hubspot_object is None:
            ignored += 1
            continue
        key = (connection_of(recorded), hubspot_object, str(event.object_id))
        grouped.setdefault(key, []).append((recorded, event))
    return [_work(key, items, app_id) for key, items in grouped.items()], ignored


def _work(
    key: tuple[str, str, str], items: list[tuple[RecordedEvent, WebhookEvent]], app_id: int | None
) -> RecordWork:
    connection, hubspot_object, hubspot_id = key
    items.sort(key=lambda pair: pair[0].position)
    latest: dict[str, tuple[Change, bool]] = {}
    created = deleted = False
    merge: WebhookEvent | None = None
    for recorded, event in items:
        kind = event.change
        if kind == "propertyChange" and event.property_name:
            change = Change(event.property_name, event.property_value or "", event.occurred_at, recorded,
                            not_ours=event.change_source in NOT_OURS_SOURCES)
            previous = latest.get(change.property)
            if previous is None or (change.occurred_at, recorded.position) >= (
                previous[0].occurred_at,
                previous[0].cause.position,
            ):
                latest[change.property] = (change, is_metadata_echo(event, app_id))
        elif kind == "creation":
            created = created or not is_metadata_echo(event, app_id)
        elif kind == "deletion":
            deleted = True
        elif kind == "merge":
            merge = event
        elif kind == "restore":
            created = True
    changes = tuple(c for c, echo in latest.values() if not echo)
    echoes = tuple(c for c, echo in latest.values() if echo)
    return RecordWork(
        connection=connection,
        hubspot_object=hubspot_object,
        hubspot_id=hubspot_id,
        events=tuple(r for r, _ in items),
        changes=changes,
        echoes=echoes,
        created=created,
        deleted=deleted,
        merge=merge,
    )


def drop_echoes(work: RecordWork, own_echoes: Collection[str]) -> RecordWork:
    """``work`` without the changes whose property the own-write log recognised as our echo."""
    if not own_echoes:
        return work
    kept = tuple(c for c in work.changes if c.property not in own_echoes)
    echoed = tuple(c for c in work.changes if c.property in own_echoes)
    return replace(work, changes=kept, echoes=work.echoes + echoed)


def decide(work: RecordWork, triggers: Collection[str]) -> Decision:
    """What to do for one record (see the module docstring)."""
    if work.deleted:
        return Decision(work, Action.DELETE)
    if work.merge is not None:
        return Decision(work, Action.MERGE)
    fired = tuple(c.property for c in work.changes if c.property in triggers)
    if fired or work.created:
        return Decision(work, Action.SYNC, triggers=fired)
    if work.echoes and not work.changes:
        return Decision(work, Action.SKIP, "echo")
    return Decision(work, Action.SKIP, "no_trigger")


def plan_batch(
    events: Sequence[tuple[RecordedEvent, WebhookEvent]],
    app_id: int | None,
    triggers: Mapping[str, Collection[str]],
) -> list[Decision]:
    """Decisions for a batch, before the own-write echo check (see ``drop_echoes``)."""
    work, _ = group_batch(events, app_id)
    return [decide(w, triggers.get(w.hubspot_object, ())) for w in work]


def merge_survivor(event: WebhookEvent) -> str:
    """The id of the company that survives a merge (HubSpot: newObjectId, else primaryObjectId)."""
    raw = event.raw
    for key in ("newObjectId", "primaryObjectId"):
        value = raw.get(key)
        if isinstance(value, int):
            return str(value)
    return str(event.object_id)


def merged_away(event: WebhookEvent) -> list[str]:
    """Ids of the companies merged into the survivor, the primary first (its link is the one kept)."""
    survivor = merge_survivor(event)
    raw = event.raw
    ids: list[str] = []
    primary = raw.get("primaryObjectId")
    if isinstance(primary, int):
        ids.append(str(primary))
    ids.extend(str(i) for i in raw.get("mergedObjectIds") or [] if isinstance(i, int))
    ids.append(str(event.object_id))
    return [i for i in dict.fromkeys(ids) if i != survivor]
