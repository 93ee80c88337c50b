"""Planning a batch of webhook events: coalescing, echoes, triggers, deletions and merges."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime
from typing import Any

from libs.events.envelope import RecordedEvent
from libs.mapping.triggers import trigger_properties
from services.inbound.planning import (
    Action,
    decide,
    drop_echoes,
    group_batch,
    merge_survivor,
    merged_away,
    plan_batch,
)
from services.inbound.webhook_events import WebhookEvent

APP = 1234
TRIGGERS = {"companies": set(trigger_properties("client")), "projects": set(trigger_properties("project"))}
_positions = itertools.count(1)


def _event(object_id: int = 1, kind: str = "company.propertyChange", **raw: Any) -> tuple[RecordedEvent, WebhookEvent]:
    data = {"eventId": next(_positions), "subscriptionType": kind, "portalId": 1, "objectId": object_id,
            "occurredAt": raw.pop("occurredAt", 1000), **raw}
    event = WebhookEvent.from_data(data)
    recorded = RecordedEvent(next(_positions), uuid.uuid4(), event.stream("c"), 1, "WebhookReceived", data, {},
                             datetime.now(UTC))
    return recorded, event


def test_events_of_one_record_coalesce_and_keep_the_latest_value_per_property() -> None:
    batch = [
        _event(propertyName="name", propertyValue="B", occurredAt=2000),
        _event(propertyName="name", propertyValue="A", occurredAt=1000),  # late delivery of an older change
        _event(2, propertyName="phone", propertyValue="1"),
    ]
    work, ignored = group_batch(batch, APP)
    assert ignored == 0
    by_id = {w.hubspot_id: w for w in work}
    assert [(c.property, c.value) for c in by_id["1"].changes] == [("name", "B")]
    assert by_id["1"].cause is batch[1][0]  # the latest recorded event causes the outcome


def test_other_objects_are_ignored_and_projects_kept() -> None:
    batch = [_event(kind="deal.propertyChange", propertyName="amount", propertyValue="1"),
             _event(kind="object.propertyChange", objectTypeId="0-53", propertyName="x", propertyValue="1"),
             _event(kind="object.propertyChange", objectTypeId="0-970", propertyName="hs_name", propertyValue="P")]
    decisions = plan_batch(batch, APP, TRIGGERS)
    assert [(d.work.hubspot_object, d.action) for d in decisions] == [("projects", Action.SYNC)]


def test_non_trigger_alone_is_skipped_and_with_a_trigger_synced() -> None:
    [alone] = plan_batch([_event(propertyName="kleer_contact", propertyValue="x")], APP, TRIGGERS)
    assert (alone.action, alone.reason) == (Action.SKIP, "no_trigger")
    [both] = plan_batch([_event(5, propertyName="kleer_contact", propertyValue="x"),
                         _event(5, propertyName="zip", propertyValue="1")], APP, TRIGGERS)
    assert both.action is Action.SYNC and both.triggers == ("zip",)


def test_our_own_integration_writes_are_echoes() -> None:
    [echo] = plan_batch([_event(propertyName="name", propertyValue="x", changeSource="INTEGRATION",
                                sourceId=str(APP))], APP, TRIGGERS)
    assert (echo.action, echo.reason) == (Action.SKIP, "echo")
    [other_app] = plan_batch([_event(propertyName="name", propertyValue="x", changeSource="INTEGRATION",
                                     sourceId="999")], APP, TRIGGERS)
    assert other_app.action is Action.SYNC


def test_own_write_log_echoes_are_dropped() -> None:
    [work], _ = group_batch([_event(propertyName="name", propertyValue="x")], APP)
    cleaned = drop_echoes(work, {"name"})
    assert decide(cleaned, TRIGGERS["companies"]).reason == "echo"


def test_deletion_wins_and_creation_syncs() -> None:
    [deleted] = plan_batch([_event(propertyName="name", propertyValue="x"), _event(kind="company.deletion")],
                           APP, TRIGGERS)
    assert deleted.action is Action.DELETE
    [created] = plan_batch([_event(9, kind="company.creation")], APP, TRIGGERS)
    assert created.action is Action.SYNC and created.work.created


def test_merge_survivor_and_merged_away() -> None:
    _, event = _event(10, kind="company.merge", primaryObjectId=10, mergedObjectIds=[11, 12], newObjectId=13)
    assert merge_survivor(event) == "13"
    assert merged_away(event) == ["10", "11", "12"]
    _, plain = _event(10, kind="company.merge", primaryObjectId=10, mergedObjectIds=[11])
    assert (merge_survivor(plain), merged_away(plain)) == ("10", ["11"])
