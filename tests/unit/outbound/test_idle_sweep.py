"""The pusher's idle chore (its sweep of waiting associations) runs soon after work and backs off while idle."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from libs.events.consumer import ConsumerConfig, HandlerResult
from services.outbound.consumer import BatchingConsumer


async def _nothing(events: Any) -> HandlerResult:
    return HandlerResult()


def _consumer(found: list[int | Exception], calls: list[float]) -> BatchingConsumer:
    answers = iter(found)

    async def sweep() -> int:
        calls.append(time.monotonic())
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return BatchingConsumer(
        SimpleNamespace(pool=None),  # type: ignore[arg-type]
        _nothing,
        ConsumerConfig("pusher", ["t"], "127.0.0.1:1"),
        None,  # type: ignore[arg-type]
        on_idle=sweep,
        idle_interval=4.0,
        idle_first=0.5,
    )


async def test_the_sweep_backs_off_while_it_finds_nothing_and_comes_back_soon_once_it_finds_some() -> None:
    calls: list[float] = []
    consumer = _consumer([0, 0, 0, 0, 2, 0], calls)
    consumer._idle_wait = consumer.idle_first  # as after a batch
    waits = []
    for _ in range(6):
        consumer._last_idle = float("-inf")  # due
        await consumer._maybe_idle()
        waits.append(consumer._idle_wait)
    assert len(calls) == 6
    assert waits == [1.0, 2.0, 4.0, 4.0, 0.5, 1.0]


async def test_the_sweep_waits_its_turn_and_a_failing_sweep_only_backs_off() -> None:
    calls: list[float] = []
    consumer = _consumer([RuntimeError("the database went away")], calls)
    await consumer._maybe_idle()  # idle_interval has not passed since the start
    assert calls == []
    consumer._last_idle = time.monotonic() - 4.0
    await consumer._maybe_idle()
    assert len(calls) == 1 and consumer._idle_wait == 4.0
    await consumer._maybe_idle()  # just ran
    assert len(calls) == 1
