"""Pausing a consumer group (migration 018): its consumers take nothing from Kafka until it is resumed.

A paused consumer finishes the batch in flight and its commit, then waits,
still a member of its group: no rebalance, no checkpoint moves, and every
change stays queued in the log and in Kafka until ``resume``. Its consumers
notice a pause or a resume within ``PAUSE_CHECK_SECONDS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

PAUSE_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Pause:
    consumer: str
    reason: str
    paused_by: str
    paused_at: datetime


_COLUMNS = "consumer, reason, paused_by, paused_at"  # a Pause, in its fields' order


async def pause(db: Any, consumer: str, *, reason: str = "", by: str = "") -> Pause:
    """Pause ``consumer`` (a pool or a connection); pausing a paused group keeps its first pause."""
    row = await db.fetchrow(
        "INSERT INTO consumer_pauses (consumer, reason, paused_by) VALUES ($1, $2, $3) "
        "ON CONFLICT (consumer) DO UPDATE SET consumer = EXCLUDED.consumer "
        f"RETURNING {_COLUMNS}",
        consumer, reason, by,
    )
    return Pause(*row.values())


async def resume(db: Any, consumer: str) -> Pause | None:
    """Resume ``consumer``; the pause it ends, or None if it was not paused."""
    row = await db.fetchrow(
        f"DELETE FROM consumer_pauses WHERE consumer = $1 RETURNING {_COLUMNS}",
        consumer,
    )
    return Pause(*row.values()) if row else None


async def paused(db: Any, consumer: str) -> Pause | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM consumer_pauses WHERE consumer = $1", consumer)
    return Pause(*row.values()) if row else None


async def all_paused(db: Any) -> list[Pause]:
    """Every paused consumer group, oldest pause first."""
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM consumer_pauses ORDER BY paused_at")
    return [Pause(*row.values()) for row in rows]
