"""Create Kleer Invoice: deal line items -> a Kleer invoice, linked to the deal and pushed back at once."""

from __future__ import annotations

from libs.hubspot.objects import ObjectType
from tests.integration.actions.conftest import ActionsEnv


async def test_deal_line_items_become_a_kleer_invoice_shown_in_hubspot_before_the_answer_and_only_once(
    actions_env: ActionsEnv,
) -> None:
    env = actions_env
    client_id = await env.kleer_client()
    kleer_product = await env.kleer_product("Support plan", 99_00)
    product = env.product("Support plan", "99", kleer_id=kleer_product)
    company = env.company(kleer_id=client_id)
    deal = env.deal(company, [
        {"name": "Consulting", "quantity": "3", "price": "1299.50"},
        {"name": "Support plan", "quantity": "2", "price": "99", "hs_product_id": product},
    ])

    invocation = await env.invoke("create-invoice", deal, inputs={"invoice_date": "2025-03-01", "payment_days": "10",
                                                                   "your_reference": "Anna"})

    assert invocation.status == 200
    fields = invocation.response["outputFields"]
    assert fields["hs_execution_state"] == "SUCCESS", fields
    invoice_id = fields["kleer_id"]
    invoice = env.kleer_sim.book.invoices.get(int(invoice_id))
    assert invoice is not None and fields["kleer_number"] == str(invoice["invoice-nr"])
    assert invoice["client-ref"] == {"id": client_id}
    assert [(r["description"], r["price"], (r["product"] or {}).get("id")) for r in invoice["rows"]] == [
        ("Consulting", 129950, None), ("Support plan", 9900, kleer_product)]
    assert invoice["amount"] == 3 * 129950 + 2 * 9900
    assert (invoice["invoice-date"], invoice["due-date"], invoice["your-reference"]) == ("2025-03-01", "2025-03-11", "Anna")
    assert env.record(ObjectType.DEALS, deal)["kleer_invoice_id"] == invoice_id
    # Already in HubSpot when the action answered: the invoice, its line items, its associations.
    [hs_invoice] = env.by_kleer_id(ObjectType.INVOICES, invoice_id)
    assert hs_invoice["hs_number"] == str(invoice["invoice-nr"])
    hs_invoice_id = hs_invoice["hs_object_id"]
    rows = [env.by_kleer_id(ObjectType.LINE_ITEMS, f"{invoice_id}-row-{n}") for n in (1, 2)]
    assert all(len(r) == 1 for r in rows)
    assert rows[0][0]["price"] == "1299.50" and rows[1][0]["kleer_product_id"] == str(kleer_product)
    assert env.associated(ObjectType.INVOICES, hs_invoice_id, ObjectType.COMPANIES) == {company}
    assert env.associated(ObjectType.INVOICES, hs_invoice_id, ObjectType.DEALS) == {deal}
    assert env.associated(ObjectType.INVOICES, hs_invoice_id, ObjectType.LINE_ITEMS) == {
        r[0]["hs_object_id"] for r in rows}
    assert "2 row(s)" in fields["message"] and "SEK" in fields["message"]
    # The deal now has an invoice: the action hands it back and creates nothing.
    again = (await env.invoke("create-invoice", deal)).response["outputFields"]
    assert (again["hs_execution_state"], again["kleer_id"], again["kleer_number"]) == (
        "SUCCESS", invoice_id, fields["kleer_number"])
    assert "already has" in again["message"] and len(env.kleer_sim.book.invoices) == 1


async def test_create_client_input_makes_the_client_first(actions_env: ActionsEnv) -> None:
    env = actions_env
    company = env.company("Nya Kunden AB", city="Lund", kleer_payment_days="20")
    deal = env.deal(company, [{"name": "Consulting", "price": "100"}])

    fields = (await env.invoke("create-invoice", deal, inputs={"create_client": "true"})).response["outputFields"]

    assert fields["hs_execution_state"] == "SUCCESS", fields
    [client] = list(env.kleer_sim.book.clients)
    assert (client["name"], client["address"]["state"], client["payment-days"]) == ("Nya Kunden AB", "Lund", 20)
    assert client["foreign-id"] == f"hubspot-company-{company}"
    assert env.record(ObjectType.COMPANIES, company)["kleer_id"] == str(client["id"])
    invoice = env.kleer_sim.book.invoices.get(int(fields["kleer_id"]))
    assert invoice is not None and invoice["client-ref"] == {"id": client["id"]}


async def test_business_errors_fail_the_action_saying_what_to_fix_and_create_nothing(
    actions_env: ActionsEnv,
) -> None:
    env = actions_env
    unlinked = env.deal(env.company("Unlinked AB"), [{"name": "Consulting", "price": "100"}])
    no_items = env.deal(env.company(kleer_id=await env.kleer_client()), [])
    no_company = env.deal(None, [{"name": "X", "price": "1"}])
    unknown_client = env.deal(env.company(kleer_id=987654), [{"name": "Consulting", "price": "100"}])

    answers = [(await env.invoke("create-invoice", deal)).response["outputFields"]
               for deal in (unlinked, no_items, no_company, unknown_client)]

    assert {a["hs_execution_state"] for a in answers} == {"FAIL_CONTINUE"}
    first, second, third, fourth = (a["message"] for a in answers)
    assert "Unlinked AB" in first and "Create Kleer Client" in first and "create_client" in first
    assert "no line items" in second
    assert "no associated company" in third
    assert fourth.startswith("Kleer refused creating the invoice") and "987654" in fourth  # Kleer's validation
    assert len(env.kleer_sim.book.invoices) == 0
    assert env.record(ObjectType.DEALS, unknown_client).get("kleer_invoice_id") in (None, "")


async def test_a_deal_with_500_line_items_is_invoiced(actions_env: ActionsEnv) -> None:
    env = actions_env
    company = env.company(kleer_id=await env.kleer_client())
    deal = env.deal(company, [{"name": f"Item {n}", "quantity": "1", "price": f"{n}.25"} for n in range(1, 501)])

    invocation = await env.invoke("create-invoice", deal)
    fields = invocation.response["outputFields"]
    if fields["hs_execution_state"] == "BLOCK":  # slower machines: the answer comes by callback
        fields = await env.completion(invocation.callback_id, timeout_s=30)

    assert fields["hs_execution_state"] == "SUCCESS", fields
    invoice = env.kleer_sim.book.invoices.get(int(fields["kleer_id"]))
    assert invoice is not None and len(invoice["rows"]) == 500
    assert invoice["amount"] == sum(n * 100 + 25 for n in range(1, 501))
    assert invoice["rows"][499]["description"] == "Item 500"
    [hs_invoice] = env.by_kleer_id(ObjectType.INVOICES, fields["kleer_id"])
    assert len(env.associated(ObjectType.INVOICES, hs_invoice["hs_object_id"], ObjectType.LINE_ITEMS)) == 500
