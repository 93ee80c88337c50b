"""How the pusher's consumer gathers a batch: up to ``max_events`` or ``linger``, and no longer than the stream
keeps coming (a drained backlog goes out after ``quiet``, not a whole linger later)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from aiokafka.structs import TopicPartition

from libs.events.consumer import ConsumerConfig, HandlerResult
from services.outbound.consumer import PUSH_BATCH_EVENTS, PUSH_LINGER_S, BatchingConsumer

TP = TopicPartition("t", 0)


class _Kafka:
    """``getmany`` answering from a script of (seconds until it arrives, message count), as a broker would."""

    def __init__(self, script: list[tuple[float, int]]) -> None:
        self.script = list(script)
        self.started = time.monotonic()
        self.due = 0.0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        now = time.monotonic() - self.started
        if not self.script:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        after, count = self.script[0]
        wait = self.due + after - now
        if wait > timeout_ms / 1000:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        await asyncio.sleep(max(0.0, wait))
        self.script.pop(0)
        self.due += after
        return {TP: [SimpleNamespace(offset=i) for i in range(min(count, max_records))]}


async def _nothing(events: Any) -> HandlerResult:
    return HandlerResult()


def _consumer(
    script: list[tuple[float, int]], *, max_events: int = 1000, timing: dict[str, float] | None = None
) -> BatchingConsumer:
    """A consumer reading ``script``; ``timing``: its ``linger`` and ``quiet`` (1 s and 0.1 s unless given; ``{}``
    for the pusher's own)."""
    consumer = BatchingConsumer(
        SimpleNamespace(pool=None),  # type: ignore[arg-type]
        _nothing,
        ConsumerConfig("pusher", ["t"], "127.0.0.1:1", poll_timeout_ms=500),
        None,  # type: ignore[arg-type]
        max_events=max_events,
        **({"linger": 1.0, "quiet": 0.1} if timing is None else timing),
    )
    consumer._kafka = _Kafka(script)  # type: ignore[assignment]
    return consumer


async def _timed_gather(consumer: BatchingConsumer) -> tuple[int, float]:
    started = time.monotonic()
    gathered = await consumer._gather()
    return sum(len(m) for m in gathered.values()), time.monotonic() - started


async def test_a_drained_backlog_is_handed_over_once_the_stream_pauses_not_a_linger_later() -> None:
    count, seconds = await _timed_gather(_consumer([(0.0, 300), (0.02, 200)]))
    assert count == 500
    assert seconds < 0.7  # 0.02 s for the messages, then 0.1 s of quiet; the linger is 1 s


async def test_a_steady_stream_fills_the_batch_for_up_to_the_linger() -> None:
    count, seconds = await _timed_gather(_consumer([(0.0, 100)] + [(0.05, 100)] * 40, max_events=100_000))
    # Messages every 0.05 s (later on a busy machine): gathered for the whole second, however many came.
    assert 0.9 <= seconds < 2.0 and 800 <= count <= 2_200
    count, seconds = await _timed_gather(_consumer([(0.0, 600), (0.05, 600)], max_events=1_000))
    assert count == 1_000 and seconds < 0.7  # full: handed over at once


async def test_the_pushers_batch_takes_a_streaming_poll_for_longer_than_a_second() -> None:
    # A poll streams in for 1.5 s, 50 events every 0.05 s, well under a full batch: the pusher's own settings
    # take it as one batch, not two (each batch ends in a partly filled request per object type).
    script = [(0.0, 50)] + [(0.05, 50)] * 30
    count, seconds = await _timed_gather(_consumer(script, max_events=PUSH_BATCH_EVENTS, timing={}))
    assert count == 50 * 31
    assert seconds < PUSH_LINGER_S + 1.0  # handed over once the stream paused, not a whole linger after it
