"""One Kleer record per callbackId, however often and however concurrently HubSpot sends it; BLOCK and callback."""

from __future__ import annotations

import asyncio

from libs.hubspot.objects import ObjectType
from tests.integration.actions.conftest import ActionsEnv


async def _invoiceable_deal(env: ActionsEnv) -> str:
    company = env.company(kleer_id=await env.kleer_client())
    return env.deal(company, [{"name": "Consulting", "quantity": "2", "price": "450.00"}])


async def test_the_same_callback_five_times_at_once_creates_one_invoice_and_gets_one_answer(
    actions_env: ActionsEnv,
) -> None:
    env = actions_env
    deal = await _invoiceable_deal(env)

    invocations = await asyncio.gather(
        *(env.invoke("create-invoice", deal, callback_id="ap-1234567-same-callback") for _ in range(5))
    )

    answers = [i.response for i in invocations]
    assert all(i.status == 200 for i in invocations)
    assert answers[0]["outputFields"]["hs_execution_state"] == "SUCCESS"
    assert all(a == answers[0] for a in answers)
    assert len(env.kleer_sim.book.invoices) == 1
    assert env.kleer_sim.request_count("PUT", "/v1/company/{company-id}/client/invoice") == 1
    row = await env.pool.fetchrow("SELECT deliveries, state FROM workflow_actions WHERE callback_id = $1",
                                  "ap-1234567-same-callback")
    assert (row["deliveries"], row["state"]) == (5, "done")
    again = await env.invoke("create-invoice", deal, callback_id="ap-1234567-same-callback")
    assert again.response == answers[0]
    assert len(env.kleer_sim.book.invoices) == 1


async def test_two_workflows_on_one_deal_at_once_create_one_invoice(actions_env: ActionsEnv) -> None:
    env = actions_env
    deal = await _invoiceable_deal(env)

    first, second = await asyncio.gather(env.invoke("create-invoice", deal), env.invoke("create-invoice", deal))

    outputs = [first.response["outputFields"], second.response["outputFields"]]
    finals = [await env.completion(i.callback_id) if o["hs_execution_state"] == "BLOCK" else o
              for i, o in zip((first, second), outputs, strict=True)]
    assert {f["hs_execution_state"] for f in finals} == {"SUCCESS"}
    assert finals[0]["kleer_id"] == finals[1]["kleer_id"]
    assert len(env.kleer_sim.book.invoices) == 1


async def test_kleer_down_blocks_the_action_and_the_callback_completes_after_kleer_recovers(
    actions_env: ActionsEnv,
) -> None:
    env = actions_env
    deal = await _invoiceable_deal(env)
    env.kleer_sim.set_faults({"error-rates": {"503": 1.0}})

    invocation = await env.invoke("create-invoice", deal)

    blocked = invocation.response["outputFields"]
    assert blocked["hs_execution_state"] == "BLOCK" and blocked["hs_expiration_duration"] == "PT10M"
    assert env.hubspot.sim.actions.completions.get(invocation.callback_id) is None
    retried = await env.invoke("create-invoice", deal, callback_id=invocation.callback_id)
    assert retried.response["outputFields"]["hs_execution_state"] == "BLOCK"  # a redelivery while blocked
    env.kleer_sim.clear_faults()

    completed = await env.completion(invocation.callback_id)

    assert completed["hs_execution_state"] == "SUCCESS", completed
    assert len(env.kleer_sim.book.invoices) == 1
    assert env.by_kleer_id(ObjectType.INVOICES, completed["kleer_id"])
    assert len(env.hubspot.sim.actions.completions[invocation.callback_id]) == 1
    # HubSpot has the completion before the worker records having sent it: wait for the row, not a sleep.
    row = await env.action_row_when(invocation.callback_id, "completed_at IS NOT NULL")
    assert row["state"] == "done" and row["completion_due"] and row["completed_at"] is not None
    assert row["attempts"] >= 1
    later = await env.invoke("create-invoice", deal, callback_id=invocation.callback_id)
    assert later.response["outputFields"] == completed


async def test_a_slow_kleer_blocks_and_the_work_finishes_in_the_background(actions_env: ActionsEnv) -> None:
    env = actions_env
    deal = await _invoiceable_deal(env)
    # Slower than the action's answer budget (4 s), within the Kleer client's timeout (5 s): at 5,000 ms the
    # read-back of the new invoice raced that timeout and, when it lost, its retry took the callback past 10 s.
    env.kleer_sim.set_faults({"latency": {"distribution": "fixed", "ms": 4500}, "path-prefix": "/company/1/client/invoice"})

    invocation = await env.invoke("create-invoice", deal)

    assert invocation.response["outputFields"]["hs_execution_state"] == "BLOCK"
    completed = await env.completion(invocation.callback_id)
    assert completed["hs_execution_state"] == "SUCCESS"
    assert len(env.kleer_sim.book.invoices) == 1


async def test_a_call_whose_worker_died_is_taken_over_and_completed(actions_env: ActionsEnv) -> None:
    env = actions_env
    deal = await _invoiceable_deal(env)
    env.kleer_sim.set_faults({"error-rates": {"503": 1.0}})
    invocation = await env.invoke("create-invoice", deal)
    assert invocation.response["outputFields"]["hs_execution_state"] == "BLOCK"
    # The worker "dies" between two attempts (Kleer answered 503: nothing was created) and its lease runs out.
    for task in list(env.executor._tasks.values()):
        task.cancel()
    await asyncio.sleep(0.05)
    await env.pool.execute("UPDATE workflow_actions SET lease_until = now() - interval '1 second', "
                           "owner = gen_random_uuid(), kleer_pending = false")
    env.kleer_sim.clear_faults()

    completed = await env.completion(invocation.callback_id)

    assert completed["hs_execution_state"] == "SUCCESS"
    assert len(env.kleer_sim.book.invoices) == 1


async def test_a_create_whose_fate_is_unknown_is_never_sent_again(actions_env: ActionsEnv) -> None:
    env = actions_env
    deal = await _invoiceable_deal(env)
    # Kleer stores the invoice and the connection drops before its answer.
    env.kleer_sim.set_faults({"drop-after-rate": 1.0, "path-prefix": "/company/1/client/invoice"})

    invocation = await env.invoke("create-invoice", deal)
    fields = invocation.response["outputFields"]
    if fields["hs_execution_state"] == "BLOCK":
        fields = await env.completion(invocation.callback_id)

    assert fields["hs_execution_state"] == "FAIL_CONTINUE"
    assert "may or may not" in fields["message"]
    assert len(env.kleer_sim.book.invoices) == 1
    assert env.kleer_sim.request_count("PUT", "/v1/company/{company-id}/client/invoice") == 1
