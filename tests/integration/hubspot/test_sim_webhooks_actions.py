"""Contract tests of webhook delivery and workflow actions: signed, batched, retried, duplicated, shuffled."""

from __future__ import annotations

import time

from libs.hubspot.signatures import verify_request
from tests.fixtures.hubspot_sim import HubSpotSim, WebhookSink
from tests.integration.hubspot.conftest import Api

UPSERT = "/crm/v3/objects/companies/batch/upsert"


async def test_webhook_delivery_is_signed_v3_and_verifies(
    api: Api, kleer_ids: HubSpotSim, hubspot_webhook_sink: WebhookSink
) -> None:
    sink = hubspot_webhook_sink
    kleer_ids.configure_webhooks(sink.url)
    await api.call("POST", UPSERT, {"inputs": [{"id": "k1", "idProperty": "kleer_id", "properties": {"name": "A"}}]})
    assert await kleer_ids.drain_webhooks()
    request = sink.received[0]
    assert request.method == "POST" and request.headers["Content-Type"] == "application/json"
    verify_request(kleer_ids.client_secret, "POST", sink.url, request.body, request.headers,
                   now_ms=int(time.time() * 1000))
    events = request.json()
    assert isinstance(events, list) and 1 <= len(events) <= 100


async def test_signature_covers_the_public_url_behind_an_ingress(
    api: Api, kleer_ids: HubSpotSim, hubspot_webhook_sink: WebhookSink
) -> None:
    public = "https://sync.example.com/webhooks/hubspot?portal=1"
    kleer_ids.configure_webhooks(hubspot_webhook_sink.url, signed_url=public)
    kleer_ids.ui_create("companies", {"name": "X"})
    assert await kleer_ids.drain_webhooks()
    request = hubspot_webhook_sink.received[0]
    verify_request(kleer_ids.client_secret, "POST", public, request.body, request.headers,
                   now_ms=int(time.time() * 1000))


async def test_our_api_writes_echo_as_integration_with_our_app_id(
    api: Api, kleer_ids: HubSpotSim, hubspot_webhook_sink: WebhookSink
) -> None:
    kleer_ids.configure_webhooks(hubspot_webhook_sink.url)
    await api.call("POST", UPSERT, {"inputs": [{"id": "k1", "idProperty": "kleer_id",
                                                "properties": {"name": "Acme", "city": "Lund"}}]})
    assert await kleer_ids.drain_webhooks()
    events = hubspot_webhook_sink.events()
    kinds = sorted(e["subscriptionType"] for e in events)
    assert kinds.count("company.creation") == 1
    changed = {e["propertyName"]: e["propertyValue"] for e in events if e["subscriptionType"] == "company.propertyChange"}
    assert changed == {"name": "Acme", "city": "Lund", "kleer_id": "k1"}
    for event in events:
        assert event["changeSource"] == "INTEGRATION"
        assert event["sourceId"] == str(kleer_ids.app_id)
        assert event["appId"] == kleer_ids.app_id and event["portalId"] == kleer_ids.portal_id
        assert event["attemptNumber"] == 0 and isinstance(event["eventId"], int)
        assert isinstance(event["objectId"], int) and event["occurredAt"] > 0 and event["subscriptionId"]


async def test_ui_edit_sends_crm_ui_changes_only_for_changed_properties(
    api: Api, kleer_ids: HubSpotSim, hubspot_webhook_sink: WebhookSink
) -> None:
    record = kleer_ids.seed("companies", {"name": "Acme", "city": "Lund"})
    kleer_ids.configure_webhooks(hubspot_webhook_sink.url)
    status, _, _ = await api.call("POST", f"/_sim/ui-edit/companies/{record.id}",
                                  {"properties": {"name": "Acme AB", "city": "Lund"}})
    assert status == 200
    assert await kleer_ids.drain_webhooks()
    events = hubspot_webhook_sink.events()
    assert len(events) == 1
    assert events[0]["subscriptionType"] == "company.propertyChange"
    assert (events[0]["propertyName"], events[0]["propertyValue"]) == ("name", "Acme AB")
    assert events[0]["changeSource"] == "CRM_UI" and events[0]["sourceId"].startswith("userId:")


async def test_project_changes_arrive_as_object_events_with_type_id_0_970(
    kleer_ids: HubSpotSim, hubspot_webhook_sink: WebhookSink
) -> None:
    project = kleer_ids.seed("projects", {"hs_name": "Build"})
    kleer_ids.configure_webhooks(hubspot_webhook_sink.url)
    kleer_ids.ui_edit("projects", project.id, {"hs_name": "Build v2"})
    kleer_ids.sim.ui_delete("projects", str(project.id))
    assert await kleer_ids.drain_webhooks()
    events = hubspot_webhook_sink.events()
    assert [e["subscriptionType"] for e in events] == ["object.propertyChange", "object.deletion"]
    assert all(e["objectTypeId"] == "0-970" for e in events)


async def test_subscriptions_limit_what_is_sent(kleer_ids: HubSpotSim, hubspot_webhook_sink: WebhookSink) -> None:
    kleer_ids.configure_webhooks(hubspot_webhook_sink.url, subscriptions=[
        {"subscriptionType": "company.propertyChange", "propertyName": "name"}])
    record = kleer_ids.ui_create("companies", {"name": "A", "city": "Lund"})
    kleer_ids.ui_edit("companies", record.id, {"city": "Umeå"})
    kleer_ids.ui_edit("companies", record.id, {"name": "B"})
    assert await kleer_ids.drain_webhooks()
    assert [(e["propertyName"], e["propertyValue"]) for e in hubspot_webhook_sink.events()] == [
        ("name", "A"), ("name", "B")]


async def test_events_are_batched_at_most_100_per_request(
    api: Api, kleer_ids: HubSpotSim, hubspot_webhook_sink: WebhookSink
) -> None:
    kleer_ids.configure_webhooks(hubspot_webhook_sink.url, subscriptions=[
        {"subscriptionType": "company.creation"}])
    await api.call("POST", UPSERT, {"inputs": [{"id": f"k{i}", "idProperty": "kleer_id", "properties": {}}
                                               for i in range(100)]})
    await api.call("POST", UPSERT, {"inputs": [{"id": f"j{i}", "idProperty": "kleer_id", "properties": {}}
                                               for i in range(50)]})
    assert await kleer_ids.drain_webhooks()
    sizes = [len(r.json()) for r in hubspot_webhook_sink.received]
    assert sum(sizes) == 150 and max(sizes) <= 100 and len(sizes) >= 2


async def test_failed_delivery_is_retried_with_a_rising_attempt_number(
    kleer_ids: HubSpotSim, hubspot_webhook_sink: WebhookSink
) -> None:
    hubspot_webhook_sink.answer_with([500, 503])
    kleer_ids.configure_webhooks(hubspot_webhook_sink.url, retry_base_ms=100)  # 10 ms at the fixture's scale
    kleer_ids.ui_create("companies", {"name": "A"})
    assert await kleer_ids.drain_webhooks()
    attempts = [r.json()[0]["attemptNumber"] for r in hubspot_webhook_sink.received]
    assert attempts == [0, 1, 2]
    assert kleer_ids.sim.webhooks.stats["requests_ok"] == 1
    assert kleer_ids.delivered_events()[0]["attemptNumber"] == 2


async def test_a_slow_answer_counts_as_failed_and_is_retried(
    kleer_ids: HubSpotSim, hubspot_webhook_sink: WebhookSink
) -> None:
    hubspot_webhook_sink.delay_s = 0.2
    kleer_ids.configure_webhooks(hubspot_webhook_sink.url, timeout_s=0.05, retry_base_ms=100, max_attempts=2)
    kleer_ids.ui_create("companies", {"name": "A"})
    assert await kleer_ids.drain_webhooks()
    assert len(hubspot_webhook_sink.received) == 2
    assert kleer_ids.sim.webhooks.stats["batches_given_up"] == 1


async def test_duplicates_and_shuffling_can_be_switched_on(
    kleer_ids: HubSpotSim, hubspot_webhook_sink: WebhookSink
) -> None:
    kleer_ids.configure_webhooks(hubspot_webhook_sink.url, duplicate_rate=1.0, shuffle=True, batch_size=5)
    for i in range(20):
        kleer_ids.ui_create("deals", {"dealname": f"D{i}"})
    assert await kleer_ids.drain_webhooks()
    ids = [e["eventId"] for e in hubspot_webhook_sink.events()]
    assert len(ids) == 2 * len(set(ids))
    assert ids != sorted(ids)


async def test_workflow_action_call_is_signed_and_its_answer_recorded(
    api: Api, kleer_ids: HubSpotSim, hubspot_webhook_sink: WebhookSink
) -> None:
    deal = kleer_ids.seed("deals", {"dealname": "Big deal", "amount": "1000"})
    hubspot_webhook_sink.reply = {"outputFields": {"hs_execution_state": "BLOCK"}}
    status, invocation, _ = await api.call("POST", "/_sim/workflow-actions/invoke", {
        "url": hubspot_webhook_sink.url, "objectType": "DEAL", "objectId": deal.id,
        "propertiesToFetch": ["dealname", "amount"], "inputFields": {"invoice_template": "standard"},
        "workflowId": 77})
    assert status == 200 and invocation["status"] == 200
    assert invocation["response"] == {"outputFields": {"hs_execution_state": "BLOCK"}}
    request = hubspot_webhook_sink.received[0]
    verify_request(kleer_ids.client_secret, "POST", hubspot_webhook_sink.url, request.body, request.headers,
                   now_ms=int(time.time() * 1000))
    payload = request.json()
    assert payload["object"] == {"objectId": deal.id, "objectType": "DEAL",
                                 "properties": {"dealname": "Big deal", "amount": "1000"}}
    assert payload["origin"]["portalId"] == kleer_ids.portal_id
    assert payload["context"] == {"source": "WORKFLOWS", "workflowId": 77}
    assert payload["inputFields"] == {"invoice_template": "standard"}
    callback = payload["callbackId"]
    status, _, _ = await api.call("POST", f"/automation/v4/actions/callbacks/{callback}/complete",
                                  {"outputFields": {"hs_execution_state": "SUCCESS", "kleer_invoice_id": "55"}})
    assert status == 204
    assert kleer_ids.sim.actions.completions[callback] == [{"hs_execution_state": "SUCCESS", "kleer_invoice_id": "55"}]
    status, _, _ = await api.call("POST", "/automation/v4/actions/callbacks/unknown/complete",
                                  {"outputFields": {}})
    assert status == 404


async def test_workflow_action_is_retried_on_5xx_with_the_same_callback_id(
    kleer_ids: HubSpotSim, hubspot_webhook_sink: WebhookSink
) -> None:
    hubspot_webhook_sink.answer_with([503, 200])
    invocation = await kleer_ids.invoke_action(hubspot_webhook_sink.url, objectType="COMPANY", objectId=1,
                                               properties={"name": "A"}, max_attempts=3)
    assert [a["status"] for a in invocation.attempts] == [503, 200]
    assert len({r.json()["callbackId"] for r in hubspot_webhook_sink.received}) == 1


async def test_action_definitions_can_be_created_listed_and_updated(api: Api, hubspot_sim: HubSpotSim) -> None:
    app = hubspot_sim.app_id
    definition = {"actionUrl": "https://sync.example.com/actions/create-invoice", "objectTypes": ["DEAL"],
                  "inputFields": [], "labels": {"en": {"actionName": "Create Kleer invoice"}}, "published": True}
    status, created, _ = await api.call("POST", f"/automation/v4/actions/{app}", definition)
    assert status == 201 and created["id"]
    _, listed, _ = await api.call("GET", f"/automation/v4/actions/{app}")
    assert [d["id"] for d in listed["results"]] == [created["id"]]
    status, updated, _ = await api.call("PUT", f"/automation/v4/actions/{app}/{created['id']}",
                                        {"actionUrl": "https://sync.example.com/actions/v2"})
    assert status == 200 and updated["revisionId"] == "2"
    # HubSpot's developer API key works too, without a bearer token.
    status, _, _ = await api.call("GET", f"/automation/v4/actions/{app}?hapikey={hubspot_sim.developer_api_key}",
                                  headers={"Authorization": ""})
    assert status == 200


async def test_a_ui_merge_sends_one_merge_event_and_keeps_the_primary(
    api: Api, kleer_ids: HubSpotSim, hubspot_webhook_sink: WebhookSink
) -> None:
    primary = kleer_ids.seed("companies", {"name": "Acme", "kleer_id": "k1"})
    other = kleer_ids.seed("companies", {"name": "ACME AB", "city": "Lund", "kleer_id": "k2"})
    kleer_ids.configure_webhooks(hubspot_webhook_sink.url)
    status, merged, _ = await api.call("POST", "/_sim/ui-merge/companies",
                                       {"primaryObjectId": primary.id, "objectIdToMerge": other.id})
    assert status == 200
    assert merged["properties"]["city"] == "Lund" and merged["properties"]["name"] == "Acme"
    assert merged["properties"]["hs_merged_object_ids"] == str(other.id)
    assert await kleer_ids.drain_webhooks()
    [event] = hubspot_webhook_sink.events()
    assert event["subscriptionType"] == "company.merge"
    assert event["primaryObjectId"] == primary.id and event["mergedObjectIds"] == [other.id]
    assert [r["kleer_id"] for r in kleer_ids.records("companies")] == ["k1"]


async def test_app_identity_can_be_changed_at_run_time(
    api: Api, hubspot_sim: HubSpotSim, hubspot_webhook_sink: WebhookSink
) -> None:
    status, config, _ = await api.call("POST", "/_sim/config", {"app_id": 777, "portal_id": 888,
                                                                "client_secret": "new-secret-value"})
    assert status == 200 and config["app_id"] == 777 and config["portal_id"] == 888
    hubspot_sim.configure_webhooks(hubspot_webhook_sink.url)
    await api.call("POST", "/crm/v3/objects/deals", {"properties": {"dealname": "D"}})
    assert await hubspot_sim.drain_webhooks()
    request = hubspot_webhook_sink.received[0]
    verify_request("new-secret-value", "POST", hubspot_webhook_sink.url, request.body, request.headers,
                   now_ms=int(time.time() * 1000))
    assert {(e["appId"], e["portalId"], e["sourceId"]) for e in request.json()} == {(777, 888, "777")}
