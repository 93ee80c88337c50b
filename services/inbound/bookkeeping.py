"""The inbound handlers' tables: links, create intents, conflicts, and the outbound fingerprints.

The outbound poller owns ``outbound_fingerprints`` (``services.outbound.fingerprints``);
after a write to Kleer the handlers store the record's new fingerprint there
with its ``save`` so the next poll sees no change. Reads of single records go
straight to that table (its ``load`` reads a whole object type).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import asyncpg
import orjson

from libs.observability.logging import get_logger

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


async def creation_intent(pool: Conn, connection: str, hubspot_object: str, hubspot_id: str) -> tuple[bool, str | None]:
    """(an intent exists, the Kleer id it finished with)."""
    row = await pool.fetchrow(
        "SELECT kleer_id FROM inbound_creations WHERE connection = $1 AND hubspot_object = $2 AND hubspot_id = $3",
        connection,
        hubspot_object,
        hubspot_id,
    )
    return (row is not None, row[0] if row else None)


async def begin_creation(pool: Conn, connection: str, hubspot_object: str, hubspot_id: str, foreign_id: str) -> None:
    await pool.execute(
        "INSERT INTO inbound_creations (connection, hubspot_object, hubspot_id, foreign_id) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT DO NOTHING",
        connection,
        hubspot_object,
        hubspot_id,
        foreign_id,
    )


async def created(pool: Conn, connection: str, hubspot_object: str, hubspot_id: str, kleer_id: str) -> None:
    await pool.execute(
        "UPDATE inbound_creations SET kleer_id = $4, finished_at = now() "
        "WHERE connection = $1 AND hubspot_object = $2 AND hubspot_id = $3",
        connection,
        hubspot_object,
        hubspot_id,
        kleer_id,
    )


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
