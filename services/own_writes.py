"""The own-write log: what we last wrote to HubSpot, so our echoes are never synced back.

The pusher (and the workflow actions) call ``record_own_writes`` in the same
transaction that records the upsert; the inbound handlers call ``echoes`` to
drop webhook events whose value is one we wrote ourselves, even when the
webhook's ``changeSource``/``sourceId`` do not say so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta

import asyncpg

ECHO_WINDOW = timedelta(days=3)  # HubSpot retries webhooks for about a day; keep margin


async def record_own_writes(
    conn: asyncpg.Connection,
    connection: str,
    object_type: str,
    writes: Iterable[tuple[str, Mapping[str, str]]],
) -> None:
    """Remember ``(hubspot_id, {property: value})`` pairs we just wrote (a later pair for the same property wins).

    One set-based statement for the whole batch (tens of thousands of rows per pusher batch).
    """
    latest: dict[tuple[str, str], str] = {}
    for object_id, properties in writes:
        for prop, value in properties.items():
            latest[(str(object_id), prop)] = "" if value is None else str(value)
    if not latest:
        return
    await conn.execute(
        "INSERT INTO own_writes (connection, object_type, object_id, property, value) "
        "SELECT $1, $2, w.object_id, w.property, w.value "
        "FROM unnest($3::text[], $4::text[], $5::text[]) AS w(object_id, property, value) "
        "ON CONFLICT (connection, object_type, object_id, property) "
        "DO UPDATE SET value = EXCLUDED.value, written_at = now()",
        connection,
        object_type,
        [key[0] for key in latest],
        [key[1] for key in latest],
        list(latest.values()),
    )


async def echoes(
    conn: asyncpg.Connection | asyncpg.Pool,
    connection: str,
    object_type: str,
    changes: Iterable[tuple[str, str, str | None]],
) -> set[tuple[str, str]]:
    """Of ``(hubspot_id, property, value)`` changes, the ``(hubspot_id, property)`` that echo our own write."""
    items = list(changes)
    if not items:
        return set()
    rows = await conn.fetch(
        "SELECT c.object_id, c.property FROM unnest($3::text[], $4::text[], $5::text[]) AS c(object_id, property, value) "
        "JOIN own_writes w ON w.connection = $1 AND w.object_type = $2 AND w.object_id = c.object_id "
        "AND w.property = c.property AND w.value = COALESCE(c.value, '') AND w.written_at > now() - $6::interval",
        connection,
        object_type,
        [i[0] for i in items],
        [i[1] for i in items],
        [i[2] for i in items],
        ECHO_WINDOW,
    )
    return {(r["object_id"], r["property"]) for r in rows}
