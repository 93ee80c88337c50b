"""Contract tests of the HubSpot simulator's CRM object API, one per fact in shared/hubspot-api.md."""

from __future__ import annotations

import re

from tests.fixtures.hubspot_sim import HubSpotSim
from tests.integration.hubspot.conftest import Api

UPSERT = "/crm/v3/objects/companies/batch/upsert"


def upsert_input(kleer_id: str, **props: str) -> dict[str, object]:
    return {"id": kleer_id, "idProperty": "kleer_id", "properties": props}


async def test_batch_with_101_inputs_is_refused_with_400(api: Api, kleer_ids: HubSpotSim) -> None:
    inputs = [upsert_input(f"k{i}", name=f"C{i}") for i in range(101)]
    status, body, _ = await api.call("POST", UPSERT, {"inputs": inputs})
    assert status == 400
    assert body["status"] == "error" and body["category"] == "VALIDATION_ERROR"
    assert body["correlationId"]
    assert kleer_ids.records("companies") == []


async def test_batch_with_100_inputs_is_accepted(api: Api, kleer_ids: HubSpotSim) -> None:
    inputs = [upsert_input(f"k{i}", name=f"C{i}") for i in range(100)]
    status, body, _ = await api.call("POST", UPSERT, {"inputs": inputs})
    assert status == 200
    assert len(body["results"]) == 100 and all(r["new"] for r in body["results"])


async def test_same_kleer_id_upserted_twice_makes_one_record(api: Api, kleer_ids: HubSpotSim) -> None:
    first = await api.call("POST", UPSERT, {"inputs": [upsert_input("k1", name="Acme")]})
    second = await api.call("POST", UPSERT, {"inputs": [upsert_input("k1", name="Acme AB")]})
    assert first[0] == second[0] == 200
    assert first[1]["results"][0]["new"] is True
    assert second[1]["results"][0]["new"] is False
    assert first[1]["results"][0]["id"] == second[1]["results"][0]["id"]
    records = kleer_ids.records("companies")
    assert len(records) == 1 and records[0]["name"] == "Acme AB"


async def test_duplicate_ids_in_one_batch_are_refused(api: Api, kleer_ids: HubSpotSim) -> None:
    status, body, _ = await api.call("POST", UPSERT, {"inputs": [upsert_input("k1"), upsert_input("k1")]})
    assert status == 400 and "Duplicate IDs" in body["message"]


async def test_upsert_needs_a_unique_id_property(api: Api, hubspot_sim: HubSpotSim) -> None:
    hubspot_sim.create_property("companies", "kleer_ref")  # not unique
    status, body, _ = await api.call("POST", UPSERT, {"inputs": [
        {"id": "1", "idProperty": "kleer_ref", "properties": {}}]})
    assert status == 400 and "unique" in body["message"]


async def test_one_invalid_value_is_a_207_and_the_rest_is_written(api: Api, kleer_ids: HubSpotSim) -> None:
    inputs = [
        {**upsert_input("ok-1", name="Fine"), "objectWriteTraceId": "0"},
        {**upsert_input("bad", name="Bad", numberofemployees="many"), "objectWriteTraceId": "1"},
        {**upsert_input("ok-2", name="Fine too"), "objectWriteTraceId": "2"},
    ]
    status, body, _ = await api.call("POST", UPSERT, {"inputs": inputs})
    assert status == 207
    assert body["numErrors"] == 1
    error = body["errors"][0]
    assert error["status"] == "error" and error["category"] == "VALIDATION_ERROR"
    assert error["context"]["ids"] == ["bad"] and error["context"]["objectWriteTraceId"] == ["1"]
    assert "numberofemployees" in error["message"]
    assert sorted(r["properties"]["kleer_id"] for r in body["results"]) == ["ok-1", "ok-2"]
    assert sorted(r["kleer_id"] for r in kleer_ids.records("companies")) == ["ok-1", "ok-2"]


async def test_unknown_property_is_a_400_property_doesnt_exist(api: Api, kleer_ids: HubSpotSim) -> None:
    status, body, _ = await api.call("POST", UPSERT, {"inputs": [upsert_input("k1", name="A", orgno="556")]})
    assert status == 400
    assert body["category"] == "VALIDATION_ERROR"
    assert "PROPERTY_DOESNT_EXIST" in body["message"] and "orgno" in body["message"]
    assert kleer_ids.records("companies") == []


async def test_custom_property_must_be_created_before_it_is_written(api: Api, kleer_ids: HubSpotSim) -> None:
    spec = {"name": "orgno", "label": "Org no", "type": "string", "fieldType": "text",
            "groupName": "companyinformation"}
    status, created, _ = await api.call("POST", "/crm/v3/properties/companies", spec)
    assert status == 201 and created["hubspotDefined"] is False
    again, conflict, _ = await api.call("POST", "/crm/v3/properties/companies", spec)
    assert again == 409 and conflict["category"] == "OBJECT_ALREADY_EXISTS"
    status, _, _ = await api.call("POST", UPSERT, {"inputs": [upsert_input("k1", orgno="556677-8899")]})
    assert status == 200


async def test_property_groups_can_be_listed_and_created(api: Api) -> None:
    status, _, _ = await api.call("POST", "/crm/v3/properties/deals/groups", {"name": "kleer", "label": "Kleer"})
    assert status == 201
    _, listed, _ = await api.call("GET", "/crm/v3/properties/deals/groups")
    assert {"dealinformation", "kleer"} <= {g["name"] for g in listed["results"]}
    status, _, _ = await api.call("POST", "/crm/v3/properties/deals", {
        "name": "kleer_invoice_id", "label": "Kleer invoice", "type": "string", "fieldType": "text",
        "groupName": "kleer"})
    assert status == 201


async def test_built_in_properties_are_listed_as_hubspot_defined(api: Api) -> None:
    status, body, _ = await api.call("GET", "/crm/v3/properties/line_items")
    assert status == 200
    names = {p["name"]: p for p in body["results"]}
    for name in ("name", "quantity", "price", "amount", "hs_product_id", "hs_sku", "discount",
                 "hs_discount_percentage", "hs_line_item_currency_code", "recurringbillingfrequency"):
        assert names[name]["hubspotDefined"] is True


async def test_property_values_are_strings_and_numbers_are_coerced_and_counted(
    api: Api, kleer_ids: HubSpotSim
) -> None:
    status, body, _ = await api.call("POST", UPSERT, {"inputs": [upsert_input("k1", annualrevenue=12950)]})  # type: ignore[arg-type]
    assert status == 200
    assert body["results"][0]["properties"]["annualrevenue"] == "12950"
    assert kleer_ids.store.non_string_values == 1


async def test_strict_mode_rejects_non_string_values(api: Api, kleer_ids: HubSpotSim) -> None:
    await api.call("POST", "/_sim/config", {"strict_value_types": True})
    status, body, _ = await api.call("POST", UPSERT, {"inputs": [upsert_input("k1", annualrevenue=129.5)]})  # type: ignore[arg-type]
    assert status == 207 and body["errors"][0]["category"] == "VALIDATION_ERROR"


async def test_invalid_enumeration_option_and_date_are_validation_errors(api: Api, kleer_ids: HubSpotSim) -> None:
    inputs = [{"id": "d1", "idProperty": "kleer_id", "properties": {"dealstage": "won!"}},
              {"id": "d2", "idProperty": "kleer_id", "properties": {"closedate": "yesterday"}},
              {"id": "d3", "idProperty": "kleer_id", "properties": {"dealstage": "closedwon", "amount": "129.50",
                                                                    "closedate": "2024-05-01T00:00:00Z"}}]
    status, body, _ = await api.call("POST", "/crm/v3/objects/deals/batch/upsert", {"inputs": inputs})
    assert status == 207
    assert {e["context"]["ids"][0] for e in body["errors"]} == {"d1", "d2"}
    assert "INVALID_OPTION" in next(e["message"] for e in body["errors"] if e["context"]["ids"] == ["d1"])


async def test_every_record_keeps_id_createdate_and_lastmodifieddate(api: Api, kleer_ids: HubSpotSim) -> None:
    _, body, _ = await api.call("POST", UPSERT, {"inputs": [upsert_input("k1", name="A")]})
    record = body["results"][0]
    props = record["properties"]
    assert props["hs_object_id"] == record["id"]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", props["createdate"])
    assert props["hs_lastmodifieddate"] >= props["createdate"]
    status, body, _ = await api.call("POST", "/crm/v3/objects/companies", {"properties": {"hs_object_id": "1"}})
    assert status == 400 and "READ_ONLY_VALUE" in body["message"]


async def test_list_pages_through_every_record_with_the_after_cursor(api: Api, kleer_ids: HubSpotSim) -> None:
    for start in range(0, 250, 100):
        await api.call("POST", UPSERT, {"inputs": [upsert_input(f"k{i}", name=f"C{i}")
                                                   for i in range(start, min(250, start + 100))]})
    seen: list[str] = []
    after = ""
    pages = 0
    while True:
        status, body, _ = await api.call("GET", f"/crm/v3/objects/companies?limit=100&properties=kleer_id{after}")
        assert status == 200
        pages += 1
        seen.extend(r["properties"]["kleer_id"] for r in body["results"])
        cursor = body.get("paging", {}).get("next", {}).get("after")
        if not cursor:
            break
        after = f"&after={cursor}"
    assert pages == 3
    assert sorted(seen) == sorted(f"k{i}" for i in range(250))
    status, _, _ = await api.call("GET", "/crm/v3/objects/companies?limit=101")
    assert status == 400


async def test_batch_read_by_id_property_reports_missing_ids(api: Api, kleer_ids: HubSpotSim) -> None:
    await api.call("POST", UPSERT, {"inputs": [upsert_input("k1", name="A")]})
    status, body, _ = await api.call("POST", "/crm/v3/objects/companies/batch/read", {
        "idProperty": "kleer_id", "properties": ["name"], "inputs": [{"id": "k1"}, {"id": "nope"}]})
    assert status == 207
    assert body["results"][0]["properties"]["name"] == "A"
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND" and body["errors"][0]["context"]["ids"] == ["nope"]


async def test_batch_update_and_archive(api: Api, kleer_ids: HubSpotSim) -> None:
    _, body, _ = await api.call("POST", UPSERT, {"inputs": [upsert_input("k1", name="A")]})
    record_id = body["results"][0]["id"]
    status, body, _ = await api.call("POST", "/crm/v3/objects/companies/batch/update", {
        "inputs": [{"id": record_id, "properties": {"city": "Lund"}}, {"id": "999999", "properties": {}}]})
    assert status == 207 and body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert kleer_ids.records("companies")[0]["city"] == "Lund"
    status, _, _ = await api.call("POST", "/crm/v3/objects/companies/batch/archive", {"inputs": [{"id": record_id}]})
    assert status == 204
    assert kleer_ids.records("companies") == []


async def test_unique_value_taken_by_another_record_is_a_per_input_conflict(api: Api, kleer_ids: HubSpotSim) -> None:
    _, first, _ = await api.call("POST", "/crm/v3/objects/companies/batch/create", {
        "inputs": [{"properties": {"kleer_id": "k1"}}]})
    status, body, _ = await api.call("POST", "/crm/v3/objects/companies/batch/create", {
        "inputs": [{"properties": {"kleer_id": "k1"}, "objectWriteTraceId": "a"},
                   {"properties": {"kleer_id": "k2"}, "objectWriteTraceId": "b"}]})
    assert first["status"] == "COMPLETE"
    assert status == 207
    assert body["errors"][0]["category"] == "CONFLICT" and body["errors"][0]["context"]["objectWriteTraceId"] == ["a"]
    assert body["results"][0]["objectWriteTraceId"] == "b"


async def test_projects_live_under_crm_objects_v3(api: Api, kleer_ids: HubSpotSim) -> None:
    status, body, _ = await api.call("POST", "/crm/objects/v3/projects/batch/upsert", {
        "inputs": [{"id": "p1", "idProperty": "kleer_id", "properties": {"hs_name": "Website"}}]})
    assert status == 200 and body["results"][0]["properties"]["hs_name"] == "Website"
    status, body, _ = await api.call("GET", "/crm/v3/objects/projects")
    assert status == 404 and "/crm/objects/v3/projects" in body["message"]


async def test_search_filters_pages_and_caps(api: Api, kleer_ids: HubSpotSim) -> None:
    await api.call("POST", UPSERT, {"inputs": [upsert_input(f"k{i}", name=f"C{i}", city="Lund" if i % 2 else "Umeå")
                                               for i in range(10)]})
    query = {"filterGroups": [{"filters": [{"propertyName": "city", "operator": "EQ", "value": "lund"}]}],
             "properties": ["kleer_id"], "limit": 3}
    status, body, headers = await api.call("POST", "/crm/v3/objects/companies/search", query)
    assert status == 200 and body["total"] == 5 and len(body["results"]) == 3
    assert body["paging"]["next"]["after"] == "3"
    assert "X-HubSpot-RateLimit-Remaining" not in headers
    status, body, _ = await api.call("POST", "/crm/v3/objects/companies/search", {**query, "limit": 201})
    assert status == 400
    status, body, _ = await api.call("POST", "/crm/v3/objects/companies/search", {**query, "after": "9900",
                                                                                   "limit": 200})
    assert status == 400 and "10000" in body["message"]


async def test_search_has_its_own_lower_rate_limit(api: Api, hubspot_sim: HubSpotSim) -> None:
    hubspot_sim.set_rate_limit(search_per_s=5, time_scale=1)
    statuses = [(await api.call("POST", "/crm/v3/objects/deals/search", {"limit": 1}))[0] for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    _, body, _ = await api.call("POST", "/crm/v3/objects/deals/search", {"limit": 1})
    assert body["errorType"] == "RATE_LIMIT" and body["policyName"] == "SECONDLY"


async def test_wipe_drops_records_but_keeps_properties_and_reset_drops_both(api: Api, kleer_ids: HubSpotSim) -> None:
    await api.call("POST", UPSERT, {"inputs": [upsert_input("k1", name="A")]})
    assert (await api.call("POST", "/_sim/wipe"))[0] == 204
    _, state, _ = await api.call("GET", "/_sim/state")
    assert state["records"]["companies"] == 0 and "kleer_id" in state["custom_properties"]["companies"]
    assert (await api.call("POST", "/_sim/reset"))[0] == 204
    _, state, _ = await api.call("GET", "/_sim/state")
    assert state["custom_properties"]["companies"] == []


async def test_request_counts_are_kept_per_endpoint_and_status(api: Api, kleer_ids: HubSpotSim) -> None:
    await api.call("POST", UPSERT, {"inputs": [upsert_input("k1")]})
    await api.call("POST", UPSERT, {"inputs": "nope"})
    _, counts, _ = await api.call("GET", "/_sim/requests")
    assert counts["endpoints"]["POST /crm/v3/objects/companies/batch/upsert"] == {"200": 1, "400": 1}
