"""The pusher's memory in Postgres: Kleer id -> HubSpot id (``hubspot_ids``) and associations that
wait for their parent (``pending_associations``). Reads are one query per batch; writes are
set-based and run inside the consumer's commit transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from operator import attrgetter
from typing import NamedTuple, TypeAlias

import asyncpg
import orjson

from libs.records import stream_of
from services.outbound.planning import Pushed, RecordKey, Waiting
from services.outbound.snapshots import PROPERTIES_FROM, ParentRef

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


class IdRow(NamedTuple):
    """One row to write to ``hubspot_ids`` (a tuple: one or two are made per record pushed, 1.3 us each
    against a frozen dataclass's 1.8)."""

    connection: str
    kind: str
    kleer_id: str
    hubspot_object: str
    hubspot_id: str
    fingerprint: str | None
    associated: Sequence[str]
    removed: bool = False
    properties: Mapping[str, str] | None = None  # the snapshot written (kept in memory, not in the table)

    @property
    def key(self) -> RecordKey:
        """The record's key: the table's, and the order every writer locks its rows in."""
        return self.connection, self.kind, self.kleer_id


# Rows go to Postgres as one JSON array of arrays (``json_rows``), taken apart in SQL, not as one array
# parameter per column: asyncpg checks every element of an array parameter in Python (35 checks per
# pushed record, 1.4 s of a 24 s pusher profile), and the JSON costs the server no more. Measured on
# 5,000 keys against 150,000 rows: 3.9-4.9 ms of client CPU per look-up instead of 11.8-12.6.
_KEYS = "(SELECT r->>0 AS connection, r->>1 AS kind, r->>2 AS kleer_id FROM jsonb_array_elements($1::jsonb) AS r)"
_WAITING = (
    "(SELECT r->>0 AS connection, r->>1 AS from_kind, r->>2 AS from_kleer_id, r->>3 AS to_kind, "
    "r->>4 AS to_kleer_id FROM jsonb_array_elements($1::jsonb) AS r)"
)


def json_rows(rows: Iterable[Sequence[object]]) -> str:
    """Rows (tuples or lists of JSON values) as the JSON array a statement takes apart with ``->>``."""
    return orjson.dumps(rows if isinstance(rows, list) else list(rows)).decode()


def _waiting_rows(waiting: Sequence[Waiting]) -> str:
    return json_rows(
        [(w.connection, w.child_kind, w.child_kleer_id, w.parent.kind, w.parent.kleer_id or "") for w in waiting]
    )


async def load_pushed(conn: Conn, keys: Iterable[RecordKey]) -> dict[RecordKey, Pushed]:
    """What we last wrote for each of these records (absent: never written)."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    rows = await conn.fetch(
        "SELECT h.connection, h.kind, h.kleer_id, h.hubspot_id, h.pushed_fingerprint, h.associated, h.removed "
        f"FROM {_KEYS} AS k JOIN hubspot_ids h USING (connection, kind, kleer_id)",
        json_rows(keys),
    )
    return {(r[0], r[1], r[2]): Pushed(r[3], r[4], frozenset(r[5]), r[6]) for r in rows}


_ID_COLUMNS = ("connection", "kind", "kleer_id", "hubspot_object", "hubspot_id", "pushed_fingerprint", "associated",
               "removed")
_UPSERT_IDS_SQL = (
    "INSERT INTO hubspot_ids AS h (connection, kind, kleer_id, hubspot_object, hubspot_id, "
    "pushed_fingerprint, associated, removed) "
    "SELECT r->>0, r->>1, r->>2, r->>3, r->>4, r->>5, "
    "ARRAY(SELECT jsonb_array_elements_text(r->6)), (r->>7)::boolean "
    "FROM jsonb_array_elements($1::jsonb) AS r "
    "ON CONFLICT (connection, kind, kleer_id) DO UPDATE SET "
    "hubspot_object = EXCLUDED.hubspot_object, "
    "hubspot_id = EXCLUDED.hubspot_id, pushed_fingerprint = EXCLUDED.pushed_fingerprint, "
    "associated = CASE WHEN h.hubspot_id = EXCLUDED.hubspot_id "
    "  THEN ARRAY(SELECT DISTINCT unnest(h.associated || EXCLUDED.associated)) "
    "  ELSE EXCLUDED.associated END, "
    "removed = EXCLUDED.removed, updated_at = now()"
)
COPY_NEW_IDS_FROM = 50  # new rows in a batch from which COPY (and its savepoint) pays


def _id_values(row: IdRow) -> tuple[str, str, str, str, str, str | None, list[str], bool]:
    return (row.connection, row.kind, row.kleer_id, row.hubspot_object, row.hubspot_id, row.fingerprint,
            sorted(set(row.associated)), row.removed)


async def save_ids(conn: asyncpg.Connection, rows: Sequence[IdRow], *, new: Set[RecordKey] = frozenset()) -> None:
    """Upsert rows; ``associated`` is merged with what is stored (associations are never forgotten).

    Rows of the records in ``new`` (the table had none when their push began) are inserted by COPY, in a
    savepoint: 5,000 new rows took the server 28 ms so, against 48 ms through the upsert. Should another
    writer have stored one meanwhile (a rebalance handing a partition over mid-batch), the savepoint is
    rolled back and every row goes through the upsert, as any other.
    """
    if not rows:
        return
    # In key order, as every writer of these rows locks them (the inbound handlers too): two commits holding
    # the same records wait for each other rather than deadlock.
    rest = rows = sorted(rows, key=attrgetter("key"))
    if len(new) >= COPY_NEW_IDS_FROM:
        fresh: list[IdRow] = []
        known: list[IdRow] = []
        for row in rows:
            (fresh if row.key in new else known).append(row)
        if len(fresh) >= COPY_NEW_IDS_FROM:
            try:
                async with conn.transaction():
                    await conn.copy_records_to_table("hubspot_ids", records=map(_id_values, fresh),
                                                     columns=_ID_COLUMNS)
            except asyncpg.UniqueViolationError:
                pass  # another writer stored one: every row through the upsert
            else:
                rest = known
    if rest:
        await conn.execute(_UPSERT_IDS_SQL, json_rows([_id_values(r) for r in rest]))


async def add_associated(conn: asyncpg.Connection, entries: Sequence[tuple[RecordKey, str]]) -> None:
    """Remember that these records are now associated with these parents (``client:77``)."""
    if not entries:
        return
    await conn.execute(
        "UPDATE hubspot_ids h SET associated = ARRAY(SELECT DISTINCT unnest(h.associated || a.parents)) "
        "FROM (SELECT r->>0 AS connection, r->>1 AS kind, r->>2 AS kleer_id, array_agg(r->>3) AS parents "
        "      FROM jsonb_array_elements($1::jsonb) AS r GROUP BY 1, 2, 3) a "
        "WHERE h.connection = a.connection AND h.kind = a.kind AND h.kleer_id = a.kleer_id",
        json_rows([(*key, parent) for key, parent in entries]),
    )


async def add_waiting(conn: asyncpg.Connection, waiting: Sequence[Waiting]) -> None:
    if not waiting:
        return
    await conn.execute(
        "INSERT INTO pending_associations (connection, from_kind, from_kleer_id, to_kind, to_kleer_id) "
        f"SELECT * FROM {_WAITING} AS r ON CONFLICT DO NOTHING",
        _waiting_rows(waiting),
    )


async def remove_waiting(conn: asyncpg.Connection, resolved: Sequence[Waiting]) -> None:
    if not resolved:
        return
    await conn.execute(
        f"DELETE FROM pending_associations p USING {_WAITING} AS r "
        "WHERE p.connection = r.connection AND p.from_kind = r.from_kind AND p.from_kleer_id = r.from_kleer_id "
        "AND p.to_kind = r.to_kind AND p.to_kleer_id = r.to_kleer_id",
        _waiting_rows(resolved),
    )


async def forget_waiting(conn: asyncpg.Connection, children: Sequence[RecordKey]) -> None:
    """Drop the waiting associations of records that are gone from Kleer."""
    if not children:
        return
    await conn.execute(
        f"DELETE FROM pending_associations p USING {_KEYS} AS r "
        "WHERE p.connection = r.connection AND p.from_kind = r.kind AND p.from_kleer_id = r.kleer_id",
        json_rows(children),
    )


#: Prefix of a pushed fingerprint once HubSpot holds edits an inbound sync brought to Kleer after that push
#: (never equal to a snapshot's): the pusher then writes the record's next Kleer change even when it equals
#: what we pushed before, since HubSpot no longer holds that. Set by ``services.inbound.bookkeeping``.
HUBSPOT_AHEAD_PREFIX = "inbound:"


def record_stream(key: RecordKey) -> str:
    """The log stream of a Kleer record, ``RecordRef("kleer", kind, kleer_id).stream(connection)``, without
    building (and checking) a RecordRef: the pusher asks for thousands a batch, of parts already checked (a
    stream coalesce parsed, or a Kleer record's numeric id)."""
    connection, kind, kleer_id = key
    return stream_of(connection, "kleer", kind, kleer_id)


# The inbound handlers' syncs into Kleer, carrying the HubSpot properties they synced (services/inbound/handlers.py):
# their writes, and the skip of a sync that found Kleer already holding HubSpot's values (only that skip carries
# ``hubspot_properties`` on the Kleer record's stream).
INBOUND_SYNC_TYPES = ("KleerClientUpdated", "KleerProjectUpdated", "KleerClientCreated", "InboundSyncSkipped")
# Those events (``e``) of a record with the properties, spelled as migration 017's partial index
# events_inbound_sync_idx is, literally: the planner uses that index only for a query that implies its predicate.
INBOUND_SYNC_EVENT = "e.type IN ({}) AND e.data ? 'hubspot_properties'".format(
    ", ".join(f"'{t}'" for t in INBOUND_SYNC_TYPES))

def upsert_of_record(e: str) -> str:
    """SQL: upsert event ``e`` wrote the record (a removal flag, which sets ``kleer_deleted`` alone, did not)."""
    return f"({e}.data->'properties' ? 'kleer_id' OR {e}.data ? '{PROPERTIES_FROM}')"


def upserted_properties(e: str) -> str:
    """SQL: the properties upsert event ``e`` left in HubSpot, its own or those of the change event it names
    (one look-up by the unique event id)."""
    return (f"COALESCE({e}.data->'properties', (SELECT c.data->'properties' FROM events c "
            f"WHERE c.event_id = ({e}.data->>'{PROPERTIES_FROM}')::uuid))")


async def properties_of_upsert(conn: Conn, event_id: uuid.UUID) -> dict[str, str] | None:
    """What HubSpot held from us after the upsert recorded as ``event_id`` (None: no such upsert)."""
    found = await conn.fetchval(f"SELECT {upserted_properties('e')} FROM events e WHERE e.event_id = $1", event_id)
    return _texts(_json_object(found))


# Per stream ($1): the properties of the latest upsert, then those of the latest inbound sync after it.
# Each stream read backwards to its latest upsert; a removal flag (no kleer_id) is not a push of the record.
_LAST_PUSHED_SQL = (
    "SELECT s.stream, u.properties, i.props FROM unnest($1::text[]) AS s(stream) "
    f"LEFT JOIN LATERAL (SELECT e.version, {upserted_properties('e')} AS properties FROM events e "
    f"  WHERE e.stream = s.stream AND e.type LIKE 'HubSpot%Upserted' AND {upsert_of_record('e')} "
    "  ORDER BY e.version DESC LIMIT 1) u ON true "
    "LEFT JOIN LATERAL (SELECT e.data->'hubspot_properties' AS props FROM events e WHERE e.stream = s.stream "
    f"  AND e.version > COALESCE(u.version, 0) AND {INBOUND_SYNC_EVENT} "
    "  ORDER BY e.version DESC LIMIT 1) i ON true"
)


async def last_pushed_properties(
    conn: Conn, keys: Sequence[RecordKey]
) -> dict[RecordKey, tuple[dict[str, str] | None, dict[str, str] | None]]:
    """Per record: the properties of its latest ``HubSpot…Upserted`` event (what HubSpot holds from us; None
    when the log has no push yet), and the HubSpot properties of the latest inbound sync
    (``INBOUND_SYNC_TYPES``) recorded after that push (None when there is none).

    The second matters: HubSpot may hold a value someone edited there after our push, which the inbound
    sync brought to Kleer. Compared with the push alone, a Kleer change back to the value we pushed looks
    like no change, and HubSpot would keep the older edit for good.
    """
    if not keys:
        return {}
    streams = {record_stream(key): key for key in keys}
    rows = await conn.fetch(_LAST_PUSHED_SQL, list(streams))
    found: dict[RecordKey, tuple[dict[str, str] | None, dict[str, str] | None]] = {}
    for stream, properties, synced in rows:
        pushed, seen = _json_object(properties), _json_object(synced)
        if pushed is not None or seen is not None:
            found[streams[stream]] = (_texts(pushed), _texts(seen))
    return found


def _texts(values: dict[str, object] | None) -> dict[str, str] | None:
    return None if values is None else {str(k): "" if v is None else str(v) for k, v in values.items()}


def _json_object(value: object) -> dict[str, object] | None:
    decoded = orjson.loads(value) if isinstance(value, str | bytes) else value
    return decoded if isinstance(decoded, dict) else None


@dataclass(frozen=True)
class Ready:
    """A waiting association whose both ends are now in HubSpot."""

    waiting: Waiting
    child_hubspot_id: str
    parent_hubspot_id: str


# Each waiting association looks its two ends up by primary key (a LIMIT keeps each look-up a subquery of
# its own). As plain joins, the planner's pick depended on estimates that lag behind tables growing during a
# full sync: with two pushers (children waiting for parents the other one pushes) it chose a nested loop that
# walked all of hubspot_ids for every waiting row, 1.4 s a sweep and 44 of the server's 52 s during the push
# (bench_outbound --scale 0.5 --pushers 2). This shape costs two index look-ups per waiting row, whatever the
# statistics say (3,000 waiting of 144,655 ids: 14 ms, against 257 ms for the best join plan).
_READY_WAITING_SQL = (
    "SELECT p.connection, p.from_kind, p.from_kleer_id, p.to_kind, p.to_kleer_id, c.hubspot_id, t.hubspot_id "
    "FROM pending_associations p "
    "JOIN LATERAL (SELECT h.hubspot_id FROM hubspot_ids h WHERE h.connection = p.connection "
    "  AND h.kind = p.to_kind AND h.kleer_id = p.to_kleer_id AND NOT h.removed LIMIT 1) t ON true "
    "JOIN LATERAL (SELECT h.hubspot_id FROM hubspot_ids h WHERE h.connection = p.connection "
    "  AND h.kind = p.from_kind AND h.kleer_id = p.from_kleer_id AND NOT h.removed LIMIT 1) c ON true "
    "ORDER BY p.created_at LIMIT $1"
)


async def ready_waiting(conn: Conn, limit: int = 10_000) -> list[Ready]:
    """Waiting associations whose parent (and child) now have HubSpot ids."""
    rows = await conn.fetch(_READY_WAITING_SQL, limit)
    return [Ready(Waiting(r[0], r[1], r[2], ParentRef(r[3], r[4])), r[5], r[6]) for r in rows]


async def waiting_for(conn: Conn, parents: Iterable[RecordKey]) -> list[Waiting]:
    """Associations waiting for any of these parents."""
    parents = list(dict.fromkeys(parents))
    if not parents:
        return []
    rows = await conn.fetch(
        "SELECT p.connection, p.from_kind, p.from_kleer_id, p.to_kind, p.to_kleer_id FROM pending_associations p "
        f"JOIN {_KEYS} AS k ON p.connection = k.connection AND p.to_kind = k.kind AND p.to_kleer_id = k.kleer_id",
        json_rows(parents),
    )
    return [Waiting(r[0], r[1], r[2], ParentRef(r[3], r[4])) for r in rows]
