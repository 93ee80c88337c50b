"""The ``workflow_actions`` table (migration 005): one row per callbackId, claimed atomically.

Guarantees:

- ``claim`` inserts the row with ``INSERT ... ON CONFLICT DO NOTHING`` in the
  same transaction as the ``WorkflowActionReceived`` event: of any number of
  concurrent deliveries of one callbackId exactly one gets ``new=True`` and
  does the work; the others read the row.
- A Kleer create is bracketed by ``mark_pending`` (committed before the
  request is sent) and ``set_kleer`` (committed as soon as Kleer answers).
  ``mark_pending`` fails with ``CreateInFlight`` while another call creates
  the same kind of record for the same HubSpot object (a partial unique index),
  so two workflows enrolled at once cannot both create an invoice for a deal.
- ``finish`` moves the row to ``done`` once; it returns whether the answer is
  owed to HubSpot's callback API (the call was answered ``BLOCK``).
  ``block`` and ``finish`` serialise on the row, so a call is either answered
  directly or completed by callback, never left without an answer.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from libs.events.store import AppendRequest, PostgresEventStore
from services.inbound.actions.failures import LostClaim

RUNNING, BLOCKED, DONE = "running", "blocked", "done"
_NAMESPACE = uuid.UUID("6f1c4a52-8a43-4a53-9d3e-5b0f0b7f2c11")


class CreateInFlight(Exception):
    """Another call is creating the same kind of Kleer record for the same HubSpot object right now."""


def correlation_for(connection: str, callback_id: str) -> uuid.UUID:
    """The correlation id of every event one callbackId causes (stable across deliveries)."""
    return uuid.uuid5(_NAMESPACE, f"{connection}/{callback_id}")


def event_id_for(connection: str, callback_id: str, what: str) -> uuid.UUID:
    """A stable event id, so a resumed call never records the same fact twice."""
    return uuid.uuid5(_NAMESPACE, f"{connection}/{callback_id}/{what}")


@dataclass(frozen=True)
class CallKey:
    connection: str
    callback_id: str


@dataclass(frozen=True)
class CallRow:
    key: CallKey
    action: str
    object_type: str
    object_id: str
    request: Mapping[str, Any]
    correlation_id: uuid.UUID
    state: str
    owner: uuid.UUID
    deliveries: int
    kleer_type: str | None
    kleer_id: str | None
    kleer_pending: bool
    answer: Mapping[str, str] | None
    attempts: int
    expires_at: dt.datetime
    completion_due: bool
    completed_at: dt.datetime | None
    kleer_revision_before: int | None = None  # an update in flight: the record's revision before it

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> CallRow:
        answer = r["answer"]
        return cls(
            key=CallKey(r["connection"], r["callback_id"]),
            action=r["action"],
            object_type=r["object_type"],
            object_id=r["object_id"],
            request=orjson.loads(r["request"]),
            correlation_id=r["correlation_id"],
            state=r["state"],
            owner=r["owner"],
            deliveries=r["deliveries"],
            kleer_type=r["kleer_type"],
            kleer_id=r["kleer_id"],
            kleer_pending=r["kleer_pending"],
            answer=None if answer is None else orjson.loads(answer),
            attempts=r["attempts"],
            expires_at=r["expires_at"],
            completion_due=r["completion_due"],
            completed_at=r["completed_at"],
            kleer_revision_before=r["kleer_revision_before"],
        )


_KEY = "connection = $1 AND callback_id = $2"


class Ledger:
    def __init__(self, pool: asyncpg.Pool, store: PostgresEventStore) -> None:
        self.pool = pool
        self.store = store

    async def claim(
        self,
        key: CallKey,
        *,
        action: str,
        object_type: str,
        object_id: str,
        request: Mapping[str, Any],
        owner: uuid.UUID,
        lease_s: float,
        expires_in_s: float,
        received: AppendRequest,
    ) -> tuple[CallRow, bool]:
        """The call's row and whether this delivery created it (then ``received`` is appended with it)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO workflow_actions (connection, callback_id, action, object_type, object_id, request, "
                "correlation_id, owner, lease_until, expires_at) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, "
                "now() + make_interval(secs => $9), now() + make_interval(secs => $10)) "
                "ON CONFLICT (connection, callback_id) DO NOTHING RETURNING *",
                key.connection,
                key.callback_id,
                action,
                object_type,
                object_id,
                orjson.dumps(dict(request)).decode(),
                correlation_for(key.connection, key.callback_id),
                owner,
                lease_s,
                expires_in_s,
            )
            if row is not None:
                await self.store.append_batch([received], conn=conn)
                return CallRow.from_record(row), True
            again = await conn.fetchrow(
                f"UPDATE workflow_actions SET deliveries = deliveries + 1, updated_at = now() WHERE {_KEY} "
                "RETURNING *",
                key.connection,
                key.callback_id,
            )
            assert again is not None  # rows are never deleted
            return CallRow.from_record(again), False

    async def load(self, key: CallKey) -> CallRow:
        row = await self.pool.fetchrow(f"SELECT * FROM workflow_actions WHERE {_KEY}", key.connection, key.callback_id)
        assert row is not None
        return CallRow.from_record(row)

    async def heartbeat(self, key: CallKey, owner: uuid.UUID, lease_s: float) -> bool:
        """Extend the lease; False when the call is done or another worker owns it."""
        status = await self.pool.execute(
            f"UPDATE workflow_actions SET lease_until = now() + make_interval(secs => $4) WHERE {_KEY} "
            "AND owner = $3 AND state <> 'done'",
            key.connection,
            key.callback_id,
            owner,
            lease_s,
        )
        return str(status).endswith(" 1")

    # --- the Kleer write ------------------------------------------------------------------------------

    async def mark_pending(
        self, key: CallKey, owner: uuid.UUID, kleer_type: str, revision_before: int | None = None
    ) -> None:
        """Commit that a create of ``kleer_type`` is about to be sent (see the module docstring); with
        ``revision_before``, an update of a record at that revision (a retry that finds the record past it
        knows the update landed). At most one such write per HubSpot object and Kleer type is in flight
        (``CreateInFlight`` otherwise)."""
        try:
            status = await self.pool.execute(
                f"UPDATE workflow_actions SET kleer_pending = true, kleer_type = $4, kleer_revision_before = $5, "
                f"updated_at = now() WHERE {_KEY} AND owner = $3 AND state <> 'done' AND kleer_id IS NULL",
                key.connection,
                key.callback_id,
                owner,
                kleer_type,
                revision_before,
            )
        except asyncpg.UniqueViolationError:
            raise CreateInFlight from None
        if not str(status).endswith(" 1"):
            raise LostClaim

    async def clear_pending(self, key: CallKey) -> None:
        """The create certainly did not happen (Kleer refused it, or never saw it)."""
        await self.pool.execute(
            f"UPDATE workflow_actions SET kleer_pending = false, updated_at = now() WHERE {_KEY}",
            key.connection,
            key.callback_id,
        )

    async def set_kleer(self, key: CallKey, kleer_type: str, kleer_id: str) -> None:
        await self.pool.execute(
            f"UPDATE workflow_actions SET kleer_type = $3, kleer_id = $4, kleer_pending = false, updated_at = now() "
            f"WHERE {_KEY}",
            key.connection,
            key.callback_id,
            kleer_type,
            kleer_id,
        )

    async def created_by_other_call(
        self, key: CallKey, object_type: str, object_id: str, kleer_type: str, actions: Sequence[str]
    ) -> str | None:
        """The Kleer id another call of these actions created for the same HubSpot object, if any."""
        value = await self.pool.fetchval(
            "SELECT kleer_id FROM workflow_actions WHERE connection = $1 AND object_type = $2 AND object_id = $3 "
            "AND kleer_type = $4 AND kleer_id IS NOT NULL AND callback_id <> $5 AND action = ANY($6::text[]) "
            "ORDER BY received_at LIMIT 1",
            key.connection,
            object_type,
            object_id,
            kleer_type,
            key.callback_id,
            list(actions),
        )
        return None if value is None else str(value)

    # --- retries and answers --------------------------------------------------------------------------

    async def note_retry(self, key: CallKey, error: str, delay_s: float) -> int:
        """Count a failed attempt; returns the attempts so far."""
        value = await self.pool.fetchval(
            f"UPDATE workflow_actions SET attempts = attempts + 1, last_error = $3, "
            f"next_attempt_at = now() + make_interval(secs => $4), updated_at = now() WHERE {_KEY} RETURNING attempts",
            key.connection,
            key.callback_id,
            error[:2000],
            delay_s,
        )
        return int(value or 0)

    async def block(self, key: CallKey) -> CallRow:
        """Record that HubSpot was answered BLOCK (the answer is then owed by callback), unless already done."""
        row = await self.pool.fetchrow(
            f"UPDATE workflow_actions SET state = 'blocked', completion_due = true, updated_at = now() "
            f"WHERE {_KEY} AND state <> 'done' RETURNING *",
            key.connection,
            key.callback_id,
        )
        return CallRow.from_record(row) if row is not None else await self.load(key)

    async def finish(
        self, conn: asyncpg.Connection, key: CallKey, answer: Mapping[str, str], hold_s: float
    ) -> tuple[bool, Mapping[str, str]]:
        """Store the final answer (inside the caller's transaction).

        Returns (the answer is owed by callback, the answer stored): when another
        worker finished first, its answer stands. An owed completion is left to
        this worker for ``hold_s`` before the sweeper may send it.
        """
        row = await conn.fetchrow(
            f"UPDATE workflow_actions SET state = 'done', answer = $3::jsonb, kleer_pending = false, "
            f"next_attempt_at = now() + make_interval(secs => $4), updated_at = now() "
            f"WHERE {_KEY} AND state <> 'done' RETURNING completion_due",
            key.connection,
            key.callback_id,
            orjson.dumps(dict(answer)).decode(),
            hold_s,
        )
        if row is not None:
            return bool(row["completion_due"]), answer
        stored = await conn.fetchrow(f"SELECT answer FROM workflow_actions WHERE {_KEY}", key.connection, key.callback_id)
        assert stored is not None and stored["answer"] is not None
        return False, orjson.loads(stored["answer"])

    async def completion_sent(self, key: CallKey, error: str | None = None) -> None:
        """HubSpot took the callback completion (or refused it for good: ``error``)."""
        await self.pool.execute(
            f"UPDATE workflow_actions SET completed_at = now(), completion_attempts = completion_attempts + 1, "
            f"last_error = COALESCE($3, last_error), updated_at = now() WHERE {_KEY}",
            key.connection,
            key.callback_id,
            error,
        )

    async def completion_failed(self, key: CallKey, error: str, delay_s: float) -> None:
        await self.pool.execute(
            f"UPDATE workflow_actions SET completion_attempts = completion_attempts + 1, last_error = $3, "
            f"next_attempt_at = now() + make_interval(secs => $4), updated_at = now() WHERE {_KEY}",
            key.connection,
            key.callback_id,
            error[:2000],
            delay_s,
        )

    # --- the sweeper ----------------------------------------------------------------------------------

    async def take_over(self, owner: uuid.UUID, lease_s: float, limit: int = 20) -> list[CallRow]:
        """Unfinished calls whose worker stopped renewing its lease, now owned by ``owner``."""
        rows = await self.pool.fetch(
            "UPDATE workflow_actions w SET owner = $1, lease_until = now() + make_interval(secs => $2), "
            "updated_at = now() FROM (SELECT connection, callback_id FROM workflow_actions "
            "WHERE state <> 'done' AND lease_until < now() ORDER BY lease_until LIMIT $3 FOR UPDATE SKIP LOCKED) s "
            "WHERE w.connection = s.connection AND w.callback_id = s.callback_id RETURNING w.*",
            owner,
            lease_s,
            limit,
        )
        return [CallRow.from_record(r) for r in rows]

    async def due_completions(self, hold_s: float, limit: int = 50) -> list[CallRow]:
        """Finished calls whose callback completion is still to be sent (held for ``hold_s`` by this caller)."""
        rows = await self.pool.fetch(
            "UPDATE workflow_actions w SET next_attempt_at = now() + make_interval(secs => $1) "
            "FROM (SELECT connection, callback_id FROM workflow_actions WHERE state = 'done' AND completion_due "
            "AND completed_at IS NULL AND (next_attempt_at IS NULL OR next_attempt_at <= now()) "
            "ORDER BY next_attempt_at NULLS FIRST LIMIT $2 FOR UPDATE SKIP LOCKED) s "
            "WHERE w.connection = s.connection AND w.callback_id = s.callback_id RETURNING w.*",
            hold_s,
            limit,
        )
        return [CallRow.from_record(r) for r in rows]
