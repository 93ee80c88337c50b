"""Running a long-lived process: components, signals, graceful shutdown.

A component has ``run()`` (until stopped) and ``stop()`` (ask it to finish:
stop intake, finish or hand back the batch in flight, commit checkpoints).
``serve`` runs components side by side with the health server, turns SIGTERM
and SIGINT into ``stop()`` on every component, and waits up to the grace
period before cancelling what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol, TypeVar

from libs.observability.health import HealthServer
from libs.observability.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the event loop ``EVENT_LOOP`` names: asyncio (default) or uvloop.

    uvloop makes one database round trip cheaper (a single-event append 546 ->
    463 us on one machine), but in the service benchmarks it bought nothing:
    webhook intake 6,629-7,483 requests/s on uvloop against 6,324-7,472 on
    asyncio, outbound end-to-end within the noise. So the standard loop is the
    default, and uvloop a choice (``pip install 'kleer-sync[uvloop]'``).
    """
    from libs.config import ConfigError, event_loop_choice

    try:
        choice = event_loop_choice()
    except ConfigError:
        main.close()
        raise
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            main.close()
            raise ConfigError(
                ["EVENT_LOOP=uvloop but uvloop is not installed: pip install 'kleer-sync[uvloop]', or unset EVENT_LOOP"]
            ) from None
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)

DEFAULT_GRACE_SECONDS = 25.0


class Component(Protocol):
    async def run(self) -> None: ...

    async def stop(self) -> None: ...


async def serve(
    components: Sequence[Component],
    health: HealthServer | None = None,
    grace: float = DEFAULT_GRACE_SECONDS,
    stop_event: asyncio.Event | None = None,
) -> None:
    """Run until a signal (or ``stop_event``), then stop everything within ``grace`` seconds.

    If any component fails, the others are stopped too and the error propagates,
    so the orchestrator restarts the process.
    """
    stopping = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)
    if health is not None:
        await health.start()
    tasks = [asyncio.create_task(c.run(), name=type(c).__name__) for c in components]
    waiter = asyncio.create_task(stopping.wait())
    failure: BaseException | None = None
    try:
        done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception() is not None:
                failure = task.exception()
                log.error(
                    "component failed; stopping the process", component=task.get_name(), error=repr(failure)
                )
        log.info("stopping", grace_seconds=grace)
        for component in components:
            with contextlib.suppress(Exception):
                await component.stop()
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            log.warning(
                "component did not stop within the grace period; cancelling", component=task.get_name()
            )
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
    finally:
        waiter.cancel()
        if health is not None:
            await health.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    if failure is not None:
        raise failure
