"""Contract tests of the simulator's platform behaviour: auth, OAuth, rate limit, associations, faults,
malformed input."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.fixtures.hubspot_sim import HubSpotSim
from tests.integration.hubspot.conftest import Api


async def test_missing_or_unknown_token_is_401_invalid_authentication(hubspot_sim: HubSpotSim) -> None:
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            async with session.get(hubspot_sim.base_url + "/crm/v3/objects/companies", headers=headers) as resp:
                body = await resp.json()
                assert resp.status == 401
                assert body["status"] == "error" and body["category"] == "INVALID_AUTHENTICATION"
                assert body["correlationId"]


async def test_oauth_refresh_grant_issues_access_tokens_that_expire(hubspot_sim: HubSpotSim) -> None:
    hubspot_sim.sim.config.access_token_lifetime_s = 0.3
    form = {"grant_type": "refresh_token", "client_id": hubspot_sim.client_id,
            "client_secret": hubspot_sim.client_secret, "refresh_token": hubspot_sim.refresh_token}
    async with aiohttp.ClientSession() as session:
        async with session.post(hubspot_sim.base_url + "/oauth/v1/token", data=form) as resp:
            assert resp.status == 200
            grant = await resp.json()
        assert grant["token_type"] == "bearer" and grant["expires_in"] == 0.3
        headers = {"Authorization": f"Bearer {grant['access_token']}"}
        async with session.get(hubspot_sim.base_url + "/crm/v3/objects/deals", headers=headers) as resp:
            assert resp.status == 200
            assert "X-HubSpot-RateLimit-Daily" not in resp.headers  # OAuth apps have no daily headers
        await asyncio.sleep(0.35)
        async with session.get(hubspot_sim.base_url + "/crm/v3/objects/deals", headers=headers) as resp:
            assert resp.status == 401
            assert (await resp.json())["category"] == "EXPIRED_AUTHENTICATION"
        async with session.post(hubspot_sim.base_url + "/oauth/v1/token",
                                data={**form, "refresh_token": "stolen"}) as resp:
            assert resp.status == 400 and (await resp.json())["status"] == "BAD_REFRESH_TOKEN"


async def test_111th_request_inside_the_window_gets_429_with_documented_body_and_headers(
    api: Api, hubspot_sim: HubSpotSim
) -> None:
    hubspot_sim.set_rate_limit(110, 10_000, time_scale=5)  # a 2 s window
    answers = [await api.call("GET", "/crm/v3/objects/companies?limit=1") for _ in range(111)]
    statuses = [a[0] for a in answers]
    assert statuses[:110] == [200] * 110
    status, body, headers = answers[110]
    assert status == 429
    assert body["status"] == "error" and body["errorType"] == "RATE_LIMIT"
    assert body["policyName"] == "TEN_SECONDLY_ROLLING" and body["correlationId"]
    assert headers["X-HubSpot-RateLimit-Max"] == "110"
    assert headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "2000"
    assert answers[0][2]["X-HubSpot-RateLimit-Remaining"] == "109"


async def test_the_window_slides(api: Api, hubspot_sim: HubSpotSim) -> None:
    hubspot_sim.set_rate_limit(3, 10_000, time_scale=50)  # a 200 ms window
    statuses = [(await api.call("GET", "/crm/v3/objects/deals"))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    await asyncio.sleep(0.25)
    assert (await api.call("GET", "/crm/v3/objects/deals"))[0] == 200


async def test_rate_limit_zero_turns_it_off(api: Api, hubspot_sim: HubSpotSim) -> None:
    hubspot_sim.set_rate_limit(0)
    statuses = {(await api.call("GET", "/crm/v3/objects/deals"))[0] for _ in range(150)}
    assert statuses == {200}


async def test_private_app_daily_cap_has_headers_and_a_daily_429(api: Api, hubspot_sim: HubSpotSim) -> None:
    hubspot_sim.set_rate_limit(daily=2)
    _, _, headers = await api.call("GET", "/crm/v3/objects/deals")
    assert headers["X-HubSpot-RateLimit-Daily"] == "2" and headers["X-HubSpot-RateLimit-Daily-Remaining"] == "1"
    await api.call("GET", "/crm/v3/objects/deals")
    status, body, _ = await api.call("GET", "/crm/v3/objects/deals")
    assert status == 429 and body["policyName"] == "DAILY"


async def _two_records(api: Api, hubspot_sim: HubSpotSim) -> tuple[str, str, str]:
    invoice = hubspot_sim.seed("invoices", {"hs_number": "1001"})
    company = hubspot_sim.seed("companies", {"name": "Acme"})
    project = hubspot_sim.seed("projects", {"hs_name": "Build"})
    return str(invoice.id), str(company.id), str(project.id)


async def test_association_batch_create_is_readable_from_both_sides(api: Api, hubspot_sim: HubSpotSim) -> None:
    invoice, company, _ = await _two_records(api, hubspot_sim)
    body = {"inputs": [{"from": {"id": invoice}, "to": {"id": company},
                        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 179}]}]}
    status, created, _ = await api.call("POST", "/crm/v4/associations/invoices/companies/batch/create", body)
    assert status == 201 and created["status"] == "COMPLETE"
    again, _, _ = await api.call("POST", "/crm/v4/associations/invoices/companies/batch/create", body)
    assert again == 201
    _, forward, _ = await api.call("GET", f"/crm/v4/objects/invoices/{invoice}/associations/companies")
    assert forward["results"] == [{"toObjectId": int(company), "associationTypes": [
        {"category": "HUBSPOT_DEFINED", "typeId": 179, "label": None}]}]
    _, back, _ = await api.call("GET", f"/crm/v4/objects/companies/{company}/associations/invoices")
    assert back["results"][0]["associationTypes"][0]["typeId"] == 180
    assert hubspot_sim.store.associations.count() == 1


async def test_association_with_the_wrong_type_id_is_refused(api: Api, hubspot_sim: HubSpotSim) -> None:
    invoice, company, _ = await _two_records(api, hubspot_sim)
    body = {"inputs": [{"from": {"id": invoice}, "to": {"id": company},
                        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 180}]}]}
    status, _, _ = await api.call("POST", "/crm/v4/associations/invoices/companies/batch/create", body)
    assert status == 400


async def test_association_to_a_missing_record_is_a_per_input_error(api: Api, hubspot_sim: HubSpotSim) -> None:
    invoice, company, _ = await _two_records(api, hubspot_sim)
    types = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 179}]
    body = {"inputs": [{"from": {"id": invoice}, "to": {"id": company}, "types": types},
                       {"from": {"id": invoice}, "to": {"id": "424242"}, "types": types}]}
    status, result, _ = await api.call("POST", "/crm/v4/associations/invoices/companies/batch/create", body)
    assert status == 207 and len(result["results"]) == 1
    assert result["errors"][0]["context"]["toObjectId"] == ["424242"]


async def test_default_association_put_and_batch_for_pairs_without_a_known_id(api: Api, hubspot_sim: HubSpotSim) -> None:
    _, company, project = await _two_records(api, hubspot_sim)
    status, _, _ = await api.call("PUT", f"/crm/v4/objects/0-970/{project}/associations/default/companies/{company}")
    assert status == 200
    status, _, _ = await api.call("POST", "/crm/v4/associations/projects/companies/batch/associate/default",
                                  {"inputs": [{"from": {"id": project}, "to": {"id": company}}]})
    assert status == 200
    _, found, _ = await api.call("GET", f"/crm/v4/objects/companies/{company}/associations/projects")
    assert [r["toObjectId"] for r in found["results"]] == [int(project)]


async def test_association_batch_caps_at_2000_inputs(api: Api, hubspot_sim: HubSpotSim) -> None:
    inputs = [{"from": {"id": "1"}, "to": {"id": "2"}} for _ in range(2001)]
    status, _, _ = await api.call("POST", "/crm/v4/associations/deals/companies/batch/associate/default",
                                  {"inputs": inputs})
    assert status == 400


async def test_injected_error_rate_answers_with_that_status(api: Api, hubspot_sim: HubSpotSim) -> None:
    hubspot_sim.set_faults(error_rates={503: 1.0})
    status, body, _ = await api.call("GET", "/crm/v3/objects/deals")
    assert status == 503 and body["status"] == "error"
    hubspot_sim.clear_faults()
    assert (await api.call("GET", "/crm/v3/objects/deals"))[0] == 200


async def test_injected_429_storm_and_dropped_connections(api: Api, hubspot_sim: HubSpotSim) -> None:
    hubspot_sim.set_faults(storm_429={"requests": 2})
    statuses = [(await api.call("GET", "/crm/v3/objects/deals"))[0] for _ in range(3)]
    assert statuses == [429, 429, 200]
    hubspot_sim.set_faults(drop_rate=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.call("GET", "/crm/v3/objects/deals")


async def test_injected_latency_and_path_filter(api: Api, hubspot_sim: HubSpotSim) -> None:
    status, _, _ = await api.call("POST", "/_sim/faults", {"latency": {"ms": 60}, "path_prefix": "/crm/v3/objects/deals"})
    assert status == 200
    loop = asyncio.get_running_loop()
    started = loop.time()
    await api.call("GET", "/crm/v3/objects/deals")
    slow = loop.time() - started
    started = loop.time()
    await api.call("GET", "/crm/v3/objects/companies")
    fast = loop.time() - started
    assert slow >= 0.06 > fast


BAD_BODIES: list[Any] = [None, "text", 1, [], {"inputs": None}, {"inputs": [1, 2]}, {"inputs": [{"id": {}}]},
                         {"inputs": [{"properties": []}]}, {"inputs": [{"id": "1", "idProperty": 5}]},
                         {"filterGroups": "x"}, {"inputs": [{"from": 1, "to": None}]}, {"name": None},
                         {"limit": "many"}, {"sorts": [1]}, {"inputs": [{"id": "1", "properties": {"a": {"b": 1}}}]}]
ENDPOINTS = [
    ("POST", "/crm/v3/objects/companies/batch/upsert"), ("POST", "/crm/v3/objects/companies/batch/create"),
    ("POST", "/crm/v3/objects/companies/batch/update"), ("POST", "/crm/v3/objects/companies/batch/read"),
    ("POST", "/crm/v3/objects/companies/batch/archive"), ("POST", "/crm/v3/objects/companies/search"),
    ("POST", "/crm/v3/objects/companies"), ("PATCH", "/crm/v3/objects/companies/abc"),
    ("POST", "/crm/v3/properties/companies"), ("POST", "/crm/v3/properties/companies/groups"),
    ("POST", "/crm/v3/properties/companies/batch/create"),
    ("POST", "/crm/v4/associations/deals/companies/batch/create"),
    ("POST", "/crm/v4/associations/deals/companies/batch/associate/default"),
    ("PUT", "/crm/v4/objects/deals/x/associations/companies/y"),
    ("POST", "/automation/v4/actions/1234567"), ("POST", "/automation/v4/actions/callbacks/x/complete"),
    ("POST", "/_sim/faults"), ("POST", "/_sim/webhooks"), ("POST", "/_sim/rate-limit"),
    ("POST", "/_sim/ui-edit/companies/1"), ("POST", "/_sim/workflow-actions/invoke"),
    ("GET", "/crm/v3/objects/companies?limit=x&after=y"), ("GET", "/crm/v3/objects/nonsense"),
]


async def test_malformed_input_is_a_400_in_hubspots_error_shape_never_a_500(api: Api, kleer_ids: HubSpotSim) -> None:
    for method, path in ENDPOINTS:
        for body in BAD_BODIES:
            status, answer, _ = await api.call(method, path, body)
            assert status < 500, (method, path, body, answer)
            if status >= 400:
                assert isinstance(answer, dict) and answer.get("status") is not None, (method, path, body, answer)
        status, answer, _ = await api.call(method, path, raw=b"{not json")
        assert status < 500, (method, path)


# Every association type id of the facts file: (from, to, id one way, id back).
FACT_ASSOCIATIONS = [
    ("invoices", "companies", 179, 180), ("invoices", "line_items", 409, 410), ("invoices", "deals", 175, 176),
    ("subscriptions", "companies", 297, 298), ("subscriptions", "line_items", 301, 302),
    ("deals", "companies", 341, 342), ("deals", "line_items", 19, 20),
]


@pytest.mark.parametrize(("from_type", "to_type", "type_id", "back_id"), FACT_ASSOCIATIONS)
async def test_every_documented_association_type_id_is_taken_and_read_back_from_both_sides(
    api: Api, hubspot_sim: HubSpotSim, from_type: str, to_type: str, type_id: int, back_id: int
) -> None:
    source = str(hubspot_sim.seed(from_type, {}).id)
    target = str(hubspot_sim.seed(to_type, {}).id)
    path = f"/crm/v4/associations/{from_type}/{to_type}/batch/create"
    wrong = {"inputs": [{"from": {"id": source}, "to": {"id": target},
                         "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": back_id}]}]}
    assert (await api.call("POST", path, wrong))[0] == 400  # the id of the other direction is refused
    body = {"inputs": [{"from": {"id": source}, "to": {"id": target},
                        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}]}]}
    status, _, _ = await api.call("POST", path, body)
    assert status == 201
    _, forward, _ = await api.call("GET", f"/crm/v4/objects/{from_type}/{source}/associations/{to_type}")
    assert [(r["toObjectId"], [t["typeId"] for t in r["associationTypes"]]) for r in forward["results"]] == [
        (int(target), [type_id])]
    _, back, _ = await api.call("GET", f"/crm/v4/objects/{to_type}/{target}/associations/{from_type}")
    assert [t["typeId"] for t in back["results"][0]["associationTypes"]] == [back_id]


def _every_writing_route() -> list[tuple[str, str]]:
    """Each POST/PUT/PATCH route of the simulator with its placeholders filled (no endpoint left out)."""
    from sim.hubspot.app import create_app

    fill = {"object_type": "companies", "from_type": "deals", "to_type": "companies", "object_id": "1",
            "from_id": "1", "to_id": "2", "name": "name", "app_id": "1234567", "definition_id": "9",
            "callback_id": "cb-1"}
    found: set[tuple[str, str]] = set()
    for route in create_app().router.routes():
        if route.method not in ("POST", "PUT", "PATCH"):
            continue
        template = route.resource.canonical if route.resource is not None else ""
        ops = ["create", "read", "archive"]
        if "{op}" in template:
            ops += ["update", "upsert"]
        for op in ops:
            path = template.replace("{op:create|read|archive}", op).replace("{op}", op)
            for key, value in fill.items():
                path = path.replace("{" + key + "}", value)
            found.add((route.method, path))
    return sorted(found)


async def test_every_writing_endpoint_answers_malformed_input_in_the_documented_shape(
    api: Api, kleer_ids: HubSpotSim
) -> None:
    routes = _every_writing_route()
    assert ("POST", "/oauth/v1/token") in routes and ("POST", "/_sim/ui-merge/companies") in routes
    for method, path in routes:
        for raw in (b"{not json", b"[1, 2", "\u00ff".encode("latin-1"), b"null", b'{"inputs": "x"}'):
            status, answer, _ = await api.call(method, path, raw=raw, headers={"Content-Type": "application/json"})
            assert status < 500, (method, path, raw, answer)
            if status >= 400 and path.startswith(("/crm/", "/automation/")):
                assert isinstance(answer, dict), (method, path, raw, answer)
                assert {"status", "message", "correlationId", "category"} <= set(answer), (method, path, answer)
            elif status >= 400:
                assert isinstance(answer, dict) and answer.get("message"), (method, path, raw, answer)
