"""The consumer base: Kafka in, effects out, checkpoints in Postgres.

Delivery from Kafka is at-least-once (the relay may republish, the broker may
redeliver after a rebalance). Effects are made exactly-once by the checkpoint:
for every (consumer, topic, partition) Postgres holds the last handled log
position, and it is written **in the same transaction** as the handler's own
bookkeeping (the events it appends, its tables). Messages at or below the
checkpoint are skipped. Positions grow within a partition because the relay
publishes in position order and one stream always maps to one partition.

A handler gets a batch of events (already deduplicated, in position order per
partition) and returns a ``HandlerResult``: the events to append and the SQL
writes to make. Its external calls (HubSpot, Kleer) happen before that
transaction; they must be idempotent, because a crash between the call and the
commit repeats the call.

Failures: a handler exception is retried with backoff; after ``max_attempts``
the batch's events are parked in the dead-letter queue with the error (nothing
is dropped), and the checkpoint moves on.

Kafka positions: a consumer keeps, with each checkpoint, the Kafka offset of
the last message it handled and the broker epoch; on assignment it resumes
there (or from the start of the partition if the epoch moved on). Kafka's own
committed offsets are not used.

Broker data loss: when the relay finds the broker lost data it bumps the
broker epoch in Postgres; consumers see the new epoch and re-read their
partitions from the beginning (a broker that came back empty would otherwise
leave them parked at offsets it no longer has).

Pauses: while the group is paused (``libs.events.pauses``, ``kleer-sync
outbound pause``) a consumer takes nothing from Kafka; it stays in its group,
so nothing rebalances, and goes on where it was once resumed.

Database restarts: a batch whose handler or commit fails because the server
went away is neither retried against the attempt budget nor dead-lettered: the
consumer waits for the server, seeks every assigned partition back to its
Postgres checkpoint and handles the batch again (the handler's external calls
repeat, idempotently, as after a crash).

Gaps: every message names the position of the previous message the relay put
in the same partition. If that link points past our checkpoint (the broker
lost messages, or the relay rewound), the missing events are read from
Postgres (same topic, same partition) and handled first, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from libs.events.dlq import DeadLetterQueue
from libs.events.envelope import EventDataError, RecordedEvent
from libs.events.kafka import (
    DEFAULT_PARTITIONS,
    MARKER_HEADER,
    PREVIOUS_POSITION_HEADER,
    Stopped,
    header,
    partition_for,
    retry_with_backoff,
)
from libs.events.outage import database_unavailable, wait_for_database
from libs.events.pauses import PAUSE_CHECK_SECONDS, Pause, paused
from libs.events.store import AppendRequest, PostgresEventStore
from libs.observability import metrics
from libs.observability.logging import bind_correlation_id, get_logger

log = get_logger(__name__)

SqlWrite = Callable[[asyncpg.Connection], Awaitable[None]]
EPOCH_CHECK_SECONDS = 1.0
T = TypeVar("T")

# A commit Postgres aborted to break a lock conflict is run again, up to this many times in all.
COMMIT_ATTEMPTS = 5
LOCK_CONFLICTS = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)


@dataclass
class HandlerResult:
    """What a handler leaves to the consumer's commit: its writes and appends, in the checkpoint's transaction.

    ``pending``: work the handler started and the commit waits for, before it opens the transaction (the
    writes read what it found). Should one fail, nothing of the batch is committed and the error is the
    commit's. ``on_commit``: called once the transaction has committed (not if nothing was).
    """

    appends: list[AppendRequest] = field(default_factory=list)
    writes: list[SqlWrite] = field(default_factory=list)
    pending: list[Awaitable[Any]] = field(default_factory=list)
    on_commit: list[Callable[[], None]] = field(default_factory=list)

    def committed(self) -> None:
        """The transaction has committed: tell whoever asked (``on_commit``)."""
        for callback in self.on_commit:
            callback()

    async def settled(self) -> None:
        """Wait for the pending work."""
        for work in self.pending:
            await work

    async def commit(self, store: PostgresEventStore) -> None:
        """Outside a consumer (a redrive, a replay, a test): once the pending work is done, the writes and
        the appends in one transaction, as a consumer commits them with its checkpoint."""
        await self.settled()
        async with store.pool.acquire() as conn, conn.transaction():
            for write in self.writes:
                await write(conn)
            if self.appends:
                await store.append_batch(self.appends, conn=conn)
        self.committed()


BatchHandler = Callable[[Sequence[RecordedEvent]], Awaitable[HandlerResult]]
Router = Callable[[RecordedEvent], str | None]


@dataclass
class ConsumerConfig:
    name: str  # the consumer group; also the checkpoint owner
    topics: Sequence[str]
    bootstrap_servers: str
    max_batch: int = 500
    poll_timeout_ms: int = 200
    # How long the broker may hold a fetch with no data. Kafka answers as soon as data arrives; the dev
    # broker (Tansu) does not, so there it bounds the delivery delay (about a quarter of it at p50).
    fetch_max_wait_ms: int = 500
    max_attempts: int = 5
    retry_base: float = 0.2
    # The relay's router and partition count: needed to read a gap back from Postgres.
    router: Router | None = None
    partitions: int = DEFAULT_PARTITIONS


class _Assignments(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: EventConsumer) -> None:
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.consumer._register(list(assigned))


class EventConsumer:
    def __init__(
        self, store: PostgresEventStore, handler: BatchHandler, config: ConsumerConfig, dlq: DeadLetterQueue
    ) -> None:
        self.store = store
        self.pool: asyncpg.Pool = store.pool
        self.handler = handler
        self.config = config
        self.dlq = dlq
        self._kafka: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._checkpoints: dict[tuple[str, int], int] = {}
        self._epoch: int | None = None
        self._epoch_checked = 0.0
        self._pause_checked = 0.0
        self._lag_task: asyncio.Task[None] | None = None
        self._lag_stale = False
        self.handled = 0

    async def start(self) -> None:
        self._kafka = AIOKafkaConsumer(
            bootstrap_servers=self.config.bootstrap_servers,
            group_id=self.config.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.config.max_batch,
            fetch_max_wait_ms=self.config.fetch_max_wait_ms,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            request_timeout_ms=15_000,
        )
        self._kafka.subscribe(list(self.config.topics), listener=_Assignments(self))
        await retry_with_backoff(
            self._kafka.start, f"connect consumer {self.config.name} to Kafka", stop=self._stopping
        )

    async def stop(self) -> None:
        """Stop taking new batches; the batch in flight finishes and commits first."""
        self._stopping.set()

    async def run(self) -> None:
        if self._kafka is None:
            try:
                await self.start()
            except Stopped:
                return
        assert self._kafka is not None
        try:
            while not self._stopping.is_set():
                if await self._held():
                    continue
                try:
                    batches = await self._kafka.getmany(timeout_ms=self.config.poll_timeout_ms)
                except Exception as exc:
                    log.warning("consumer fetch failed; retrying", consumer=self.config.name, error=str(exc))
                    await asyncio.sleep(0.5)
                    continue
                try:
                    if await self._follow_broker_epoch():
                        # What was just fetched may come from the broker that lost its data (its offsets
                        # mean nothing to the new one): it is read again, from the start, not checkpointed.
                        continue
                    for tp, messages in batches.items():
                        await self._handle_partition(tp, messages)
                    if batches:
                        await self._update_lag()
                except Exception as exc:
                    if not database_unavailable(exc):
                        raise
                    await self._outlive_outage(exc)
        finally:
            kafka, self._kafka = self._kafka, None
            if kafka is not None:
                await kafka.stop()
            if self._lag_task is not None:
                await asyncio.gather(self._lag_task, return_exceptions=True)

    # -- internals ---------------------------------------------------------------
    async def _paused_now(self) -> Pause | None:
        """The group's pause, if it is paused (Postgres asked at most every ``PAUSE_CHECK_SECONDS``)."""
        now = time.monotonic()
        if now - self._pause_checked < PAUSE_CHECK_SECONDS:
            return None
        self._pause_checked = now
        return await paused(self.pool, self.config.name)

    async def _held(self) -> bool:
        """Whether the group was paused (and is resumed now, or the consumer stopping)."""
        try:
            pause = await self._paused_now()
            if pause is None:
                return False
            await self._hold_while_paused(pause)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            await self._outlive_outage(exc)
        return True

    async def _outlive_outage(self, exc: Exception) -> None:
        """The database went away (``exc``): wait for it, then resume from the checkpoints."""
        log.warning("database unavailable; resuming from the checkpoints once it is back",
                    consumer=self.config.name, error=repr(exc))
        await self._resume_after_outage()

    async def _hold_while_paused(self, pause: Pause) -> None:
        """Take nothing until the group is resumed (or the consumer stops); a member of the group meanwhile."""
        name = self.config.name
        log.warning("consumer paused: taking nothing from Kafka until its group is resumed (the pushers': "
                    "`kleer-sync outbound resume`)", consumer=name, reason=pause.reason, paused_by=pause.paused_by)
        metrics.CONSUMER_PAUSED.labels(consumer=name).set(1)
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), PAUSE_CHECK_SECONDS)
                if await paused(self.pool, name) is None:
                    log.info("consumer resumed", consumer=name)
                    return
        finally:
            metrics.CONSUMER_PAUSED.labels(consumer=name).set(0)

    async def _follow_broker_epoch(self) -> bool:
        """After the relay saw the broker lose data, read every assigned partition again from the start.

        Returns True when it did: the messages fetched before are then to be dropped, not handled.
        """
        now = time.monotonic()
        if now - self._epoch_checked < EPOCH_CHECK_SECONDS:
            return False
        self._epoch_checked = now
        try:
            epoch = int(await self.pool.fetchval("SELECT COALESCE(max(epoch), 0) FROM relay_state") or 0)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("could not read the broker epoch", consumer=self.config.name, error=str(exc))
            return False
        previous, self._epoch = self._epoch, epoch
        if previous is None or epoch == previous or self._kafka is None:
            return False
        assigned = list(self._kafka.assignment())
        if not assigned:
            return False
        log.warning("broker lost data; re-reading partitions", consumer=self.config.name, epoch=epoch)
        await self._kafka.seek_to_beginning(*assigned)
        return True

    async def _resume_after_outage(self) -> None:
        """Wait for the database, then seek every assigned partition back to its checkpoint."""
        while await wait_for_database(self.pool, self._stopping):
            try:
                if self._kafka is not None:
                    await self._register(list(self._kafka.assignment()))
                return
            except Exception as exc:
                if not database_unavailable(exc):
                    raise

    async def _register(self, assigned: list[TopicPartition]) -> None:
        """Make a checkpoint row per assigned partition, and resume where Postgres says we were.

        Kafka's committed offsets are not used: after broker data loss they can
        point past the end of a republished partition.
        """
        async with self.pool.acquire() as conn:
            await conn.executemany(
                "INSERT INTO consumer_checkpoints (consumer, topic, partition, position) VALUES ($1, $2, $3, 0) "
                "ON CONFLICT DO NOTHING",
                [(self.config.name, tp.topic, tp.partition) for tp in assigned],
            )
            rows = await conn.fetch(
                "SELECT topic, partition, position, kafka_offset, epoch FROM consumer_checkpoints "
                "WHERE consumer = $1",
                self.config.name,
            )
            epoch = int(await conn.fetchval("SELECT COALESCE(max(epoch), 0) FROM relay_state") or 0)
        self._epoch = epoch
        self._checkpoints = {(r["topic"], r["partition"]): r["position"] for r in rows}
        resume = {(r["topic"], r["partition"]): r for r in rows}
        if self._kafka is None:
            return
        from_start = []
        resume_at: dict[TopicPartition, int] = {}
        for tp in assigned:
            row = resume.get((tp.topic, tp.partition))
            if row is not None and row["kafka_offset"] is not None and row["epoch"] == epoch:
                resume_at[tp] = row["kafka_offset"] + 1
            else:
                from_start.append(tp)
        for tp, offset in (await self._past_the_end(resume_at)).items():
            log.warning("checkpoint offset is past the end of the partition; reading it from the start",
                        consumer=self.config.name, topic=tp.topic, partition=tp.partition, offset=offset)
            del resume_at[tp]
            from_start.append(tp)
        for tp, offset in resume_at.items():
            self._kafka.seek(tp, offset)
        if from_start:
            await self._kafka.seek_to_beginning(*from_start)

    async def _past_the_end(self, resume_at: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The resume offsets the broker does not have yet: it lost data they were taken from.

        Kafka would reset such a position (``auto_offset_reset``); a broker that does not would leave
        the consumer waiting there until that many new messages arrive. The checkpoints (positions in
        the log) make the re-read from the start cheap: what was handled is skipped.
        """
        if not resume_at or self._kafka is None:
            return {}
        try:
            ends = await self._kafka.end_offsets(list(resume_at))
        except Exception as exc:  # the broker cannot say: resume as stored, as before
            log.warning("could not read the partitions' end offsets", consumer=self.config.name, error=str(exc))
            return {}
        return {tp: offset for tp, offset in resume_at.items() if tp in ends and offset > ends[tp]}

    async def _handle_partition(self, tp: TopicPartition, messages: Sequence[Any]) -> None:
        while True:
            checkpoint = self._checkpoints.get((tp.topic, tp.partition), 0)
            events = await self._new_events(tp, messages, checkpoint)
            if not events:
                return
            result = await self._run_handler(events)
            if await self._commit(tp, checkpoint, events, result, messages[-1].offset):
                return
            # Another member moved this partition's checkpoint meanwhile: start over from it.

    async def _new_events(
        self, tp: TopicPartition, messages: Sequence[Any], checkpoint: int
    ) -> list[RecordedEvent]:
        """The batch's events past the checkpoint, with any gap filled from Postgres, in position order."""
        events: dict[int, RecordedEvent] = {}
        cursor = checkpoint
        for message in messages:
            if header(message, MARKER_HEADER) is not None:
                continue
            try:
                event = self._decode(tp, message)
            except EventDataError as exc:
                log.error(
                    "undecodable message skipped", topic=tp.topic, offset=message.offset, error=str(exc)
                )
                metrics.CONSUMER_HANDLED.labels(consumer=self.config.name, outcome="undecodable").inc()
                continue
            if event.position <= cursor:
                metrics.CONSUMER_HANDLED.labels(consumer=self.config.name, outcome="duplicate").inc()
                continue
            link = header(message, PREVIOUS_POSITION_HEADER)
            previous = int(link) if link is not None else -1
            if previous < 0 or previous > cursor:
                for missing in await self._read_gap(tp, cursor, event.position):
                    events.setdefault(missing.position, missing)
            events[event.position] = event
            cursor = event.position
        return [events[p] for p in sorted(events)]

    def _decode(self, tp: TopicPartition, message: Any) -> RecordedEvent:
        """The event a message carries (raises ``EventDataError``)."""
        return RecordedEvent.from_json(message.value)

    async def _read_gap(self, tp: TopicPartition, after: int, before: int) -> list[RecordedEvent]:
        """Events of this topic and partition with after < position < before, from the log."""
        router = self.config.router
        if router is None or before - after <= 1:
            return []
        found: list[RecordedEvent] = []
        cursor = after
        while cursor < before - 1:
            page = await self.store.read_all(cursor, min(5000, before - 1 - cursor))
            if not page:
                break
            for event in page:
                if event.position >= before:
                    break
                if (
                    router(event) == tp.topic
                    and partition_for(event.stream, self.config.partitions) == tp.partition
                ):
                    found.append(event)
            cursor = page[-1].position
        if found:
            log.warning(
                "filled a gap in Kafka from the event log",
                consumer=self.config.name,
                topic=tp.topic,
                partition=tp.partition,
                events=len(found),
            )
            metrics.CONSUMER_HANDLED.labels(consumer=self.config.name, outcome="gap_filled").inc(len(found))
        return found

    async def _commit(
        self,
        tp: TopicPartition,
        checkpoint: int,
        events: list[RecordedEvent],
        result: HandlerResult,
        kafka_offset: int,
    ) -> bool:
        """Effects and checkpoint in one transaction; False if the checkpoint moved under us."""
        new_checkpoint = events[-1].position
        await result.settled()

        async def commit(conn: asyncpg.Connection) -> int | None:
            stored = await self._lock_checkpoint(conn, tp)
            if stored is not None and stored > checkpoint:
                return stored
            await self._apply(conn, result, [(tp, new_checkpoint, kafka_offset)])
            return None

        moved = await self._in_transaction(commit)
        if moved is not None:
            self._checkpoints[(tp.topic, tp.partition)] = moved
            return False
        result.committed()
        self._checkpoints[(tp.topic, tp.partition)] = new_checkpoint
        self.handled += len(events)
        metrics.CONSUMER_HANDLED.labels(consumer=self.config.name, outcome="handled").inc(len(events))
        return True

    async def _in_transaction(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``work`` in a transaction of its own, run again from the start when Postgres aborted the transaction
        to break a deadlock or a serialization conflict (nothing of it was applied, and the other transaction
        has gone on): a commit's writes lock rows in the order of its batch, and two handlers' batches may
        meet the same rows in other orders (an inbound handlers process stopped on one in a soak, 2026-12-07).
        After ``COMMIT_ATTEMPTS`` the error is raised."""
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    return await work(conn)
            except LOCK_CONFLICTS as exc:
                if attempt == COMMIT_ATTEMPTS:
                    raise
                log.warning("commit aborted by Postgres to break a lock conflict; committing again",
                            consumer=self.config.name, error=type(exc).__name__, attempt=attempt)
                await asyncio.sleep(random.uniform(0.01, 0.05) * attempt)
        raise AssertionError("unreachable")

    async def _lock_checkpoint(self, conn: asyncpg.Connection, tp: TopicPartition) -> int | None:
        """The stored checkpoint of a partition, locked until the transaction ends (None: no row yet)."""
        stored: int | None = await conn.fetchval(
            "SELECT position FROM consumer_checkpoints WHERE consumer = $1 AND topic = $2 AND partition = $3 "
            "FOR UPDATE",
            self.config.name,
            tp.topic,
            tp.partition,
        )
        return stored

    async def _apply(
        self,
        conn: asyncpg.Connection,
        result: HandlerResult,
        checkpoints: Sequence[tuple[TopicPartition, int, int]],
        *,
        epoch: int | None = None,
    ) -> None:
        """The handler's writes, the new checkpoints ``(partition, position, kafka offset)``, then its appends,
        in the caller's transaction. The offsets are of the broker ``epoch`` (by default the one followed now).

        Appends last: the append takes the log's append lock and holds it until COMMIT, so it is held for
        the append and the commit only (a pusher batch of 20,000 events held it through its checkpoint upsert
        too, while the poller's and the webhook intake's appends waited)."""
        for write in result.writes:
            await write(conn)
        await conn.executemany(
            "INSERT INTO consumer_checkpoints (consumer, topic, partition, position, kafka_offset, epoch) "
            "VALUES ($1, $2, $3, $4, $5, $6) "
            "ON CONFLICT (consumer, topic, partition) DO UPDATE SET position = EXCLUDED.position, "
            "kafka_offset = EXCLUDED.kafka_offset, epoch = EXCLUDED.epoch, updated_at = now()",
            [
                (self.config.name, tp.topic, tp.partition, position, offset, (self._epoch or 0) if epoch is None else epoch)
                for tp, position, offset in checkpoints
            ],
        )
        if result.appends:
            await self.store.append_batch(result.appends, conn=conn)

    async def _run_handler(self, events: list[RecordedEvent]) -> HandlerResult:
        attempt = 0
        while True:
            attempt += 1
            bind_correlation_id(str(events[0].metadata.get("correlation_id", events[0].event_id)))
            try:
                return await self.handler(events)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if database_unavailable(exc):
                    raise  # not the batch's fault: wait for the server, then handle it again
                if attempt >= self.config.max_attempts:
                    log.error("handler failed; parking batch", consumer=self.config.name, error=repr(exc))
                    return HandlerResult(writes=[self._park_all(events, exc)])
                delay = random.uniform(0, self.config.retry_base * 2**attempt)
                log.warning(
                    "handler failed; retrying", consumer=self.config.name, attempt=attempt, error=repr(exc)
                )
                await asyncio.sleep(delay)

    def _park_all(self, events: list[RecordedEvent], exc: Exception) -> SqlWrite:
        async def park(conn: asyncpg.Connection) -> None:
            for event in events:
                await self.dlq.park_event(
                    conn, source=self.config.name, event=event, reason=f"handler error: {exc!r}"
                )

        return park

    async def _update_lag(self) -> None:
        """Refresh the lag gauge in the background: its query was one more database round trip between
        batches (5-20 ms on a busy machine). One refresh at a time; asked again meanwhile, it runs once more
        when the one in flight ends, so the gauge never stays behind the last batch."""
        if self._lag_task is not None and not self._lag_task.done():
            self._lag_stale = True
            return
        self._lag_task = asyncio.create_task(self._refresh_lag(), name=f"{self.config.name}-lag")

    async def _refresh_lag(self) -> None:
        """Lag = published positions not yet handled, worst partition (idle partitions count 0)."""
        while True:
            self._lag_stale = False
            try:
                async with self.pool.acquire() as conn:
                    lag = await conn.fetchval(
                        "SELECT COALESCE(max(GREATEST(r.last_position - c.position, 0)), 0) "
                        "FROM consumer_checkpoints c JOIN relay_partitions r "
                        "ON r.topic = c.topic AND r.partition = c.partition WHERE c.consumer = $1",
                        self.config.name,
                    )
            except Exception as exc:  # a gauge: the next batch refreshes it again
                log.debug("consumer lag not refreshed", consumer=self.config.name, error=repr(exc))
                return
            metrics.CONSUMER_LAG_EVENTS.labels(consumer=self.config.name).set(lag)
            if not self._lag_stale:
                return
