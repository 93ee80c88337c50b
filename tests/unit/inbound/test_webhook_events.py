"""Parsing HubSpot webhook bodies: every problem is a MalformedWebhook, never another exception."""

from __future__ import annotations

import json
import time
import uuid

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.hubspot.signatures import SignatureError, verify_request
from services.inbound.webhook_events import (
    MAX_INT,
    WEBHOOK_NAMESPACE,
    MalformedWebhook,
    WebhookEvent,
    parse_webhook_body,
    record_kind,
    webhook_event_id,
)

EVENT = {"eventId": 7, "subscriptionType": "company.propertyChange", "portalId": 62515, "objectId": 99,
         "propertyName": "name", "propertyValue": "Ålands Bygg AB", "changeSource": "CRM_UI", "extra": {"x": 1}}


def test_hubspot_published_v3_vector_verifies() -> None:
    headers = {"X-HubSpot-Signature-v3": "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y=",
               "X-HubSpot-Request-Timestamp": "1693657560000"}
    verify_request("yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy", "POST", "https://www.example.com/webhook_uri",
                   b"{'example_field':'example_value'}", headers, 1693657560000 + 1000)
    with pytest.raises(SignatureError):
        verify_request("yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy", "POST", "https://www.example.com/webhook_uri",
                       b"{'example_field':'example_value'}", headers, int(time.time() * 1000))


def test_a_valid_batch_keeps_known_fields_and_drops_the_rest() -> None:
    [event] = parse_webhook_body(orjson.dumps([EVENT]))
    assert (event.event_id, event.object_kind, event.change, event.property_name) == (7, "company", "propertyChange", "name")
    assert "extra" not in event.raw
    assert event.stream("acme") == "acme/hubspot-company/99"
    assert event.to_new_event(1).event_id == webhook_event_id(62515, 7)


def test_recorded_event_ids_are_uuid5_of_portal_and_hubspot_event_id() -> None:
    # Stored ids must never change between versions: a redelivery after an upgrade is still a duplicate.
    assert webhook_event_id(62515, 7) == uuid.uuid5(WEBHOOK_NAMESPACE, "62515:7")
    assert webhook_event_id(1, 2**63 - 1) == uuid.uuid5(WEBHOOK_NAMESPACE, f"1:{2**63 - 1}")


def test_stream_names_are_those_of_the_record() -> None:
    for kind, type_id in [("company", None), ("object", "0-970"), ("object", "2-123"), ("deal", None)]:
        body = {**EVENT, "subscriptionType": f"{kind}.propertyChange"} | ({"objectTypeId": type_id} if type_id else {})
        [event] = parse_webhook_body(orjson.dumps([body]))
        assert event.stream("acme") == event.record().stream("acme")


def test_recorded_data_parses_back_to_the_same_event() -> None:
    [event] = parse_webhook_body(orjson.dumps([EVENT]))
    again = WebhookEvent.from_data(event.to_new_event(123).data)
    assert again == event


def test_projects_are_named_by_type_id() -> None:
    body = [{**EVENT, "subscriptionType": "object.propertyChange", "objectTypeId": "0-970"}]
    [event] = parse_webhook_body(orjson.dumps(body))
    assert event.stream("c") == "c/hubspot-project/99"
    assert record_kind("2-123") == "object-2-123"


@pytest.mark.parametrize(
    "change",
    [{"eventId": -1}, {"eventId": MAX_INT + 1}, {"eventId": True}, {"portalId": 1.5}, {"subscriptionType": "nope"},
     {"propertyName": "a b"}, {"propertyValue": "x" * 70_000}, {"objectTypeId": "project"}, {"sourceId": ["a"]},
     {"changeSource": "x" * 201}, {"subscriptionType": "company.property change"}, {"propertyName": ""}],
)
def test_wrong_types_and_ranges_are_malformed(change: dict[str, object]) -> None:
    with pytest.raises(MalformedWebhook):
        parse_webhook_body(orjson.dumps([{**EVENT, **change}]) if "eventId" not in change or change["eventId"] <= MAX_INT
                           else json.dumps([{**EVENT, **change}]).encode())


def test_nul_in_text_is_replaced_not_refused() -> None:
    [event] = parse_webhook_body(orjson.dumps([{**EVENT, "propertyValue": "a\x00b"}]))
    assert event.property_value == "a\ufffdb"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_either_parse_or_are_malformed(body: bytes) -> None:
    try:
        parse_webhook_body(body)
    except MalformedWebhook:
        pass


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(list(EVENT)), values, max_size=8), max_size=4))
def test_any_json_either_parses_or_is_malformed(document: list[dict[str, object]]) -> None:
    try:
        body = json.dumps(document).encode()
    except (ValueError, TypeError):
        return
    try:
        parse_webhook_body(body)
    except MalformedWebhook:
        pass
