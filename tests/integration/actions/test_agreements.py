"""Create and Update Kleer Agreement: recurring rows, revisions, renewals, push-back, and a quiet next poll."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from libs.hubspot.objects import ObjectType
from libs.kleer import INVOICE as KLEER_INVOICE
from libs.mapping.loader import default_mappings
from libs.mapping.objects import AGREEMENT, INVOICE, LINE_ITEM
from services.outbound.poller import Poller, PollerConfig
from tests.integration.actions.conftest import CONNECTION, ActionsEnv


async def _poll(env: ActionsEnv, *kinds: str) -> dict[str, int]:
    poller = Poller(env.pool, env.deps.store, env.kleer, PollerConfig(connection=CONNECTION, mappings=default_mappings()))
    report = await poller.poll(kinds)
    assert report.ok, report
    return {kind: r.changed + r.removed for kind, r in report.kinds.items()}


async def _agreement(env: ActionsEnv, **inputs: str) -> tuple[str, str, dict[str, str]]:
    company = env.company(kleer_id=await env.kleer_client())
    deal = env.deal(company, [
        {"name": "Licence", "quantity": "10", "price": "49.90", "recurringbillingfrequency": "monthly"},
        {"name": "Support", "quantity": "1", "price": "500", "recurringbillingfrequency": "monthly"},
        {"name": "Onboarding", "quantity": "1", "price": "2500"},
    ])
    fields = (await env.invoke("create-agreement", deal, inputs=inputs)).response["outputFields"]
    assert fields["hs_execution_state"] == "SUCCESS", fields
    return company, deal, fields


async def test_recurring_line_items_become_a_kleer_agreement_shown_in_hubspot_at_once(actions_env: ActionsEnv) -> None:
    env = actions_env
    company, deal, fields = await _agreement(env, start_date="2025-02-01", invoice_day="INVOICE_AT_END")

    agreement = env.kleer_sim.book.agreements.get(int(fields["kleer_id"]))
    assert agreement is not None and fields["kleer_number"] == agreement["agreement-nr"]
    assert [(r["description"], r["price"]) for r in agreement["recurring-rows"]] == [("Licence", 4990), ("Support", 50000)]
    assert [r["description"] for r in agreement["first-invoice-rows"]] == ["Onboarding"]
    assert (agreement["invoice-interval-months"], agreement["start-date"], agreement["invoice-day"]) == (
        1, "2025-02-01", "INVOICE_AT_END")
    assert env.record(ObjectType.DEALS, deal)["kleer_agreement_id"] == fields["kleer_id"]
    [subscription] = env.by_kleer_id(ObjectType.SUBSCRIPTIONS, fields["kleer_id"])
    assert subscription["mrr"] == "999.00"  # 10 x 49.90 + 500
    sub_id = subscription["hs_object_id"]
    assert env.associated(ObjectType.SUBSCRIPTIONS, sub_id, ObjectType.COMPANIES) == {company}
    assert env.associated(ObjectType.SUBSCRIPTIONS, sub_id, ObjectType.DEALS) == {deal}
    assert len(env.associated(ObjectType.SUBSCRIPTIONS, sub_id, ObjectType.LINE_ITEMS)) == 3
    assert "MRR 999.00 SEK" in fields["message"]
    assert await _poll(env, AGREEMENT, LINE_ITEM) == {AGREEMENT: 0, LINE_ITEM: 0}


async def test_an_invoice_certified_later_is_not_seen_as_a_change(actions_env: ActionsEnv) -> None:
    env = actions_env
    company = env.company(kleer_id=await env.kleer_client())
    deal = env.deal(company, [{"name": "Consulting", "quantity": "1.5", "price": "1000"}])
    fields = (await env.invoke("create-invoice", deal)).response["outputFields"]
    await env.kleer.update(KLEER_INVOICE, int(fields["kleer_id"]), {"certified": True})
    assert await _poll(env, INVOICE, LINE_ITEM) == {INVOICE: 0, LINE_ITEM: 0}


async def test_an_upsell_replaces_the_rows_as_a_new_revision_and_hubspot_follows(actions_env: ActionsEnv) -> None:
    env = actions_env
    company, _, created = await _agreement(env)
    agreement_id = created["kleer_id"]
    upsell = env.deal(company, [
        {"name": "Licence", "quantity": "25", "price": "49.90", "recurringbillingfrequency": "monthly"},
    ], kleer_agreement_id=agreement_id)

    fields = (await env.invoke("update-agreement", upsell, inputs={"change_type": "upsell"})).response["outputFields"]

    assert fields["hs_execution_state"] == "SUCCESS", fields
    assert fields["kleer_id"] == agreement_id and "revision 2" in fields["message"]
    assert "MRR 999.00 → 1 247.50 SEK" in fields["message"]
    agreement = env.kleer_sim.book.agreements.get(int(agreement_id))
    assert agreement is not None and agreement["revision-nr"] == 2
    assert [(r["description"], r["quantity"]) for r in agreement["recurring-rows"]] == [("Licence", 25)]
    assert agreement["first-invoice-rows"] == []
    [subscription] = env.by_kleer_id(ObjectType.SUBSCRIPTIONS, agreement_id)
    assert (subscription["mrr"], subscription["kleer_revision_nr"]) == ("1247.50", "2")
    [licence] = env.by_kleer_id(ObjectType.LINE_ITEMS, f"{agreement_id}-recurring-1")
    assert licence["quantity"] == "25"
    gone = [e.type for e in await env.deps.store.read_stream(f"{CONNECTION}/kleer-line_item/{agreement_id}-recurring-2")]
    assert gone[-1] == "KleerLineItemRemoved"
    assert await _poll(env, AGREEMENT, LINE_ITEM) == {AGREEMENT: 0, LINE_ITEM: 0}


async def test_an_update_that_landed_before_the_call_stopped_is_not_sent_again(
    actions_env: ActionsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = actions_env
    company, _, created = await _agreement(env)
    agreement_id = created["kleer_id"]
    upsell = env.deal(company, [
        {"name": "Licence", "quantity": "30", "price": "49.90", "recurringbillingfrequency": "monthly"},
    ], kleer_agreement_id=agreement_id)
    ledger = env.executor.parts.ledger
    record_it = ledger.set_kleer
    failures = iter([asyncpg.PostgresConnectionError("the database went away")])

    async def database_gone_once(*args: Any) -> None:
        failure = next(failures, None)
        if failure is not None:  # Kleer has the new revision; recording that fails
            raise failure
        await record_it(*args)

    monkeypatch.setattr(ledger, "set_kleer", database_gone_once)
    invocation = await env.invoke("update-agreement", upsell, inputs={"change_type": "upsell"})
    fields = invocation.response["outputFields"]
    if fields["hs_execution_state"] == "BLOCK":  # the retry may finish in the background
        fields = await env.completion(invocation.callback_id)

    assert fields["hs_execution_state"] == "SUCCESS", fields
    agreement = env.kleer_sim.book.agreements.get(int(agreement_id))
    assert agreement is not None and agreement["revision-nr"] == 2  # one revision, not two
    assert [(r["description"], r["quantity"]) for r in agreement["recurring-rows"]] == [("Licence", 30)]
    assert env.kleer_sim.request_count(method="POST") == 1  # the one update (creates are PUTs)


async def test_a_renewal_extends_the_end_date(actions_env: ActionsEnv) -> None:
    env = actions_env
    company, _, created = await _agreement(env, start_date="2025-01-01", end_date="2025-12-31")
    renewal = env.deal(company, [
        {"name": "Licence", "quantity": "10", "price": "49.90", "recurringbillingfrequency": "monthly"},
    ], kleer_agreement_id=created["kleer_id"])

    fields = (await env.invoke("update-agreement", renewal,
                               inputs={"change_type": "renewal", "renewal_months": "24"})).response["outputFields"]

    assert fields["hs_execution_state"] == "SUCCESS", fields
    agreement = env.kleer_sim.book.agreements.get(int(created["kleer_id"]))
    assert agreement is not None and agreement["end-date"] == "2027-12-31"
    [subscription] = env.by_kleer_id(ObjectType.SUBSCRIPTIONS, created["kleer_id"])
    assert subscription["kleer_end_date"] == "2027-12-31"
    assert "ends 2027-12-31" in fields["message"]


async def test_agreement_business_errors_fail_the_action(actions_env: ActionsEnv) -> None:
    env = actions_env
    company = env.company(kleer_id=await env.kleer_client())
    one_time = env.deal(company, [{"name": "Onboarding", "price": "2500"}])
    fields = (await env.invoke("create-agreement", one_time)).response["outputFields"]
    assert fields["hs_execution_state"] == "FAIL_CONTINUE" and "recurring" in fields["message"]
    deal = env.deal(company, [{"name": "Licence", "price": "1", "recurringbillingfrequency": "monthly"}])
    fields = (await env.invoke("update-agreement", deal, inputs={"change_type": "upsell"})).response["outputFields"]
    assert fields["hs_execution_state"] == "FAIL_CONTINUE" and "Create Kleer Agreement" in fields["message"]
    missing = env.deal(company, [{"name": "Licence", "price": "1", "recurringbillingfrequency": "monthly"}],
                       kleer_agreement_id="424242")
    fields = (await env.invoke("update-agreement", missing, inputs={"change_type": "upsell"})).response["outputFields"]
    assert fields["hs_execution_state"] == "FAIL_CONTINUE" and "424242" in fields["message"]
    assert len(env.kleer_sim.book.agreements) == 0
