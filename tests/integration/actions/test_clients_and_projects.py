"""Create Kleer Client (company workflows) and Create Kleer Project (deal workflows)."""

from __future__ import annotations

from libs.hubspot.objects import ObjectType
from tests.integration.actions.conftest import CONNECTION, ActionsEnv


async def test_a_company_becomes_a_kleer_client_with_every_mapped_field_and_is_linked(actions_env: ActionsEnv) -> None:
    env = actions_env
    company = env.company("Fjällbacka Bygg AB", phone="+46 525 123 45", address="Hamngatan 1", zip="457 40",
                          city="Fjällbacka", orgno="556677-8899", invoice_email="faktura@fjallbacka.se")

    invocation = await env.invoke("create-client", company, object_type="COMPANY",
                                  inputs={"payment_days": "15", "delivery_method": "efaktura"})

    fields = invocation.response["outputFields"]
    assert fields["hs_execution_state"] == "SUCCESS", fields
    client = env.kleer_sim.book.clients.get(int(fields["kleer_id"]))
    assert client is not None
    assert (client["name"], client["phone"], client["orgno"], client["email"]) == (
        "Fjällbacka Bygg AB", "+46 525 123 45", "556677-8899", "faktura@fjallbacka.se")
    address = client["address"]
    assert (address["address1"], address["zip-code"], address["state"]) == ("Hamngatan 1", "457 40", "Fjällbacka")
    assert (client["payment-days"], client["delivery-type"]) == (15, "Efaktura")
    assert client["foreign-id"] == f"hubspot-company-{company}"
    props = env.record(ObjectType.COMPANIES, company)
    assert props["kleer_id"] == fields["kleer_id"]
    assert props["kleer_currency"] == "SEK" and props["kleer_payment_days"] == "15"  # pushed back from Kleer
    link = await env.pool.fetchval("SELECT kleer_id FROM inbound_links WHERE connection = $1 AND hubspot_id = $2",
                                   CONNECTION, company)
    assert link == fields["kleer_id"]
    events = await env.deps.store.read_stream(f"{CONNECTION}/kleer-client/{fields['kleer_id']}")
    assert events[0].type == "KleerClientCreated"


async def test_a_company_already_linked_gets_its_client_back_and_one_without_a_name_fails(actions_env: ActionsEnv) -> None:
    env = actions_env
    client_id = await env.kleer_client("Redan Kund AB")
    company = env.company("Redan Kund AB", kleer_id=client_id)

    fields = (await env.invoke("create-client", company, object_type="COMPANY")).response["outputFields"]

    assert fields["hs_execution_state"] == "SUCCESS" and fields["kleer_id"] == str(client_id)
    assert "already linked" in fields["message"]
    nameless = env.company("")
    fields = (await env.invoke("create-client", nameless, object_type="COMPANY")).response["outputFields"]
    assert fields["hs_execution_state"] == "FAIL_CONTINUE" and "'name'" in fields["message"]
    assert len(env.kleer_sim.book.clients) == 1


async def test_a_deal_gets_a_kleer_project_for_its_company(actions_env: ActionsEnv) -> None:
    env = actions_env
    client_id = await env.kleer_client()
    company = env.company(kleer_id=client_id)
    deal = env.deal(company, dealname="Nytt kontor", deal_currency_code="SEK")

    fields = (await env.invoke("create-project", deal, inputs={"budget_amount": "25000.50", "budget_hours": "120",
                                                                "closing_date": "2030-06-30"})).response["outputFields"]

    assert fields["hs_execution_state"] == "SUCCESS", fields
    project = env.kleer_sim.book.projects.get(int(fields["kleer_id"]))
    assert project is not None and fields["kleer_number"] == project["number"]
    assert (project["client"], project["name"], project["budget-amount"], project["closing-date"]) == (
        {"id": client_id}, "Nytt kontor", 2500050, "2030-06-30")
    assert env.record(ObjectType.DEALS, deal)["kleer_project_id"] == fields["kleer_id"]
    assert env.by_kleer_id(ObjectType.PROJECTS, fields["kleer_id"])
    again = (await env.invoke("create-project", deal)).response["outputFields"]
    assert again["kleer_id"] == fields["kleer_id"] and "already has" in again["message"]
    assert len(env.kleer_sim.book.projects) == 1
