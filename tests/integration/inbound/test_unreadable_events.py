"""Events the inbound handlers cannot read are parked with the cause named, never skipped.

The intake checks every webhook before it records it, so an unreadable
``WebhookReceived`` or another type on the webhook topic means a bug or a newer
version wrote it: it waits in the dead-letter queue (and on its stream's
timeline) until it is fixed and redriven; the readable events of the same
batch are applied as usual.
"""

from __future__ import annotations

import pytest

from libs.events.dlq import DeadLetterQueue
from libs.events.envelope import NewEvent
from services.inbound.handlers import CONSUMER_NAME
from services.inbound.redrive import make_redriver
from services.inbound.webhook_events import WEBHOOK_RECEIVED
from tests.integration.operations.harness import CONNECTION, SyncHarness, commit
from tests.integration.operations.harness import sync as sync  # the fixture


async def test_unreadable_and_unknown_events_are_parked_with_the_reason_and_the_rest_applies(sync: SyncHarness) -> None:
    kleer_id = await sync.kleer.clients.create({"name": "Grebbestad Fisk AB", "currency-type": "SEK"})
    await sync.sync(["client"])
    company = sync.company_of(kleer_id)
    sync.hubspot_sim.ui_edit("companies", company.id, {"name": "Grebbestad Fisk & Skaldjur AB"})
    readable = [e for e in await sync.record_webhooks() if e.type == WEBHOOK_RECEIVED]
    assert readable
    broken, unknown = f"{CONNECTION}/hubspot-company/77", f"{CONNECTION}/hubspot-company/78"
    await sync.store.append(broken, [NewEvent(WEBHOOK_RECEIVED, {"objectId": "not a number"})])
    await sync.store.append(unknown, [NewEvent("WebhookReplayed", {"objectId": 78})])
    events = [*readable, *await sync.store.read_stream(broken), *await sync.store.read_stream(unknown)]

    await commit(sync.store, await sync.handlers.handle(events))

    client = await sync.kleer.clients.get(kleer_id)
    assert client["name"] == "Grebbestad Fisk & Skaldjur AB"  # the readable event of the batch applied
    dlq = DeadLetterQueue(sync.store)
    parked = {e.record: e for e in await dlq.list(source=CONSUMER_NAME)}
    assert set(parked) == {"hubspot:company:77", "hubspot:company:78"}
    assert parked["hubspot:company:77"].reason.startswith("recorded webhook event unreadable")
    assert "unknown event type WebhookReplayed" in parked["hubspot:company:78"].reason
    assert [e.type for e in await sync.store.read_stream(broken)] == [WEBHOOK_RECEIVED, "DeadLettered"]

    # A redrive before the fix fails with the same reason and leaves the entry open.
    redrivers = {CONSUMER_NAME: make_redriver(sync.handlers, sync.store)}
    with pytest.raises(ValueError, match="unknown event type WebhookReplayed"):
        await dlq.redrive(parked["hubspot:company:78"].id, redrivers, "user:ops")
    entry = await dlq.get(parked["hubspot:company:78"].id)
    assert entry is not None and entry.status == "open"
