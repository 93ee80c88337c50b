"""The dead-letter queue for operators: filters, and redrive through the services' own redrivers.

Redrive runs an entry again through the normal path of the service that
parked it; each service exports its redriver (``services.inbound.redrive``
for ``inbound-handlers``, the outbound pusher's for ``outbound-pusher``).
Those need the service's clients (Kleer, HubSpot), so ``ServiceRedrivers``
opens a source's redriver only when an entry of that source is redriven, and
closes what it opened at the end. ``DeadLetterQueue.redrive`` records the
outcome either way (``DeadLetterRedriven`` or ``DeadLetterRedriveFailed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from libs.config import Settings
from libs.events.dlq import DeadLetter, DeadLetterQueue, Redriver

STATUSES = ("open", "redriven", "discarded", "all")

RedriverFactory = Callable[[Settings], AbstractAsyncContextManager[Redriver]]
"""Builds one source's redriver from the settings (starting the clients it needs) for a ``with`` block."""


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which entries to list: ``status="all"`` lists every status; ``before_id`` pages back."""

    status: str = "open"
    source: str | None = None
    record: str | None = None
    connection: str | None = None
    limit: int = 50
    before_id: int | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; choose one of {', '.join(STATUSES)}")
        if not 1 <= self.limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")

    async def list(self, dlq: DeadLetterQueue) -> list[DeadLetter]:
        return await dlq.list(
            status=None if self.status == "all" else self.status,
            source=self.source or None,
            record=self.record or None,
            connection=self.connection or None,
            limit=self.limit,
            before_id=self.before_id,
        )


@contextlib.asynccontextmanager
async def inbound_redriver(settings: Settings) -> AsyncIterator[Redriver]:
    """The inbound handlers' redriver (source ``inbound-handlers``), with its Kleer and HubSpot clients."""
    from services.inbound.deps import bootstrap
    from services.inbound.redrive import REDRIVE_SOURCE, redrivers

    async with bootstrap(settings, clients=True, pool_size=2) as deps:
        yield redrivers(deps)[REDRIVE_SOURCE]


def _factory(dotted: str) -> RedriverFactory:
    module_name, _, attr = dotted.partition(":")
    factory: RedriverFactory = getattr(importlib.import_module(module_name), attr)
    return factory


#: source -> "module:factory" of the redrivers the services export.
REDRIVER_FACTORIES: Mapping[str, str] = {
    "inbound-handlers": "services.operations.deadletters:inbound_redriver",
    "outbound-pusher": "services.outbound.redrive:pusher_redriver",
    "outbound-poller": "services.outbound.redrive:poller_redriver",
}


class NoRedriver(LookupError):
    """No service exports a redrive path for this source."""


class ServiceRedrivers:
    """The services' redrivers, each opened on first use; ``aclose`` closes what was opened."""

    def __init__(self, settings: Settings, factories: Mapping[str, RedriverFactory | str] | None = None) -> None:
        self.settings = settings
        # "module:function" entries are imported on first use: a service that cannot be imported
        # breaks only its own redrive, not the process that lists the queue.
        self.factories: dict[str, RedriverFactory | str] = dict(REDRIVER_FACTORIES if factories is None else factories)
        self._opened: dict[str, Redriver] = {}
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()

    @property
    def sources(self) -> list[str]:
        return sorted(self.factories)

    async def prepare(self, source: str) -> dict[str, Redriver]:
        """Open ``source``'s redriver (if not yet open) and return the mapping ``DeadLetterQueue.redrive`` takes.

        Raises ``NoRedriver`` for an unknown source, and the service's own error
        (a ``ConfigError`` naming missing settings) when it cannot start.
        """
        if source not in self.factories:
            known = ", ".join(self.sources) or "none"
            raise NoRedriver(f"no redrive path for source {source!r}; sources with one: {known}")
        async with self._lock:
            if source not in self._opened:
                factory = self.factories[source]
                if isinstance(factory, str):
                    factory = _factory(factory)
                self._opened[source] = await self._stack.enter_async_context(factory(self.settings))
        return dict(self._opened)

    async def redrive(self, dlq: DeadLetterQueue, entry: DeadLetter, actor: str) -> DeadLetter:
        """Redrive one entry; raises with the reason when it still fails (the DLQ recorded the attempt)."""
        return await dlq.redrive(entry.id, await self.prepare(entry.source), actor)

    async def aclose(self) -> None:
        await self._stack.aclose()
        self._opened.clear()

    async def __aenter__(self) -> ServiceRedrivers:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


@dataclass(frozen=True)
class RedriveOutcome:
    entry_id: int
    record: str
    ok: bool
    message: str


async def redrive_entries(
    dlq: DeadLetterQueue, redrivers: ServiceRedrivers, entries: Sequence[DeadLetter], actor: str
) -> list[RedriveOutcome]:
    """Redrive each entry in turn; one that still fails does not stop the others."""
    outcomes = []
    for entry in entries:
        try:
            await redrivers.redrive(dlq, entry, actor)
        except Exception as exc:
            outcomes.append(RedriveOutcome(entry.id, entry.record, False, str(exc)))
        else:
            outcomes.append(RedriveOutcome(entry.id, entry.record, True, "redriven"))
    return outcomes
