"""The HTTP surface: signatures, unknown actions, malformed calls, input errors, OpenAPI, events, metrics."""

from __future__ import annotations

import time

import aiohttp
import orjson

from libs.hubspot.signatures import v3_headers
from libs.observability.metrics import WORKFLOW_ACTIONS
from libs.records import RecordRef
from services.operations.audit import load_audit
from tests.integration.actions.conftest import CONNECTION, ActionsEnv


def _call(env: ActionsEnv, **overrides: object) -> bytes:
    body = {
        "callbackId": "ap-1234567-http-1",
        "origin": {"portalId": env.hubspot.portal_id, "actionDefinitionId": 1, "actionDefinitionVersion": 1},
        "context": {"source": "WORKFLOWS", "workflowId": 1},
        "object": {"objectId": 1, "objectType": "DEAL", "properties": {}},
        "inputFields": {},
    }
    body.update(overrides)
    return orjson.dumps(body)


async def _post(env: ActionsEnv, path: str, body: bytes, secret: str | None = None) -> tuple[int, dict]:
    url = env.base_url + path
    headers = {"Content-Type": "application/json",
               **v3_headers(secret or env.hubspot.client_secret, "POST", url, body, int(time.time() * 1000))}
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        return response.status, await response.json()


async def test_refusals_bad_signature_401_unknown_action_404_malformed_400_foreign_portal_403(
    actions_env: ActionsEnv,
) -> None:
    env = actions_env
    status, body = await _post(env, "/actions/create-invoice", _call(env), secret="not-our-secret")
    assert (status, body["error"]) == (401, "unauthorized")
    async with aiohttp.ClientSession() as session, session.post(
        env.url("create-invoice"), data=_call(env), headers={"Content-Type": "application/json"}
    ) as unsigned:
        assert unsigned.status == 401
    status, body = await _post(env, "/actions/delete-everything", _call(env))
    assert (status, body["error"]) == (404, "unknown_action") and "create-invoice" in body["message"]
    status, body = await _post(env, "/actions/create-invoice", b'{"hello": 1}')
    assert (status, body["error"]) == (400, "malformed") and "callbackId" in body["message"]
    status, body = await _post(env, "/actions/create-invoice", _call(env, origin={"portalId": 999}))
    assert (status, body["error"]) == (403, "foreign_portal")
    assert await env.pool.fetchval("SELECT count(*) FROM workflow_actions") == 0


async def test_a_missing_or_wrongly_typed_input_fails_the_action_naming_the_field(actions_env: ActionsEnv) -> None:
    env = actions_env
    company = env.company(kleer_id=await env.kleer_client())
    deal = env.deal(company, [{"name": "Licence", "price": "10", "recurringbillingfrequency": "monthly"}])

    wrong = (await env.invoke("create-invoice", deal, inputs={"payment_days": "thirty"})).response["outputFields"]
    missing = (await env.invoke("update-agreement", deal, inputs={})).response["outputFields"]
    bad_date = (await env.invoke("create-agreement", deal, inputs={"start_date": "soon"})).response["outputFields"]

    assert wrong["hs_execution_state"] == "FAIL_CONTINUE" and "'payment_days'" in wrong["message"]
    assert missing["hs_execution_state"] == "FAIL_CONTINUE" and "'change_type'" in missing["message"]
    assert bad_date["hs_execution_state"] == "FAIL_CONTINUE" and "'start_date'" in bad_date["message"]
    assert len(env.kleer_sim.book.invoices) == 0 and len(env.kleer_sim.book.agreements) == 0


async def test_an_action_in_a_workflow_of_the_wrong_object_type_fails(actions_env: ActionsEnv) -> None:
    env = actions_env
    company = env.company(kleer_id=await env.kleer_client())
    fields = (await env.invoke("create-invoice", company, object_type="COMPANY")).response["outputFields"]
    assert fields["hs_execution_state"] == "FAIL_CONTINUE" and "works on deals" in fields["message"]


async def test_the_actions_are_in_the_openapi_document(actions_env: ActionsEnv) -> None:
    async with aiohttp.ClientSession() as session, session.get(actions_env.base_url + "/openapi.json") as response:
        document = await response.json()
    for name in ("create-client", "create-invoice", "create-agreement", "update-agreement", "create-project"):
        operation = document["paths"][f"/actions/{name}"]["post"]
        assert {"200", "401", "404"} <= set(operation["responses"])
    inputs = document["paths"]["/actions/update-agreement"]["post"]["requestBody"]["content"]["application/json"]
    assert "change_type" in str(inputs) and "WorkflowActionAnswer" in document["components"]["schemas"]


async def test_each_call_is_in_the_event_log_with_its_causes_counted_and_in_the_deals_audit(actions_env: ActionsEnv) -> None:
    env = actions_env
    before = WORKFLOW_ACTIONS.labels(action="create-invoice", outcome="success")._value.get()
    company = env.company(kleer_id=await env.kleer_client())
    deal = env.deal(company, [{"name": "Consulting", "price": "100"}])

    invocation = await env.invoke("create-invoice", deal)

    invoice_id = invocation.response["outputFields"]["kleer_id"]
    received = await env.deps.store.read_stream(f"{CONNECTION}/hubspot-deal/{deal}")
    assert [e.type for e in received] == ["WorkflowActionReceived", "WorkflowActionCompleted"]
    cause = received[0]
    assert received[1].metadata["causation_id"] == str(cause.event_id)
    assert received[1].data["hs_execution_state"] == "SUCCESS" and received[1].data["kleer_id"] == invoice_id
    invoice_stream = await env.deps.store.read_stream(f"{CONNECTION}/kleer-invoice/{invoice_id}")
    types = [e.type for e in invoice_stream]
    assert types[0] == "KleerInvoiceCreated" and "KleerInvoiceChanged" in types and "HubSpotInvoiceUpserted" in types
    assert all(e.metadata.get("causation_id") == str(cause.event_id) for e in invoice_stream)
    assert {e.metadata["correlation_id"] for e in received + invoice_stream if e.type.startswith(("Workflow", "KleerInvoiceC"))} == {
        cause.metadata["correlation_id"]}
    assert WORKFLOW_ACTIONS.labels(action="create-invoice", outcome="success")._value.get() == before + 1
    # The deal's audit timeline shows the call and the invoice it made, in causal order.
    audit = await load_audit(env.pool, RecordRef("hubspot", "deal", deal), CONNECTION)
    audit_types = [entry.type for entry in audit.entries]
    for expected in ("WorkflowActionReceived", "KleerInvoiceCreated", "KleerInvoiceChanged", "HubSpotInvoiceUpserted",
                     "WorkflowActionCompleted"):
        assert expected in audit_types, audit_types
    assert audit_types.index("WorkflowActionReceived") < audit_types.index("KleerInvoiceCreated") < audit_types.index(
        "WorkflowActionCompleted")
    assert RecordRef("kleer", "invoice", invoice_id) in {link.record for link in audit.linked}
