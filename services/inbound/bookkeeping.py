"""The inbound handlers' tables: links, conflicts, the outbound fingerprints, and
what the event log says of a record's last sync.

The outbound poller owns ``outbound_fingerprints`` (``services.outbound.fingerprints``);
after a write to Kleer the handlers store the record's new fingerprint there
with its ``save`` so the next poll sees no change. Reads of single records go
straight to that table (its ``load`` reads a whole object type).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from libs.observability.logging import get_logger
from services.inbound.kleer_write import SyncBase
from services.outbound.idmap import HUBSPOT_AHEAD_PREFIX, upsert_of_record, upserted_properties

log = get_logger(__name__)

Conn = Any  # an asyncpg Connection or Pool


async def stored_fingerprints(conn: Conn, connection: str, kleer_type: str, kleer_ids: Collection[str]) -> dict[str, str]:
    """The poller's fingerprints of these Kleer records (absent: never polled)."""
    if not kleer_ids:
        return {}
    try:
        rows = await conn.fetch(
            "SELECT kleer_id, fingerprint FROM outbound_fingerprints "
            "WHERE connection = $1 AND kind = $2 AND kleer_id = ANY($3::text[])",
            connection,
            kleer_type,
            list(kleer_ids),
        )
    except asyncpg.UndefinedTableError:
        return {}
    return {r[0]: r[1] for r in rows}


async def save_fingerprint(conn: asyncpg.Connection, connection: str, kleer_type: str, kleer_id: str, value: str) -> None:
    """Store a record's fingerprint through the outbound poller's own function."""
    from services.outbound.fingerprints import FingerprintRow, save

    # source_hash '' makes the poller map the record once more; the fingerprint then matches.
    await save(conn, connection, kleer_type, [FingerprintRow(kleer_id, value, "", None)])


async def save_fingerprint_if(
    conn: asyncpg.Connection, connection: str, kleer_type: str, kleer_id: str, value: str, *, expected: str | None
) -> bool:
    """``save_fingerprint``, only if the stored one is still ``expected`` (read before Kleer was; None: none).

    A poll that recorded a change meanwhile keeps its fingerprint, so the next poll compares Kleer's
    record with what the poller last saw and records it again if it differs. Returns whether it stored.
    """
    stored = await conn.fetchval(
        "SELECT fingerprint FROM outbound_fingerprints WHERE connection = $1 AND kind = $2 AND kleer_id = $3 "
        "FOR UPDATE",
        connection,
        kleer_type,
        kleer_id,
    )
    if stored != expected:
        log.info("a poll stored a fingerprint meanwhile; left to the poller", kleer_type=kleer_type, kleer_id=kleer_id)
        return False
    await save_fingerprint(conn, connection, kleer_type, kleer_id, value)
    return True


async def database_now(conn: Conn) -> dt.datetime:
    """The database's clock (events' ``recorded_at`` is on it)."""
    value = await conn.fetchval("SELECT clock_timestamp()")
    assert isinstance(value, dt.datetime)
    return value


async def last_syncs(
    conn: Conn,
    streams: Sequence[str],
    *,
    upserted: str,
    inbound_types: Sequence[str],
    removed_types: Sequence[str],
    change_types: Sequence[str],
    before: dt.datetime,
) -> dict[str, SyncBase]:
    """Per Kleer record stream, what the log says of its last sync (one query; each stream read backwards).

    - base: the properties of the latest pusher upsert (``upserted`` with a ``kleer_id``: not a removal
      flag) or inbound write (``inbound_types`` carrying ``hubspot_properties``) recorded before
      ``before`` (when HubSpot was read: a later upsert may not be in what was read);
    - the fingerprint of the latest upsert, and of the latest change (``change_types``) recorded after
      the latest upsert or removal (``removed_types``): it still waits for the pusher.
    """
    if not streams:
        return {}
    rows = await conn.fetch(
        "SELECT s.stream, b.type AS base_type, b.data AS base_data, b.properties AS base_properties, "
        "u.position AS pushed_position, u.data->>'fingerprint' AS pushed_fingerprint, "
        "c.position AS change_position, c.data->>'fingerprint' AS change_fingerprint "
        "FROM unnest($1::text[]) AS s(stream) "
        "LEFT JOIN LATERAL (SELECT e.type, e.data, CASE WHEN e.type = $3 THEN "
        f"  {upserted_properties('e')} END AS properties FROM events e WHERE e.stream = s.stream "
        f"  AND e.recorded_at < $2 AND ((e.type = $3 AND {upsert_of_record('e')}) "
        "       OR (e.type = ANY($4::text[]) AND e.data ? 'hubspot_properties')) "
        "  ORDER BY e.version DESC LIMIT 1) b ON true "
        "LEFT JOIN LATERAL (SELECT e.position, e.data FROM events e WHERE e.stream = s.stream "
        "  AND e.type = ANY($5::text[]) ORDER BY e.version DESC LIMIT 1) u ON true "
        "LEFT JOIN LATERAL (SELECT e.position, e.data FROM events e WHERE e.stream = s.stream "
        "  AND e.type = ANY($6::text[]) ORDER BY e.version DESC LIMIT 1) c ON true",
        list(streams),
        before,
        upserted,
        list(inbound_types),
        [upserted, *removed_types],
        list(change_types),
    )
    found: dict[str, SyncBase] = {}
    for row in rows:
        data = _json(row["base_data"])
        upsert = row["base_type"] == upserted
        properties = (_json(row["base_properties"]) or None) if upsert else data.get("hubspot_properties")
        changed: list[Any] = [] if upsert else list(data.get("changed_properties") or [])
        pending = row["change_fingerprint"] if (row["change_position"] or 0) > (row["pushed_position"] or 0) else None
        found[row["stream"]] = SyncBase(
            properties=dict(properties) if isinstance(properties, Mapping) else None,
            changed=tuple(str(p) for p in changed if isinstance(p, str)),
            pushed_fingerprint=row["pushed_fingerprint"],
            pending_fingerprint=pending,
        )
    return found


def _json(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str | bytes):
        value = orjson.loads(value)
    return value if isinstance(value, dict) else {}


async def mark_hubspot_ahead(conn: asyncpg.Connection, connection: str, kleer_type: str, kleer_id: str) -> None:
    """Record that HubSpot holds values of this record we did not push (an inbound sync just wrote them)."""
    await conn.execute(
        "UPDATE hubspot_ids SET pushed_fingerprint = $4 || pushed_fingerprint, updated_at = now() "
        "WHERE connection = $1 AND kind = $2 AND kleer_id = $3 AND pushed_fingerprint IS NOT NULL "
        "AND pushed_fingerprint NOT LIKE $4 || '%'",
        connection,
        kleer_type,
        kleer_id,
        HUBSPOT_AHEAD_PREFIX,
    )


async def upsert_link(
    conn: asyncpg.Connection,
    connection: str,
    hubspot_object: str,
    hubspot_id: str,
    kleer_type: str,
    kleer_id: str,
    status: str = "linked",
) -> None:
    await conn.execute(
        "INSERT INTO inbound_links (connection, hubspot_object, hubspot_id, kleer_type, kleer_id, status) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (connection, hubspot_object, hubspot_id) DO UPDATE "
        "SET kleer_type = EXCLUDED.kleer_type, kleer_id = EXCLUDED.kleer_id, status = EXCLUDED.status, "
        "updated_at = now()",
        connection,
        hubspot_object,
        hubspot_id,
        kleer_type,
        kleer_id,
        status,
    )


async def set_link_status(
    conn: asyncpg.Connection, connection: str, hubspot_object: str, hubspot_ids: Collection[str], status: str
) -> None:
    await conn.execute(
        "UPDATE inbound_links SET status = $4, updated_at = now() "
        "WHERE connection = $1 AND hubspot_object = $2 AND hubspot_id = ANY($3::text[])",
        connection,
        hubspot_object,
        list(hubspot_ids),
        status,
    )


async def known_links(conn: Conn, connection: str, hubspot_object: str, hubspot_ids: Collection[str]) -> dict[str, str]:
    """HubSpot id -> Kleer id for linked records, from our links and the pusher's id map."""
    ids = list(hubspot_ids)
    if not ids:
        return {}
    found: dict[str, str] = {}
    try:
        rows = await conn.fetch(
            "SELECT hubspot_id, kleer_id FROM hubspot_ids WHERE connection = $1 AND hubspot_object = $2 "
            "AND hubspot_id = ANY($3::text[]) AND NOT removed",
            connection,
            hubspot_object,
            ids,
        )
        found.update({r[0]: r[1] for r in rows})
    except asyncpg.UndefinedTableError:
        pass
    rows = await conn.fetch(
        "SELECT hubspot_id, kleer_id FROM inbound_links WHERE connection = $1 AND hubspot_object = $2 "
        "AND hubspot_id = ANY($3::text[]) AND status = 'linked'",
        connection,
        hubspot_object,
        ids,
    )
    found.update({r[0]: r[1] for r in rows})
    return found


async def record_conflict(
    conn: asyncpg.Connection,
    *,
    connection: str,
    kleer_type: str,
    kleer_id: str,
    hubspot_object: str,
    hubspot_id: str,
    policy: str,
    winner: str,
    hubspot_values: Mapping[str, Any],
    kleer_values: Mapping[str, Any],
    event_id: Any,
) -> None:
    await conn.execute(
        "INSERT INTO sync_conflicts (connection, kleer_type, kleer_id, hubspot_object, hubspot_id, policy, winner, "
        "hubspot_values, kleer_values, event_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10)",
        connection,
        kleer_type,
        kleer_id,
        hubspot_object,
        hubspot_id,
        policy,
        winner,
        orjson.dumps(dict(hubspot_values)).decode(),
        orjson.dumps(dict(kleer_values)).decode(),
        event_id,
    )
