"""Redrive of dead letters parked by the inbound handlers (source ``inbound-handlers``).

A parked entry names the recorded ``WebhookReceived`` event that caused it.
Redrive reads that event from the log and runs it through the handlers again
(``force``: the record is synced even if that one event holds no trigger), so
the *current* HubSpot record is applied. The outcome events and bookkeeping
commit in one transaction; a failure that persists raises, and the DLQ records
the failed attempt.
"""

from __future__ import annotations

from libs.events.dlq import DeadLetter, Redriver
from libs.events.store import PostgresEventStore
from services.inbound.deps import InboundDeps
from services.inbound.handlers import CONSUMER_NAME, InboundHandlers

REDRIVE_SOURCE = CONSUMER_NAME


def make_redriver(handlers: InboundHandlers, store: PostgresEventStore) -> Redriver:
    async def redrive(entry: DeadLetter) -> None:
        if entry.event_id is None:
            raise LookupError(f"dead letter {entry.id} names no webhook event to redrive")
        event = await store.get(entry.event_id)
        if event is None:
            raise LookupError(f"event {entry.event_id} of dead letter {entry.id} is not in the log")
        await (await handlers.apply([event], raise_failures=True, force=True)).commit(store)

    return redrive


def redrivers(deps: InboundDeps) -> dict[str, Redriver]:
    """``{source: redriver}`` for ``DeadLetterQueue.redrive`` (deps built with ``bootstrap(clients=True)``)."""
    return {REDRIVE_SOURCE: make_redriver(InboundHandlers.from_deps(deps), deps.store)}
