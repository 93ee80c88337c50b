from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from libs.events.envelope import RecordedEvent
from libs.events.kafka import partition_for
from services.topics import INBOUND_WEBHOOKS, OUTBOUND_CHANGES, make_router, route_topic


def _event(event_type: str) -> RecordedEvent:
    return RecordedEvent(1, uuid4(), "c/kleer-client/1", 1, event_type, {}, {}, datetime.now(UTC))


def test_kleer_changes_go_to_the_pusher_and_webhooks_to_the_handlers() -> None:
    assert route_topic("KleerClientChanged") == OUTBOUND_CHANGES
    assert route_topic("KleerLineItemRemoved") == OUTBOUND_CHANGES
    assert route_topic("WebhookReceived") == INBOUND_WEBHOOKS
    assert route_topic("HubSpotCompanyUpserted") is None  # audit-only fact
    assert make_router("acme")(_event("KleerInvoiceChanged")) == "acme.outbound.changes"  # type: ignore[operator]


def test_a_stream_always_maps_to_the_same_partition() -> None:
    assert {partition_for("c/kleer-client/42", 4) for _ in range(10)} == {partition_for("c/kleer-client/42", 4)}
    assert len({partition_for(f"c/kleer-client/{i}", 4) for i in range(100)}) == 4
