"""The own-write log: what we last wrote to HubSpot, so our echoes are never synced back.

The pusher (and the workflow actions) call ``record_own_writes`` in the same
transaction that records the upsert; the inbound handlers call ``echoes`` to
drop webhook events whose value is one we wrote ourselves, even when the
webhook's ``changeSource``/``sourceId`` do not say so.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import timedelta

import asyncpg
import orjson

ECHO_WINDOW = timedelta(days=3)  # HubSpot retries webhooks for about a day; keep margin


async def record_own_writes(
    conn: asyncpg.Connection,
    connection: str,
    object_type: str,
    writes: Iterable[tuple[str, Mapping[str, str]]],
) -> None:
    """Remember ``(hubspot_id, {property: value})`` pairs we just wrote (a later pair for the same property wins).

    One row per record (migration 015): ``{property: [value, unix seconds]}``, merged into what the record
    already has, so each property keeps the time of its own last write. One set-based statement for the
    whole batch (thousands of records per pusher batch). The time is this process's clock: seconds of skew
    between pods are nothing against ``ECHO_WINDOW``.
    """
    now = int(time.time())
    by_record: dict[str, dict[str, tuple[str, int]]] = {}
    for object_id, properties in writes:
        if properties:
            # Values are strings (HubSpot's); a tuple is JSON's array, and cheaper to build than a list.
            logged = {prop: ("" if value is None else value, now) for prop, value in properties.items()}
            key = str(object_id)
            if key in by_record:  # a later pair for the same property wins
                by_record[key].update(logged)
            else:
                by_record[key] = logged
    if not by_record:
        return
    # One JSON document of [object_id, properties] pairs: no Python-side check per array element (asyncpg's).
    # (Pairing values with the time in SQL instead, jsonb_object_agg over jsonb_each, cost the server twice
    # what it saved the pusher.)
    await conn.execute(
        "INSERT INTO own_write_records AS w (connection, object_type, object_id, properties) "
        "SELECT $1, $2, r->>0, r->1 FROM jsonb_array_elements($3::jsonb) AS r "
        "ON CONFLICT (connection, object_type, object_id) DO UPDATE SET properties = w.properties || EXCLUDED.properties",
        connection,
        object_type,
        # By record: the order every writer locks these rows in (the pusher's batches, the inbound handlers).
        orjson.dumps(sorted(by_record.items())).decode(),
    )


async def echoes(
    conn: asyncpg.Connection | asyncpg.Pool,
    connection: str,
    object_type: str,
    changes: Iterable[tuple[str, str, str | None]],
) -> set[tuple[str, str]]:
    """Of ``(hubspot_id, property, value)`` changes, the ``(hubspot_id, property)`` that echo our own write
    (the value we last wrote to that property, within ``ECHO_WINDOW`` of writing it)."""
    items = list(changes)
    if not items:
        return set()
    rows = await conn.fetch(
        "SELECT c.object_id, c.property FROM unnest($3::text[], $4::text[], $5::text[]) AS c(object_id, property, value) "
        "JOIN own_write_records w ON w.connection = $1 AND w.object_type = $2 AND w.object_id = c.object_id "
        "WHERE w.properties -> c.property ->> 0 = COALESCE(c.value, '') "
        "AND (w.properties -> c.property ->> 1)::bigint > $6::bigint",
        connection,
        object_type,
        [i[0] for i in items],
        [i[1] for i in items],
        [i[2] for i in items],
        int(time.time() - ECHO_WINDOW.total_seconds()),
    )
    return {(r["object_id"], r["property"]) for r in rows}
