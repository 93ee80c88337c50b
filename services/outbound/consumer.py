"""A consumer that hands the pusher large batches: everything gathered across partitions at once.

The base ``EventConsumer`` calls its handler once per partition with whatever
one fetch returned (often a few hundred events spread over four partitions).
For HubSpot that is expensive: every call ends in partly filled requests (a
batch upsert takes 100 records per object type, an association batch 2,000),
and HubSpot's rate limit counts requests, not records. This subclass gathers
messages from all assigned partitions for up to ``linger`` seconds or
``max_events`` events, calls the handler once with all of them (in log
order), and commits the effects and every partition's checkpoint in one
transaction. Dedupe, gap filling, retries and parking are the base class's.

Between batches, when idle, it calls ``on_idle`` (the pusher writes associations
whose parent landed meanwhile).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka.structs import TopicPartition

from libs.events.consumer import ConsumerConfig, EventConsumer, HandlerResult
from libs.events.dlq import DeadLetterQueue
from libs.events.envelope import RecordedEvent
from libs.events.store import PostgresEventStore
from libs.observability import metrics
from libs.observability.logging import get_logger

log = get_logger(__name__)


class _CheckpointMoved(Exception):
    """Another group member committed past our checkpoint: start the batch over."""


class BatchingConsumer(EventConsumer):
    def __init__(
        self,
        store: PostgresEventStore,
        handler: Callable[[Sequence[RecordedEvent]], Awaitable[HandlerResult]],
        config: ConsumerConfig,
        dlq: DeadLetterQueue,
        *,
        max_events: int = 5_000,
        linger: float = 0.25,
        on_idle: Callable[[], Awaitable[Any]] | None = None,
        idle_interval: float = 10.0,
    ) -> None:
        super().__init__(store, handler, config, dlq)
        self.max_events = max_events
        self.linger = linger
        self.on_idle = on_idle
        self.idle_interval = idle_interval
        self._last_idle = time.monotonic()

    async def run(self) -> None:
        if self._kafka is None:
            await self.start()
        assert self._kafka is not None
        try:
            while not self._stopping.is_set():
                gathered = await self._gather()
                if gathered:
                    await self._handle_all(gathered)
                    await self._commit_kafka()
                    await self._update_lag()
                else:
                    await self._maybe_idle()
        finally:
            kafka, self._kafka = self._kafka, None
            if kafka is not None:
                await kafka.stop()

    async def _gather(self) -> dict[TopicPartition, list[Any]]:
        assert self._kafka is not None
        gathered: dict[TopicPartition, list[Any]] = {}
        count = 0
        deadline: float | None = None
        while count < self.max_events and not self._stopping.is_set():
            timeout = (
                self.config.poll_timeout_ms
                if deadline is None
                else max(0, int((deadline - time.monotonic()) * 1000))
            )
            try:
                batches = await self._kafka.getmany(timeout_ms=timeout, max_records=self.max_events - count)
            except Exception as exc:
                log.warning("consumer fetch failed; retrying", consumer=self.config.name, error=str(exc))
                await asyncio.sleep(0.5)
                break
            for tp, messages in batches.items():
                gathered.setdefault(tp, []).extend(messages)
                count += len(messages)
            if not batches and deadline is None:
                break  # nothing at all arrived within one poll timeout
            if deadline is None:
                deadline = time.monotonic() + self.linger
            if time.monotonic() >= deadline:
                break
        return gathered

    async def _handle_all(self, gathered: dict[TopicPartition, list[Any]]) -> None:
        while True:
            checkpoints = {tp: self._checkpoints.get((tp.topic, tp.partition), 0) for tp in gathered}
            per_partition: dict[TopicPartition, list[RecordedEvent]] = {}
            for tp, messages in gathered.items():
                events = await self._new_events(tp, messages, checkpoints[tp])
                if events:
                    per_partition[tp] = events
            if not per_partition:
                return
            events = sorted((e for batch in per_partition.values() for e in batch), key=lambda e: e.position)
            result = await self._run_handler(events)
            try:
                await self._commit_all(per_partition, checkpoints, result)
                return
            except _CheckpointMoved:
                continue

    async def _commit_all(
        self,
        per_partition: dict[TopicPartition, list[RecordedEvent]],
        checkpoints: dict[TopicPartition, int],
        result: HandlerResult,
    ) -> None:
        moved: dict[tuple[str, int], int] = {}
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                for tp in per_partition:
                    stored = await conn.fetchval(
                        "SELECT position FROM consumer_checkpoints WHERE consumer = $1 AND topic = $2 "
                        "AND partition = $3 FOR UPDATE",
                        self.config.name,
                        tp.topic,
                        tp.partition,
                    )
                    if stored is not None and stored > checkpoints[tp]:
                        moved[(tp.topic, tp.partition)] = stored
                if moved:
                    raise _CheckpointMoved()
                for write in result.writes:
                    await write(conn)
                if result.appends:
                    await self.store.append_batch(result.appends, conn=conn)
                await conn.executemany(
                    "INSERT INTO consumer_checkpoints (consumer, topic, partition, position) VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (consumer, topic, partition) DO UPDATE SET position = EXCLUDED.position, "
                    "updated_at = now()",
                    [
                        (self.config.name, tp.topic, tp.partition, events[-1].position)
                        for tp, events in per_partition.items()
                    ],
                )
        except _CheckpointMoved:
            self._checkpoints.update(moved)
            raise
        handled = 0
        for tp, events in per_partition.items():
            self._checkpoints[(tp.topic, tp.partition)] = events[-1].position
            handled += len(events)
        self.handled += handled
        metrics.CONSUMER_HANDLED.labels(consumer=self.config.name, outcome="handled").inc(handled)

    async def _maybe_idle(self) -> None:
        if self.on_idle is None or time.monotonic() - self._last_idle < self.idle_interval:
            return
        self._last_idle = time.monotonic()
        try:
            await self.on_idle()
        except Exception as exc:  # an idle chore must never stop the consumer
            log.warning("idle task failed", consumer=self.config.name, error=repr(exc))
