"""The poller's memory: the fingerprint of every Kleer record it has seen (table ``outbound_fingerprints``).

Loaded in one query per poll and written in set-based statements (``unnest``
arrays), so a no-change poll of 100,000 records costs one read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

UNMAPPABLE = ""  # fingerprint of a record that could not be mapped (it waits in the DLQ)


@dataclass(frozen=True, slots=True)
class Seen:
    """What the poller remembers of one record."""

    fingerprint: str
    source_hash: str
    record_date: dt.date | None


@dataclass(frozen=True, slots=True)
class FingerprintRow:
    kleer_id: str
    fingerprint: str
    source_hash: str
    record_date: dt.date | None


async def load(conn: asyncpg.Connection | asyncpg.Pool, connection: str, kind: str) -> dict[str, Seen]:
    rows = await conn.fetch(
        "SELECT kleer_id, fingerprint, source_hash, record_date FROM outbound_fingerprints "
        "WHERE connection = $1 AND kind = $2",
        connection,
        kind,
    )
    return {r[0]: Seen(r[1], r[2], r[3]) for r in rows}


async def save(conn: asyncpg.Connection, connection: str, kind: str, rows: Sequence[FingerprintRow]) -> None:
    if not rows:
        return
    await conn.execute(
        "INSERT INTO outbound_fingerprints (connection, kind, kleer_id, fingerprint, source_hash, record_date) "
        "SELECT $1, $2, r.kleer_id, r.fingerprint, r.source_hash, r.record_date "
        "FROM unnest($3::text[], $4::text[], $5::text[], $6::date[]) AS r(kleer_id, fingerprint, source_hash, record_date) "
        "ON CONFLICT (connection, kind, kleer_id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
        "source_hash = EXCLUDED.source_hash, record_date = EXCLUDED.record_date, updated_at = now()",
        connection,
        kind,
        [r.kleer_id for r in rows],
        [r.fingerprint for r in rows],
        [r.source_hash for r in rows],
        [r.record_date for r in rows],
    )


async def forget(conn: asyncpg.Connection, connection: str, kind: str, kleer_ids: Sequence[str]) -> None:
    if kleer_ids:
        await conn.execute(
            "DELETE FROM outbound_fingerprints WHERE connection = $1 AND kind = $2 AND kleer_id = ANY($3::text[])",
            connection,
            kind,
            list(kleer_ids),
        )
