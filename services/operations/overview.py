"""The state of the sync per connection and object type, for the admin overview.

Every figure is an index look-up or a count over a bookkeeping table (one row
per record, not per event), so the overview stays fast however long the log
grows:

- records the poller knows (``outbound_fingerprints``) and records in HubSpot
  (``hubspot_ids``);
- the last change the poller recorded and the last HubSpot write, found by
  walking the ``(type, position)`` index backwards;
- lag: how long the oldest change after the last HubSpot write has waited;
- open dead letters;
- last poll, freshness and the last poll error from ``poll_runs``, which the
  poller upserts after each pass wherever it runs (its own process in the
  Kubernetes layout); the in-process gauge only when that table has no row.

Consumers and the relay: the checkpoints and how far behind the log head they are.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from libs.events.pauses import Pause, all_paused
from libs.mapping.objects import KLEER_OBJECT_TYPES
from libs.observability import metrics
from services.operations.rows import connection_streams
from services.outbound.snapshots import (
    archived_type,
    changed_type,
    hubspot_object_of,
    removed_type,
    upserted_type,
)


def change_types(kind: str) -> list[str]:
    """The poller's event types of a Kleer kind (``KleerClientChanged``, ``KleerClientRemoved``)."""
    return [changed_type(kind), removed_type(kind)]


def push_types(kind: str) -> list[str]:
    """The pusher's event types of a Kleer kind's HubSpot object (``HubSpotCompanyUpserted``...)."""
    hubspot_object = hubspot_object_of(kind)
    return [upserted_type(hubspot_object), archived_type(hubspot_object)]


@dataclass(frozen=True)
class Mark:
    """An event found in the log: its position and time."""

    position: int
    at: datetime


@dataclass
class KindStatus:
    connection: str
    kind: str
    records: int = 0
    in_hubspot: int = 0
    last_change: Mark | None = None
    last_push: Mark | None = None
    waiting_since: datetime | None = None  # the oldest change not followed by a HubSpot write
    open_dead_letters: int = 0
    last_poll: float | None = None  # unix time of the last successful poll (poll_runs, else the in-process gauge)
    poll_error: str | None = None  # the last pass's error, until a pass succeeds

    def lag_seconds(self, now: datetime) -> float:
        return max(0.0, (now - self.waiting_since).total_seconds()) if self.waiting_since else 0.0

    def freshness_seconds(self, now: float | None = None) -> float | None:
        if self.last_poll is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.last_poll)


@dataclass(frozen=True)
class ConsumerStatus:
    consumer: str
    topic: str
    partitions: int
    position: int
    lag_events: int
    updated_at: datetime | None


@dataclass
class Overview:
    head: int
    now: datetime
    kinds: list[KindStatus] = field(default_factory=list)
    consumers: list[ConsumerStatus] = field(default_factory=list)
    relay_position: int | None = None
    dead_letters_by_source: dict[str, int] = field(default_factory=dict)
    paused: list[Pause] = field(default_factory=list)  # consumer groups paused (kleer-sync outbound pause)

    @property
    def connections(self) -> list[str]:
        return list(dict.fromkeys(k.connection for k in self.kinds))


async def _last(conn: asyncpg.Connection, types: Sequence[str], prefix: str) -> Mark | None:
    best: Mark | None = None
    for event_type in types:  # one backward index walk per type (an ANY would sort)
        row = await conn.fetchrow(
            "SELECT position, recorded_at FROM events WHERE type = $1 AND stream LIKE $2 "
            "ORDER BY position DESC LIMIT 1",
            event_type,
            prefix,
        )
        if row is not None and (best is None or row[0] > best.position):
            best = Mark(row[0], row[1])
    return best


async def _first_after(conn: asyncpg.Connection, types: Sequence[str], prefix: str, after: int) -> datetime | None:
    first: tuple[int, datetime] | None = None
    for event_type in types:
        row = await conn.fetchrow(
            "SELECT position, recorded_at FROM events WHERE type = $1 AND stream LIKE $2 AND position > $3 "
            "ORDER BY position LIMIT 1",
            event_type,
            prefix,
            after,
        )
        if row is not None and (first is None or row[0] < first[0]):
            first = (row[0], row[1])
    return first[1] if first else None


async def _poll_runs(conn: asyncpg.Connection) -> dict[tuple[str, str], tuple[float | None, str | None]]:
    """(connection, kind) -> (unix time of the last successful poll, the last pass's error)."""
    try:
        rows = await conn.fetch("SELECT connection, kind, last_success_at, last_error FROM poll_runs")
    except asyncpg.UndefinedTableError:
        return {}
    return {(r[0], r[1]): (r[2].timestamp() if r[2] else None, r[3]) for r in rows}


async def _counts(conn: asyncpg.Connection, sql: str) -> dict[tuple[str, str], int]:
    try:
        rows = await conn.fetch(sql)
    except asyncpg.UndefinedTableError:
        return {}
    return {(r[0], r[1]): int(r[2]) for r in rows}


def _gauge_value(gauge: object, connection: str, kind: str) -> float | None:
    collect = getattr(gauge, "collect", None)
    if collect is None:
        return None
    for family in collect():
        for sample in family.samples:
            if sample.labels.get("connection") == connection and sample.labels.get("object_type") == kind:
                return float(sample.value) or None
    return None


async def load_overview(pool: asyncpg.Pool, connections: Sequence[str] = ()) -> Overview:
    """The overview of ``connections`` plus every connection the bookkeeping tables know."""
    async with pool.acquire() as conn:
        head = int(await conn.fetchval("SELECT COALESCE(max(position), 0) FROM events"))
        now = await conn.fetchval("SELECT now()")
        records = await _counts(
            conn, "SELECT connection, kind, count(*) FROM outbound_fingerprints GROUP BY connection, kind"
        )
        in_hubspot = await _counts(
            conn, "SELECT connection, kind, count(*) FROM hubspot_ids WHERE NOT removed GROUP BY connection, kind"
        )
        dead = await _counts(
            conn,
            "SELECT connection, split_part(record, ':', 2), count(*) FROM dead_letters WHERE status = 'open' "
            "GROUP BY 1, 2",
        )
        by_source = await _counts(
            conn, "SELECT source, '', count(*) FROM dead_letters WHERE status = 'open' GROUP BY source"
        )
        polls = await _poll_runs(conn)
        known = list(dict.fromkeys([*connections, *(c for c, _ in (*records, *in_hubspot, *dead, *polls))]))
        overview = Overview(head=head, now=now, dead_letters_by_source={s: n for (s, _), n in by_source.items()})
        for connection in known:
            prefix = connection_streams(connection)
            for kind in KLEER_OBJECT_TYPES:
                status = KindStatus(
                    connection,
                    kind,
                    records=records.get((connection, kind), 0),
                    in_hubspot=in_hubspot.get((connection, kind), 0),
                    open_dead_letters=dead.get((connection, kind), 0),
                    last_poll=_gauge_value(metrics.POLL_LAST_SUCCESS, connection, kind),
                )
                if (connection, kind) in polls:
                    status.last_poll, status.poll_error = polls[(connection, kind)]
                status.last_change = await _last(conn, change_types(kind), prefix)
                status.last_push = await _last(conn, push_types(kind), prefix)
                pushed_up_to = status.last_push.position if status.last_push else 0
                if status.last_change and status.last_change.position > pushed_up_to:
                    status.waiting_since = await _first_after(conn, change_types(kind), prefix, pushed_up_to)
                overview.kinds.append(status)
        overview.consumers = await _consumers(conn, head)
        overview.paused = await all_paused(conn)
        try:
            overview.relay_position = await conn.fetchval("SELECT max(position) FROM relay_state")
        except asyncpg.UndefinedTableError:
            overview.relay_position = None
    return overview


async def _consumers(conn: asyncpg.Connection, head: int) -> list[ConsumerStatus]:
    """Per consumer and topic: the lowest checkpoint and the worst partition's lag behind what was published."""
    rows = await conn.fetch(
        "SELECT c.consumer, c.topic, count(*), min(c.position), max(c.updated_at), "
        "COALESCE(max(GREATEST(r.last_position - c.position, 0)), 0) "
        "FROM consumer_checkpoints c LEFT JOIN relay_partitions r ON r.topic = c.topic AND r.partition = c.partition "
        "GROUP BY c.consumer, c.topic ORDER BY c.consumer, c.topic"
    )
    return [ConsumerStatus(r[0], r[1], int(r[2]), int(r[3]), int(r[5]), r[4]) for r in rows]
