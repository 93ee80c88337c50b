"""DLQ redrivers of the outbound flow, for ``kleer-sync dlq redrive`` and the admin pages.

``REDRIVERS`` maps a DLQ source to its redriver (``DeadLetterQueue.redrive(entry_id,
redrivers=REDRIVERS, actor=...)``):

- ``outbound-pusher`` -> ``redrive_outbound(entry)``: re-pushes the latest snapshot (or
  removal) of the record from its event stream, forced, and records the outcome events;
  raises if HubSpot still refuses it.
- ``outbound-poller`` -> ``redrive_poll(entry)``: reads the record from Kleer again and
  maps it; if it maps now, its ``Kleer...Changed`` event is recorded (the pusher takes it
  from there); raises if it still cannot be mapped.

Both read their configuration from the environment (``DATABASE_URL``, the HubSpot or
Kleer credentials) and open and close their own connections per call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from libs.config import load_settings
from libs.events.dlq import DeadLetter
from services.outbound.app import outbound_runtime
from services.outbound.poller import POLLER_SOURCE
from services.outbound.pusher import PUSHER_SOURCE


async def redrive_outbound(entry: DeadLetter) -> None:
    settings = load_settings(required=["DATABASE_URL", "HUBSPOT_ACCESS_TOKEN"])
    async with outbound_runtime(settings, kleer=False, hubspot=True) as runtime:
        await runtime.pusher().redrive(entry)


async def redrive_poll(entry: DeadLetter) -> None:
    settings = load_settings(required=["DATABASE_URL", "KLEER_TOKEN", "KLEER_COMPANY_ID"])
    async with outbound_runtime(settings, kleer=True, hubspot=False) as runtime:
        await runtime.poller().redrive(entry)


REDRIVERS: Mapping[str, Callable[[DeadLetter], Awaitable[None]]] = {
    PUSHER_SOURCE: redrive_outbound,
    POLLER_SOURCE: redrive_poll,
}
