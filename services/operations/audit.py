"""``audit``: one record's timeline across both systems, from indexed reads of the event log.

A Kleer record and the HubSpot record it syncs with are one thing to the
operator, so the audit of either shows both: the link comes from the pusher's
id map (``hubspot_ids``: Kleer record → HubSpot id), the inbound links
(``inbound_links``) and the ids the events themselves carry (a
``HubSpot…Upserted`` event names its ``hubspot_id``, an inbound outcome its
``kleer_id``).

Then the causation chain is followed across streams: causes by ``event_id``
(unique index), effects by ``metadata->>'causation_id'`` (index of migration
007). Correlation ids are shown but not followed: one poll shares a
correlation id across every record it saw.

Every query is an index look-up (stream, event id, causation id, id map
keys), so an audit costs a few milliseconds on a log of millions of events.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from libs.events.envelope import RecordedEvent
from libs.mapping.objects import HUBSPOT_OBJECT_FOR, KLEER_OBJECT_FOR, hubspot_object
from libs.records import RecordRef
from services.operations.rows import EVENT_COLUMNS, recorded
from services.operations.timeline import Entry, build_timeline

DEFAULT_LIMIT = 500
CAUSE_DEPTH = 12  # how far back a chain is followed outside the record's streams
EFFECT_DEPTH = 3  # how far forward
EFFECT_LIMIT = 200  # related events pulled in by causation, at most



@dataclass(frozen=True)
class LinkedRecord:
    record: RecordRef
    via: str  # id map, inbound link, event data

    def to_json(self) -> dict[str, str]:
        return {"record": str(self.record), "via": self.via}


@dataclass
class Audit:
    """The timeline of one record (and the records it is linked to), oldest first."""

    record: RecordRef
    connection: str
    linked: list[LinkedRecord] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    truncated: bool = False  # older events of the record's streams were left out (see limit)

    def to_json(self) -> dict[str, Any]:
        return {
            "record": str(self.record),
            "connection": self.connection,
            "linked": [link.to_json() for link in self.linked],
            "streams": self.streams,
            "truncated": self.truncated,
            "entries": [e.to_json() for e in self.entries],
        }


def hubspot_record(hubspot_object_name: str, hubspot_id: str) -> RecordRef:
    """``("companies", "456")`` -> ``hubspot:company:456`` (the kind HubSpot streams are named by)."""
    return RecordRef("hubspot", hubspot_object(hubspot_object_name).singular, str(hubspot_id))


async def _optional_fetch(conn: asyncpg.Connection, sql: str, *args: object) -> list[asyncpg.Record]:
    """A read of another area's table; an empty answer when that area's migration is not applied."""
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
    except asyncpg.UndefinedTableError:
        return []
    return rows


async def linked_records(conn: asyncpg.Connection, connection: str, ref: RecordRef) -> list[LinkedRecord]:
    """The records on the other side that ``ref`` syncs with, from the id map and the inbound links."""
    found: dict[RecordRef, str] = {}
    if ref.system == "kleer" and ref.kind in HUBSPOT_OBJECT_FOR:
        for row in await _optional_fetch(
            conn,
            "SELECT hubspot_object, hubspot_id FROM hubspot_ids WHERE connection = $1 AND kind = $2 AND kleer_id = $3",
            connection,
            ref.kind,
            ref.id,
        ):
            found.setdefault(hubspot_record(row[0], row[1]), "id map")
        for row in await _optional_fetch(
            conn,
            "SELECT hubspot_object, hubspot_id FROM inbound_links "
            "WHERE connection = $1 AND kleer_type = $2 AND kleer_id = $3",
            connection,
            ref.kind,
            ref.id,
        ):
            found.setdefault(hubspot_record(row[0], row[1]), "inbound link")
    elif ref.system == "hubspot":
        try:
            object_name = hubspot_object(ref.kind).name
        except ValueError:
            return []
        for row in await _optional_fetch(
            conn,
            "SELECT kind, kleer_id FROM hubspot_ids WHERE connection = $1 AND hubspot_object = $2 AND hubspot_id = $3",
            connection,
            object_name,
            ref.id,
        ):
            found.setdefault(RecordRef("kleer", row[0], row[1]), "id map")
        for row in await _optional_fetch(
            conn,
            "SELECT kleer_type, kleer_id FROM inbound_links "
            "WHERE connection = $1 AND hubspot_object = $2 AND hubspot_id = $3",
            connection,
            object_name,
            ref.id,
        ):
            found.setdefault(RecordRef("kleer", row[0], row[1]), "inbound link")
    return [LinkedRecord(record, via) for record, via in found.items()]


def records_named_in(events: Iterable[RecordedEvent], ref: RecordRef) -> list[RecordRef]:
    """Records of the other side that events of ``ref``'s stream name in their data."""
    named: list[RecordRef] = []
    for event in events:
        data = event.data
        try:
            if ref.system == "kleer" and data.get("hubspot_id") and data.get("hubspot_object"):
                named.append(hubspot_record(str(data["hubspot_object"]), str(data["hubspot_id"])))
            elif ref.system == "hubspot" and data.get("kleer_id"):
                object_name = hubspot_object(ref.kind).name
                kind = str(data.get("kleer_type") or data.get("kind") or KLEER_OBJECT_FOR.get(object_name, ""))
                if kind:
                    named.append(RecordRef("kleer", kind, str(data["kleer_id"])))
        except ValueError:
            continue
    return list(dict.fromkeys(named))


async def _read_streams(
    conn: asyncpg.Connection, streams: Sequence[str], limit: int
) -> tuple[list[RecordedEvent], bool]:
    rows = await conn.fetch(
        f"WITH own AS MATERIALIZED (SELECT {EVENT_COLUMNS} FROM events WHERE stream = ANY($1::text[])) "
        "SELECT * FROM own ORDER BY position DESC LIMIT $2",
        list(streams),
        limit + 1,
    )
    return [recorded(r) for r in rows[:limit]], len(rows) > limit


async def _follow(conn: asyncpg.Connection, events: dict[str, RecordedEvent]) -> None:
    """Add to ``events``, in place, the effects of the record's own events and then every known cause.

    Effects are followed from the record's events only: the effects of a cause
    (say, every push of a replay run) belong to other records' timelines.
    """
    frontier = list(events.values())
    added = 0
    for _ in range(EFFECT_DEPTH):
        ids = [str(e.event_id) for e in frontier]
        if not ids or added >= EFFECT_LIMIT:
            break
        # No ORDER BY: with one, the planner may walk the whole log in position order looking for
        # the few rows the causation index finds at once.
        rows = await conn.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE metadata ? 'causation_id' "
            "AND metadata->>'causation_id' = ANY($1::text[]) LIMIT $2",
            ids,
            EFFECT_LIMIT - added + len(ids),
        )
        found = sorted(map(recorded, rows), key=lambda e: e.position)
        frontier = [e for e in found if str(e.event_id) not in events][: EFFECT_LIMIT - added]
        events.update((str(e.event_id), e) for e in frontier)
        added += len(frontier)
    frontier = list(events.values())
    for _ in range(CAUSE_DEPTH):
        wanted = {
            cause
            for e in frontier
            if isinstance(cause := e.metadata.get("causation_id"), str) and cause not in events
        }
        cause_ids = [uuid.UUID(c) for c in wanted if _is_uuid(c)]
        if not cause_ids:
            break
        rows = await conn.fetch(f"SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ANY($1::uuid[])", cause_ids)
        frontier = [recorded(r) for r in rows]
        events.update((str(e.event_id), e) for e in frontier)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


async def load_audit(
    pool: asyncpg.Pool, ref: RecordRef, connection: str, *, limit: int = DEFAULT_LIMIT
) -> Audit:
    """The audit of ``ref`` in ``connection``: its own and its linked records' events, and their causal kin.

    ``limit`` bounds the events read from the record's streams (the newest are
    kept; ``Audit.truncated`` says when older ones were left out).
    """
    audit = Audit(ref, connection)
    async with pool.acquire() as conn:
        audit.linked = await linked_records(conn, connection, ref)
        streams = [ref.stream(connection), *(link.record.stream(connection) for link in audit.linked)]
        own, truncated = await _read_streams(conn, streams, limit)
        named = [r for r in records_named_in(own, ref) if r.stream(connection) not in streams]
        if named:
            audit.linked.extend(LinkedRecord(r, "event data") for r in named)
            streams.extend(r.stream(connection) for r in named)
            own, truncated = await _read_streams(conn, streams, limit)
        events = {str(e.event_id): e for e in own}
        await _follow(conn, events)
    audit.streams = streams
    audit.truncated = truncated
    audit.entries = build_timeline(events.values(), streams)
    return audit


async def load_correlation(pool: asyncpg.Pool, correlation_id: str, *, limit: int = DEFAULT_LIMIT) -> list[Entry]:
    """Every event of one correlation (a whole chain of cause and effect, or one poll), oldest first."""
    async with pool.acquire() as conn:
        # MATERIALIZED: find the correlation's rows by its index first, then order them (see _follow).
        rows = await conn.fetch(
            f"WITH chain AS MATERIALIZED (SELECT {EVENT_COLUMNS} FROM events WHERE metadata ? 'correlation_id' "
            "AND metadata->>'correlation_id' = $1) SELECT * FROM chain ORDER BY position LIMIT $2",
            correlation_id,
            limit,
        )
    events = [recorded(r) for r in rows]
    return build_timeline(events, sorted({e.stream for e in events}))
