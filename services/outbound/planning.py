"""The pusher's decisions, as pure functions: coalescing, what to write, batching, associations.

Nothing here does I/O; the pusher feeds these functions what it read from the
event log and Postgres and carries out their plans against HubSpot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cached_property
from typing import NamedTuple, TypeVar

from libs.events.envelope import RecordedEvent
from libs.mapping.objects import LINE_ITEM, association_type
from libs.records import RecordRef
from services.outbound.snapshots import (
    KINDS,
    PUSH_REQUESTED,
    REMOVED,
    ParentRef,
    Snapshot,
    hubspot_object_of,
    parse_event_type,
)
from services.topics import OUTBOUND_CHANGES, route_topic

T = TypeVar("T")
K = TypeVar("K")

UPSERT_BATCH = 100  # HubSpot's batch limit for object writes
ASSOCIATION_BATCH = 2_000  # HubSpot's batch limit for associations v4 batch create

RecordKey = tuple[str, str, str]  # (connection, kind, kleer_id)


class RemovalPolicy(StrEnum):
    """What a record removed from Kleer becomes in HubSpot.

    ``flag`` (default) keeps the HubSpot record and sets ``kleer_deleted=true``:
    a company or invoice carries CRM history (deals, notes, emails) that must not
    vanish because the accounting side deleted a record. ``archive`` archives it.
    Line items are archived under both policies: they belong to their invoice or
    subscription, and a flagged row would still count in its parent's total.
    """

    FLAG = "flag"
    ARCHIVE = "archive"


_HUBSPOT_OBJECTS = {kind: hubspot_object_of(kind) for kind in KINDS}


class Action(StrEnum):
    UPSERT = "upsert"  # write the snapshot
    SKIP = "skip"  # HubSpot already has exactly this snapshot
    ARCHIVE = "archive"  # archive the HubSpot record
    FLAG = "flag"  # set the removal flag on the HubSpot record
    FORGET = "forget"  # removed before it ever reached HubSpot: nothing to write


@dataclass(frozen=True)
class Change:
    """The latest outbound event of one record in a batch."""

    connection: str
    kind: str
    kleer_id: str
    action: str  # Changed | Removed | PushRequested
    event: RecordedEvent | None  # the cause; None for a push requested in-process (push_now)
    snapshot: Snapshot | None  # None for a removal
    force: bool  # a push was requested: write even if HubSpot has this fingerprint

    @cached_property
    def key(self) -> RecordKey:  # looked up a dozen times per record and push: built once
        return (self.connection, self.kind, self.kleer_id)

    @property
    def record(self) -> str:
        return str(RecordRef("kleer", self.kind, self.kleer_id))

    @property
    def hubspot_object(self) -> str:
        return _HUBSPOT_OBJECTS[self.kind]


@dataclass(frozen=True)
class Malformed:
    event: RecordedEvent
    reason: str


@dataclass(frozen=True)
class Pushed:
    """What we last wrote to HubSpot for one record (a row of ``hubspot_ids``)."""

    hubspot_id: str
    fingerprint: str | None
    associated: frozenset[str]
    removed: bool
    properties: Mapping[str, str] | None = None  # known only for a push not yet committed (in memory)


def coalesce(events: Iterable[RecordedEvent]) -> tuple[list[Change], list[Malformed]]:
    """The latest outbound event per record, in log order; events not routed to the pusher are ignored.

    A record with any ``PushRequested`` event in the batch is forced (written even
    when HubSpot has its fingerprint). Events whose data cannot be read come back
    as ``Malformed``, to be parked.
    """
    latest: dict[RecordKey, Change] = {}
    forced: set[RecordKey] = set()
    malformed: list[Malformed] = []
    for event in sorted(events, key=lambda e: e.position):
        parsed = parse_event_type(event.type)
        if parsed is None:
            if route_topic(event.type) == OUTBOUND_CHANGES:
                # Routed to the pusher, yet unknown here (a newer poller wrote it?): parked, never dropped.
                malformed.append(Malformed(
                    event, f"unknown event type {event.type} on the outbound topic: this pusher version cannot "
                    "push it; upgrade the pusher, then redrive"))
            continue
        kind, action = parsed
        try:
            connection, ref = RecordRef.from_stream(event.stream)
            snapshot = None if action == REMOVED else Snapshot.from_event_data(event.data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            malformed.append(Malformed(event, f"unreadable {event.type} event: {exc!r}"))
            continue
        if snapshot is not None and (snapshot.kind != kind or snapshot.kleer_id != ref.id):
            malformed.append(
                Malformed(
                    event,
                    f"{event.type} on stream {event.stream} carries {snapshot.kind}:{snapshot.kleer_id}",
                )
            )
            continue
        key = (connection, kind, ref.id)
        if action == PUSH_REQUESTED:
            forced.add(key)
        latest[key] = Change(connection, kind, ref.id, action, event, snapshot, False)
    changes = list(latest.values())
    if forced:
        changes = [replace(c, force=True) if c.key in forced else c for c in changes]
    changes.sort(key=lambda c: c.event.position if c.event is not None else 0)
    return changes, malformed


def decide(change: Change, pushed: Pushed | None, policy: RemovalPolicy) -> Action:
    """What to do with one coalesced change, given what HubSpot last got from us."""
    if change.snapshot is None:
        if pushed is None or pushed.removed:
            return Action.FORGET
        if policy is RemovalPolicy.ARCHIVE or change.kind == LINE_ITEM:
            return Action.ARCHIVE
        return Action.FLAG
    if change.force or pushed is None or pushed.removed:
        return Action.UPSERT
    return Action.SKIP if pushed.fingerprint == change.snapshot.fingerprint else Action.UPSERT


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def group_by(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    grouped: dict[K, list[T]] = {}
    for item in items:
        grouped.setdefault(key(item), []).append(item)
    return grouped


# --- associations -----------------------------------------------------------------------------------


class Link(NamedTuple):
    """One association to write: child record -> parent record, with HubSpot ids and the type.

    A tuple, as ``Child``: one is made per association (140,000 a full sync of the outbound benchmark), and a
    frozen dataclass of ten fields cost several times as much to build.
    """

    connection: str
    child_kind: str
    child_kleer_id: str
    parent: ParentRef
    from_object: str
    from_id: str
    to_object: str
    to_id: str
    type_id: int
    category: str

    @property
    def child_key(self) -> RecordKey:
        return (self.connection, self.child_kind, self.child_kleer_id)

    @property
    def batch_key(self) -> tuple[str, str, str]:
        return (self.connection, self.from_object, self.to_object)


@dataclass(frozen=True)
class Waiting:
    """An association whose parent has no HubSpot id yet: stored, and written when the parent lands."""

    connection: str
    child_kind: str
    child_kleer_id: str
    parent: ParentRef


class Child(NamedTuple):
    """A record just written (or already in HubSpot) whose parents should be associated."""

    connection: str
    snapshot_kind: str
    kleer_id: str
    hubspot_id: str
    parents: tuple[ParentRef, ...]
    associated: frozenset[str]


ParentLookup = Callable[[str, ParentRef], str | None]
"""(connection, parent) -> the parent's HubSpot id, or None when it is not in HubSpot yet."""


def plan_links(
    children: Iterable[Child], lookup: ParentLookup
) -> tuple[list[Link], list[Waiting], list[str]]:
    """Associations to write now, those that must wait for their parent, and unsupported pairs.

    A parent already associated (in ``Child.associated``) is left alone, so an
    unchanged record costs no association request.
    """
    links: list[Link] = []
    waiting: list[Waiting] = []
    unsupported: list[str] = []
    for child in children:
        child_object = hubspot_object_of(child.snapshot_kind)
        for parent in child.parents:
            if parent.key in child.associated:
                continue
            try:
                kind = association_type(child_object, parent.hubspot_object)
            except KeyError:
                unsupported.append(f"{child_object} -> {parent.hubspot_object}")
                continue
            to_id = parent.hubspot_id or lookup(child.connection, parent)
            if to_id is None:
                waiting.append(Waiting(child.connection, child.snapshot_kind, child.kleer_id, parent))
                continue
            links.append(
                Link(
                    connection=child.connection,
                    child_kind=child.snapshot_kind,
                    child_kleer_id=child.kleer_id,
                    parent=parent,
                    from_object=child_object,
                    from_id=child.hubspot_id,
                    to_object=parent.hubspot_object,
                    to_id=to_id,
                    type_id=kind.type_id,
                    category=kind.category,
                )
            )
    return links, waiting, sorted(set(unsupported))


def association_batches(links: Sequence[Link]) -> list[tuple[tuple[str, str, str], Sequence[Link]]]:
    """Links grouped by (connection, from object, to object), in requests of at most 2,000."""
    batches: list[tuple[tuple[str, str, str], Sequence[Link]]] = []
    for key, group in group_by(links, lambda link: link.batch_key).items():
        unique = list({(link.from_id, link.to_id, link.type_id): link for link in group}.values())
        for part in chunks(unique, ASSOCIATION_BATCH):
            batches.append((key, part))
    return batches


def minimum_requests(records_per_object: Mapping[str, int], links_per_pair: Mapping[str, int]) -> int:
    """The fewest HubSpot requests that can write these records and associations (for benchmarks)."""
    upserts = sum(-(-n // UPSERT_BATCH) for n in records_per_object.values())
    links = sum(-(-n // ASSOCIATION_BATCH) for n in links_per_pair.values())
    return upserts + links
