"""The dead-letter queue: what could not be applied, with the reason, until redriven or discarded.

Nothing is dropped: a record that fails permanently (a HubSpot validation
error, a Kleer rejection, a handler that keeps crashing) is parked here with
its payload and the log position of its cause, and a ``DeadLettered`` event is
appended to the record's own stream so the audit timeline shows it. Redrive
runs the entry again through the normal path (a ``Redriver`` registered per
source) and records the outcome as an event.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from libs.events.envelope import NewEvent, RecordedEvent
from libs.events.store import AppendRequest, PostgresEventStore
from libs.observability import metrics
from libs.records import RecordRef

DEAD_LETTERED = "DeadLettered"
DEAD_LETTER_REDRIVEN = "DeadLetterRedriven"
DEAD_LETTER_REDRIVE_FAILED = "DeadLetterRedriveFailed"
DEAD_LETTER_DISCARDED = "DeadLetterDiscarded"


@dataclass(frozen=True)
class DeadLetter:
    id: int
    source: str
    connection: str
    record: str
    event_position: int | None
    event_id: uuid.UUID | None
    reason: str
    detail: dict[str, Any]
    payload: dict[str, Any]
    attempts: int
    status: str
    created_at: datetime
    updated_at: datetime

    @property
    def stream(self) -> str:
        try:
            return RecordRef.parse(self.record).stream(self.connection)
        except ValueError:
            return f"{self.connection}/sync-deadletter/{self.id}"


Redriver = Callable[[DeadLetter], Awaitable[None]]
"""Re-applies one entry through the normal path; raises to say it still fails."""


def _row(row: asyncpg.Record) -> DeadLetter:
    return DeadLetter(
        id=row["id"],
        source=row["source"],
        connection=row["connection"],
        record=row["record"],
        event_position=row["event_position"],
        event_id=row["event_id"],
        reason=row["reason"],
        detail=orjson.loads(row["detail"]),
        payload=orjson.loads(row["payload"]),
        attempts=row["attempts"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _record_of(stream: str) -> tuple[str, str]:
    try:
        connection, ref = RecordRef.from_stream(stream)
        return connection, str(ref)
    except ValueError:
        return stream.split("/", 1)[0], stream


class DeadLetterQueue:
    def __init__(self, store: PostgresEventStore) -> None:
        self.store = store
        self.pool: asyncpg.Pool = store.pool

    async def park(
        self,
        conn: asyncpg.Connection,
        *,
        source: str,
        connection: str,
        record: str,
        reason: str,
        detail: Mapping[str, Any] | None = None,
        payload: Mapping[str, Any] | None = None,
        cause: RecordedEvent | None = None,
    ) -> int:
        """Park one entry inside the caller's transaction; returns its id.

        An entry already open for the same source, record and cause is updated
        (attempts + 1) instead of duplicated.
        """
        existing = await conn.fetchval(
            "SELECT id FROM dead_letters WHERE status = 'open' AND source = $1 AND record = $2 "
            "AND event_id IS NOT DISTINCT FROM $3",
            source,
            record,
            cause.event_id if cause else None,
        )
        if existing is not None:
            await conn.execute(
                "UPDATE dead_letters SET attempts = attempts + 1, reason = $2, detail = $3::jsonb, "
                "payload = $4::jsonb, updated_at = now() WHERE id = $1",
                existing,
                reason,
                orjson.dumps(dict(detail or {})).decode(),
                orjson.dumps(dict(payload or {})).decode(),
            )
            return int(existing)
        entry_id = await conn.fetchval(
            "INSERT INTO dead_letters (source, connection, record, event_position, event_id, reason, detail, payload) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb) RETURNING id",
            source,
            connection,
            record,
            cause.position if cause else None,
            cause.event_id if cause else None,
            reason,
            orjson.dumps(dict(detail or {})).decode(),
            orjson.dumps(dict(payload or {})).decode(),
        )
        event = NewEvent(
            DEAD_LETTERED,
            {"dead_letter_id": entry_id, "source": source, "reason": reason, "detail": dict(detail or {})},
            {"actor": source},
        )
        if cause is not None:
            event = event.caused_by(cause)
        stream = _stream_for(connection, record, entry_id)
        await self.store.append_batch([AppendRequest(stream, [event])], conn=conn)
        metrics.DEAD_LETTERED.labels(source=source).inc()
        return int(entry_id)

    async def park_event(
        self, conn: asyncpg.Connection, *, source: str, event: RecordedEvent, reason: str
    ) -> int:
        """Park a whole log event that could not be handled."""
        connection, record = _record_of(event.stream)
        return await self.park(
            conn,
            source=source,
            connection=connection,
            record=record,
            reason=reason,
            payload={"type": event.type, "data": event.data},
            cause=event,
        )

    async def list(
        self,
        *,
        status: str | None = "open",
        source: str | None = None,
        record: str | None = None,
        connection: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[DeadLetter]:
        clauses: list[str] = []
        args: list[object] = []
        for column, value in (
            ("status", status),
            ("source", source),
            ("record", record),
            ("connection", connection),
        ):
            if value is not None:
                args.append(value)
                clauses.append(f"{column} = ${len(args)}")
        if before_id is not None:
            args.append(before_id)
            clauses.append(f"id < ${len(args)}")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT * FROM dead_letters {where} ORDER BY id DESC LIMIT {int(limit)}", *args
            )
        return [_row(r) for r in rows]

    async def get(self, entry_id: int) -> DeadLetter | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM dead_letters WHERE id = $1", entry_id)
        return _row(row) if row else None

    async def count_open(self) -> dict[str, int]:
        """Open entries per source; also sets the ``kleer_sync_dead_letters`` gauge (see ``refresh_gauge``)."""
        return await refresh_gauge(self.pool)

    async def discard(self, entry_id: int, actor: str, why: str = "") -> DeadLetter:
        return await self._resolve(entry_id, "discarded", DEAD_LETTER_DISCARDED, {"actor": actor, "why": why})

    async def redrive(self, entry_id: int, redrivers: Mapping[str, Redriver], actor: str) -> DeadLetter:
        """Run the entry again through its source's normal path; record the outcome either way."""
        entry = await self.get(entry_id)
        if entry is None:
            raise LookupError(f"no dead letter {entry_id}")
        if entry.status != "open":
            raise ValueError(f"dead letter {entry_id} is {entry.status}, not open")
        redriver = redrivers.get(entry.source)
        if redriver is None:
            raise LookupError(
                f"no redrive path for source {entry.source!r}; known: {', '.join(sorted(redrivers))}"
            )
        try:
            await redriver(entry)
        except Exception as exc:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "UPDATE dead_letters SET attempts = attempts + 1, reason = $2, updated_at = now() WHERE id = $1",
                    entry_id,
                    f"redrive failed: {exc}",
                )
                await self.store.append_batch(
                    [
                        AppendRequest(
                            entry.stream,
                            [
                                NewEvent(
                                    DEAD_LETTER_REDRIVE_FAILED,
                                    {"dead_letter_id": entry_id, "error": str(exc)},
                                    {"actor": actor},
                                )
                            ],
                        )
                    ],
                    conn=conn,
                )
            raise
        return await self._resolve(entry_id, "redriven", DEAD_LETTER_REDRIVEN, {"actor": actor})

    async def _resolve(self, entry_id: int, status: str, event_type: str, info: dict[str, Any]) -> DeadLetter:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE dead_letters SET status = $2, resolved_at = now(), updated_at = now() "
                "WHERE id = $1 AND status = 'open' RETURNING *",
                entry_id,
                status,
            )
            if row is None:
                raise LookupError(f"dead letter {entry_id} is not open")
            entry = _row(row)
            await self.store.append_batch(
                [
                    AppendRequest(
                        entry.stream,
                        [
                            NewEvent(
                                event_type,
                                {"dead_letter_id": entry_id, **info},
                                {"actor": str(info.get("actor"))},
                            )
                        ],
                    )
                ],
                conn=conn,
            )
        await self.count_open()
        return entry


#: Sources the gauge shows from the start (0 when nothing is parked), so an alert sees the series before
#: the first dead letter and after the last one is resolved.
KNOWN_SOURCES = ("outbound-pusher", "outbound-poller", "inbound-handlers")
_gauge_sources: set[str] = set(KNOWN_SOURCES)


async def refresh_gauge(pool: asyncpg.Pool, timeout: float | None = None) -> dict[str, int]:
    """Set ``kleer_sync_dead_letters{source}`` to the open entries in the database, for every source.

    The queue is shared by every process, so each process exports the same database-wide number (dashboards
    and alerts take ``max`` over pods). A source whose last entry was resolved goes back to 0 instead of
    keeping its old value. Called at each scrape of ``/metrics`` (``HealthServer``) and after a resolution.
    """
    async with pool.acquire(timeout=timeout) as conn:
        rows = await conn.fetch(
            "SELECT source, count(*) AS n FROM dead_letters WHERE status = 'open' GROUP BY source",
            timeout=timeout,
        )
    counts = {r["source"]: int(r["n"]) for r in rows}
    _gauge_sources.update(counts)
    for source in _gauge_sources:
        metrics.DEAD_LETTERS.labels(source=source).set(counts.get(source, 0))
    return counts


def _stream_for(connection: str, record: str, entry_id: int) -> str:
    try:
        return RecordRef.parse(record).stream(connection)
    except ValueError:
        return f"{connection}/sync-deadletter/{entry_id}"
