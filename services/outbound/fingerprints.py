"""The poller's memory: the fingerprint of every Kleer record it has seen (table ``outbound_fingerprints``).

Loaded in one query per poll and written in set-based statements (``unnest``
arrays), so a no-change poll of 100,000 records costs one read.

Others write this table while a poll runs: a workflow action's push-back and
the inbound handlers store the fingerprint of what they just wrote to Kleer,
or forget line items that are gone. The poller therefore writes only rows that
are still as it loaded them (``save_unmoved``, ``forget_unmoved``): each
``Seen`` carries the row's version (Postgres ``xmin``, the id of the
transaction that wrote that row version, so a row rewritten with the same
values still counts as moved), and a row that moved since the load is left to
the next poll, which reads a newer Kleer list.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import asyncpg

from libs.mapping.objects import INVOICE

UNMAPPABLE = ""  # fingerprint of a record that could not be mapped (it waits in the DLQ)


@dataclass(frozen=True, slots=True)
class Seen:
    """What the poller remembers of one record."""

    fingerprint: str
    source_hash: str
    record_date: dt.date | None
    version: str = ""  # the row version it was loaded at ('' matches no row: nothing is written)


@dataclass(frozen=True, slots=True)
class FingerprintRow:
    kleer_id: str
    fingerprint: str
    source_hash: str
    record_date: dt.date | None


async def load(conn: asyncpg.Connection | asyncpg.Pool, connection: str, kind: str) -> dict[str, Seen]:
    rows = await conn.fetch(
        "SELECT kleer_id, fingerprint, source_hash, record_date, xmin::text FROM outbound_fingerprints "
        "WHERE connection = $1 AND kind = $2",
        connection,
        kind,
    )
    return {r[0]: Seen(r[1], r[2], r[3], r[4]) for r in rows}


def record_date(kind: str, record: Mapping[str, Any]) -> dt.date | None:
    """The date a fingerprint row keeps for the history window: an invoice's ``invoice-date`` (its rows
    pass ``kind`` invoice too); None for other kinds and for a missing or malformed date."""
    value = record.get("invoice-date") if kind == INVOICE else None
    if not isinstance(value, str):
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None


def in_key_order(rows: Sequence[FingerprintRow]) -> list[FingerprintRow]:
    """The rows by Kleer id: the order every writer of these rows locks them in (the poller, the inbound
    handlers), so that two commits holding the same records wait for each other rather than deadlock."""
    return sorted(rows, key=attrgetter("kleer_id"))


def _columns(rows: Sequence[FingerprintRow]) -> tuple[list[str], list[str], list[str], list[dt.date | None]]:
    """The rows as the column arrays the set-based statements unnest."""
    return (
        [r.kleer_id for r in rows],
        [r.fingerprint for r in rows],
        [r.source_hash for r in rows],
        [r.record_date for r in rows],
    )


async def save(conn: asyncpg.Connection, connection: str, kind: str, rows: Sequence[FingerprintRow]) -> None:
    """Store these fingerprints whatever the table holds (a writer that has just written Kleer itself)."""
    if not rows:
        return
    rows = in_key_order(rows)
    await conn.execute(
        "INSERT INTO outbound_fingerprints (connection, kind, kleer_id, fingerprint, source_hash, record_date) "
        "SELECT $1, $2, r.kleer_id, r.fingerprint, r.source_hash, r.record_date "
        "FROM unnest($3::text[], $4::text[], $5::text[], $6::date[]) AS r(kleer_id, fingerprint, source_hash, record_date) "
        "ON CONFLICT (connection, kind, kleer_id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
        "source_hash = EXCLUDED.source_hash, record_date = EXCLUDED.record_date, updated_at = now()",
        connection,
        kind,
        *_columns(rows),
    )


async def forget(conn: asyncpg.Connection, connection: str, kind: str, kleer_ids: Sequence[str]) -> None:
    if kleer_ids:
        await conn.execute(
            "DELETE FROM outbound_fingerprints WHERE connection = $1 AND kind = $2 AND kleer_id = ANY($3::text[])",
            connection,
            kind,
            list(kleer_ids),
        )


async def save_unmoved(
    conn: asyncpg.Connection,
    connection: str,
    kind: str,
    rows: Sequence[FingerprintRow],
    loaded: Mapping[str, Seen],
) -> set[str]:
    """Store the rows that are still as in ``loaded`` (absent there: still absent); returns the ids stored.

    A row another writer stored or forgot since ``loaded`` was read is left alone: it
    describes a newer Kleer state than a list read after ``loaded``.
    """
    if not rows:
        return set()
    rows = in_key_order(rows)
    # A concurrent writer's uncommitted row is waited for, then compared (READ COMMITTED re-check).
    stored = await conn.fetch(
        "WITH r AS (SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::date[], $7::text[]) "
        "  AS r(kleer_id, fingerprint, source_hash, record_date, version)), "
        "updated AS (UPDATE outbound_fingerprints f SET fingerprint = r.fingerprint, source_hash = r.source_hash, "
        "  record_date = r.record_date, updated_at = now() FROM r "
        "  WHERE r.version IS NOT NULL AND f.connection = $1 AND f.kind = $2 AND f.kleer_id = r.kleer_id "
        "  AND f.xmin::text = r.version RETURNING f.kleer_id), "
        "inserted AS (INSERT INTO outbound_fingerprints "
        "  (connection, kind, kleer_id, fingerprint, source_hash, record_date) "
        "  SELECT $1, $2, r.kleer_id, r.fingerprint, r.source_hash, r.record_date FROM r WHERE r.version IS NULL "
        "  ON CONFLICT (connection, kind, kleer_id) DO NOTHING RETURNING kleer_id) "
        "SELECT kleer_id FROM updated UNION ALL SELECT kleer_id FROM inserted",
        connection,
        kind,
        *_columns(rows),
        [seen.version if (seen := loaded.get(r.kleer_id)) is not None else None for r in rows],
    )
    return {r[0] for r in stored}


async def forget_unmoved(
    conn: asyncpg.Connection, connection: str, kind: str, kleer_ids: Sequence[str], loaded: Mapping[str, Seen]
) -> set[str]:
    """Delete the rows of these ids that are still as in ``loaded``; returns the ids deleted."""
    known = [i for i in kleer_ids if i in loaded]
    if not known:
        return set()
    deleted = await conn.fetch(
        "DELETE FROM outbound_fingerprints f USING unnest($3::text[], $4::text[]) AS r(kleer_id, version) "
        "WHERE f.connection = $1 AND f.kind = $2 AND f.kleer_id = r.kleer_id AND f.xmin::text = r.version "
        "RETURNING f.kleer_id",
        connection,
        kind,
        known,
        [loaded[i].version for i in known],
    )
    return {r[0] for r in deleted}
