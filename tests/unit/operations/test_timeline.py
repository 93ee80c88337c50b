"""The audit timeline's pure core: steps, field changes from consecutive snapshots, causation chains."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from libs.events.envelope import RecordedEvent
from services.operations.timeline import (
    FieldChange,
    Step,
    build_timeline,
    causation_chain,
    field_changes,
    step_of,
)

KLEER = "acme/kleer-client/7"
HUBSPOT = "acme/hubspot-company/900"
_positions = itertools.count(1)
_start = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def event(stream: str, type_: str, data: dict[str, Any], cause: RecordedEvent | None = None, **meta: Any) -> RecordedEvent:
    position = next(_positions)
    metadata = dict(meta)
    if cause is not None:
        metadata["causation_id"] = str(cause.event_id)
        metadata["correlation_id"] = cause.metadata.get("correlation_id") or str(cause.event_id)
    return RecordedEvent(position, uuid.uuid4(), stream, position, type_, data, metadata, _start + timedelta(seconds=position))


def test_event_types_map_to_the_steps_an_operator_reads() -> None:
    assert step_of("KleerClientChanged") is Step.POLL
    assert step_of("KleerInvoiceRemoved") is Step.POLL
    assert step_of("KleerClientPushRequested") is Step.PUSH_REQUEST
    assert step_of("HubSpotCompanyUpserted") is Step.PUSH
    assert step_of("HubSpotLineItemArchived") is Step.PUSH
    assert step_of("WebhookReceived") is Step.WEBHOOK
    assert step_of("UpdateKleerClient") is Step.COMMAND
    assert step_of("KleerClientUpdated") is Step.KLEER_WRITE
    assert step_of("SyncConflict") is Step.CONFLICT
    assert step_of("DeadLettered") is Step.DEAD_LETTER
    assert step_of("DeadLetterRedriven") is Step.DEAD_LETTER
    assert step_of("ReplayStarted") is Step.REPLAY
    assert step_of("HubSpotCompaniesMerged") is Step.HUBSPOT
    assert step_of("SomethingNew") is Step.OTHER


def test_field_changes_lists_only_differing_fields_old_to_new() -> None:
    assert field_changes({"name": "A", "phone": "1"}, {"name": "B", "phone": "1", "city": "Umeå"}) == (
        FieldChange("city", None, "Umeå"),
        FieldChange("name", "A", "B"),
    )
    assert field_changes(None, {"name": "A"}) == (FieldChange("name", None, "A"),)
    assert field_changes({"phone": ""}, {"phone": None, "zip": ""}) == ()  # empty is unset


def test_consecutive_snapshots_of_a_stream_give_the_changed_fields() -> None:
    first = event(KLEER, "KleerClientChanged", {"kind": "client", "kleer_id": "7", "properties": {"name": "Acme", "phone": "1"}}, actor="poller")
    second = event(KLEER, "KleerClientChanged", {"kind": "client", "kleer_id": "7", "properties": {"name": "Acme AB", "phone": "1"}}, actor="poller")
    entries = build_timeline([second, first], [KLEER])
    assert [e.position for e in entries] == [first.position, second.position]
    assert entries[0].changes == (FieldChange("name", None, "Acme"), FieldChange("phone", None, "1"))
    assert entries[1].changes == (FieldChange("name", "Acme", "Acme AB"),)
    assert entries[1].actor == "poller"


def test_webhook_old_value_is_what_hubspot_last_got_and_kleer_write_shows_both_sides() -> None:
    changed = event(KLEER, "KleerClientChanged", {"kind": "client", "kleer_id": "7", "properties": {"name": "Acme"}})
    pushed = event(KLEER, "HubSpotCompanyUpserted", {"hubspot_object": "companies", "hubspot_id": "900", "created": True, "properties": {"name": "Acme"}}, cause=changed)
    hook = event(HUBSPOT, "WebhookReceived", {"subscriptionType": "company.propertyChange", "propertyName": "name", "propertyValue": "Acme Nord"}, actor="webhook")
    conflict = event(KLEER, "SyncConflict", {"policy": "hubspot", "winner": "hubspot", "fields": {"name": {"kleer": "Acme Syd", "hubspot": "Acme Nord"}}}, cause=hook)
    wrote = event(KLEER, "KleerClientUpdated", {"hubspot_object": "companies", "hubspot_id": "900", "changed_properties": ["name"]}, cause=hook)
    entries = build_timeline([changed, pushed, hook, conflict, wrote], [KLEER, HUBSPOT])
    by_type = {e.type: e for e in entries}
    assert by_type["HubSpotCompanyUpserted"].summary == "created companies 900"
    assert by_type["WebhookReceived"].changes == (FieldChange("name", "Acme", "Acme Nord"),)
    assert by_type["SyncConflict"].changes == (FieldChange("name", "Acme Syd", "Acme Nord"),)
    assert "hubspot wins" in by_type["SyncConflict"].summary
    assert by_type["KleerClientUpdated"].changes == (FieldChange("name", "Acme", "Acme Nord"),)
    assert [link.type for link in by_type["KleerClientUpdated"].chain] == ["WebhookReceived"]


def test_an_upsert_that_names_its_change_events_snapshot_shows_that_snapshot_as_written() -> None:
    first = event(KLEER, "KleerClientChanged", {"kind": "client", "kleer_id": "7", "properties": {"name": "Acme", "phone": "1"}})
    created = event(KLEER, "HubSpotCompanyUpserted", {"hubspot_object": "companies", "hubspot_id": "900", "created": True, "properties_from": str(first.event_id)}, cause=first)
    second = event(KLEER, "KleerClientChanged", {"kind": "client", "kleer_id": "7", "properties": {"name": "Acme AB", "phone": "1"}})
    updated = event(KLEER, "HubSpotCompanyUpserted", {"hubspot_object": "companies", "hubspot_id": "900", "properties_from": str(second.event_id), "written": ["name"]}, cause=second)
    hook = event(HUBSPOT, "WebhookReceived", {"subscriptionType": "company.propertyChange", "propertyName": "name", "propertyValue": "Acme Nord"})
    by_position = {e.position: e for e in build_timeline([first, created, second, updated, hook], [KLEER, HUBSPOT])}
    assert by_position[created.position].changes == (FieldChange("name", None, "Acme"), FieldChange("phone", None, "1"))
    assert by_position[updated.position].changes == (FieldChange("name", "Acme", "Acme AB"),)
    assert by_position[hook.position].changes == (FieldChange("name", "Acme AB", "Acme Nord"),)  # what HubSpot got


def test_causation_chain_walks_back_across_streams_and_stops_at_unknown_causes() -> None:
    root = event(HUBSPOT, "WebhookReceived", {})
    command = event(KLEER, "UpdateKleerClient", {}, cause=root)
    outcome = event(KLEER, "KleerClientUpdated", {}, cause=command)
    known = {str(e.event_id): e for e in (root, command, outcome)}
    chain = causation_chain(outcome, known)
    assert [(link.type, link.stream) for link in chain] == [("UpdateKleerClient", KLEER), ("WebhookReceived", HUBSPOT)]
    orphan = event(KLEER, "KleerClientUpdated", {}, causation_id=str(uuid.uuid4()))
    assert [link.type for link in causation_chain(orphan, known)] == ["?"]


def test_events_outside_the_record_streams_are_marked_related() -> None:
    replay = event("acme/sync-replay/r1", "ReplayStarted", {"run_id": "r1"})
    pushed = event(KLEER, "HubSpotCompanyUpserted", {"hubspot_object": "companies", "hubspot_id": "9", "properties": {}}, cause=replay)
    entries = build_timeline([replay, pushed], [KLEER])
    assert [(e.type, e.related) for e in entries] == [("ReplayStarted", True), ("HubSpotCompanyUpserted", False)]
