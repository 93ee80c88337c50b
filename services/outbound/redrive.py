"""DLQ redrivers of the outbound flow, for ``kleer-sync dlq redrive`` and the admin pages.

Sources and what a redrive does:

- ``outbound-pusher``: re-push the latest snapshot (or removal) of the record from its
  event stream, forced, and record the outcome events; raises if HubSpot still refuses it.
- ``outbound-poller``: read the record from Kleer again and map it; if it maps now, its
  ``Kleer...Changed`` event is recorded (the pusher takes it from there); raises if it
  still cannot be mapped.

Two shapes, same behaviour:

- ``pusher_redriver(settings)`` / ``poller_redriver(settings)``: async context managers
  yielding a redriver that keeps its connections open for many entries (the shape of
  ``services.operations.deadletters.REDRIVER_FACTORIES``:
  ``"outbound-pusher": "services.outbound.redrive:pusher_redriver"``,
  ``"outbound-poller": "services.outbound.redrive:poller_redriver"``).
- ``redrive_outbound(entry)`` / ``redrive_poll(entry)``: one call, settings from the
  environment, connections opened and closed per call (``REDRIVERS`` maps the sources to them).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from libs.config import Settings, load_settings
from libs.events.dlq import DeadLetter
from services.outbound.app import outbound_runtime
from services.outbound.poller import POLLER_SOURCE
from services.outbound.pusher import PUSHER_SOURCE

Redriver = Callable[[DeadLetter], Awaitable[None]]


@contextlib.asynccontextmanager
async def pusher_redriver(settings: Settings) -> AsyncIterator[Redriver]:
    async with outbound_runtime(settings, kleer=False, hubspot=True) as runtime:
        yield runtime.pusher().redrive


@contextlib.asynccontextmanager
async def poller_redriver(settings: Settings) -> AsyncIterator[Redriver]:
    async with outbound_runtime(settings, kleer=True, hubspot=False) as runtime:
        yield runtime.poller().redrive


async def redrive_outbound(entry: DeadLetter) -> None:
    """Redrive one ``outbound-pusher`` entry (settings from the environment)."""
    async with pusher_redriver(load_settings(required=["DATABASE_URL", "HUBSPOT_ACCESS_TOKEN"])) as redrive:
        await redrive(entry)


async def redrive_poll(entry: DeadLetter) -> None:
    """Redrive one ``outbound-poller`` entry (settings from the environment)."""
    settings = load_settings(required=["DATABASE_URL", "KLEER_TOKEN", "KLEER_COMPANY_ID"])
    async with poller_redriver(settings) as redrive:
        await redrive(entry)


REDRIVERS: Mapping[str, Redriver] = {PUSHER_SOURCE: redrive_outbound, POLLER_SOURCE: redrive_poll}
