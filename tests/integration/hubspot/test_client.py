"""HubSpotClient against the simulator over real HTTP: chunking, per-input outcomes, retries, auth, budget."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import pytest
import structlog

from libs.config import Secret
from libs.hubspot import (
    AssociationInput,
    HubSpotAuthError,
    HubSpotClient,
    HubSpotNotFound,
    HubSpotRateLimited,
    HubSpotUnavailable,
    HubSpotValidationError,
    ObjectType,
    PropertyGroupSpec,
    PropertySpec,
    RecordInput,
    SlidingWindowBudget,
)
from libs.hubspot.auth import OAuthCredentials
from libs.observability.metrics import HUBSPOT_RATE_LIMITED, HUBSPOT_REQUESTS
from tests.fixtures.hubspot_sim import HubSpotSim

COMPANIES = ObjectType.COMPANIES
UPSERT_ENDPOINT = "POST /crm/v3/objects/companies/batch/upsert"


def companies(n: int, prefix: str = "k", **extra: str) -> list[RecordInput]:
    return [RecordInput({"name": f"Company {i}", **extra}, id=f"{prefix}{i}") for i in range(n)]


def upsert_requests(sim: HubSpotSim) -> dict[str, int]:
    return sim.request_counts()["endpoints"].get(UPSERT_ENDPOINT, {})


async def test_upsert_sends_chunks_of_100_and_reports_every_input(kleer_ids: HubSpotSim) -> None:
    async with kleer_ids.client() as hubspot:
        result = await hubspot.batch_upsert(COMPANIES, companies(250), id_property="kleer_id")
    assert result.ok and len(result.succeeded) == 250
    assert [s.index for s in result.succeeded] == list(range(250))
    assert all(s.new for s in result.succeeded)
    assert upsert_requests(kleer_ids) == {"200": 3}
    by_kleer_id = {r["kleer_id"]: r["hs_object_id"] for r in kleer_ids.records("companies")}
    assert all(by_kleer_id[f"k{s.index}"] == s.id for s in result.succeeded)


async def test_upserting_again_updates_the_same_records(kleer_ids: HubSpotSim) -> None:
    async with kleer_ids.client() as hubspot:
        first = await hubspot.batch_upsert(COMPANIES, companies(5), id_property="kleer_id")
        second = await hubspot.batch_upsert(COMPANIES, companies(5, city="Lund"), id_property="kleer_id")
    assert first.ids() == second.ids()
    assert not any(s.new for s in second.succeeded)
    assert len(kleer_ids.records("companies")) == 5


async def test_207_outcomes_are_reported_per_input(kleer_ids: HubSpotSim) -> None:
    inputs = companies(150)
    inputs[7] = RecordInput({"numberofemployees": "a few"}, id="k7")
    inputs[120] = RecordInput({"annualrevenue": "lots"}, id="k120")
    async with kleer_ids.client() as hubspot:
        result = await hubspot.batch_upsert(COMPANIES, inputs, id_property="kleer_id")
    assert [f.index for f in result.failed] == [7, 120]
    assert all(f.category == "VALIDATION_ERROR" and f.status == 207 and not f.whole_chunk for f in result.failed)
    assert "numberofemployees" in result.failed[0].message
    assert len(result.succeeded) == 148
    assert len(kleer_ids.records("companies")) == 148


async def test_inputs_with_the_same_id_are_merged_and_share_one_outcome(kleer_ids: HubSpotSim) -> None:
    inputs = [RecordInput({"name": "Old"}, id="k1"), RecordInput({"city": "Lund"}, id="k2"),
              RecordInput({"name": "New"}, id="k1")]
    async with kleer_ids.client() as hubspot:
        result = await hubspot.batch_upsert(COMPANIES, inputs, id_property="kleer_id")
    assert result.ok and result.ids()[0] == result.ids()[2] != result.ids()[1]
    records = {r["kleer_id"]: r for r in kleer_ids.records("companies")}
    assert records["k1"]["name"] == "New"


async def test_a_chunk_refused_as_a_whole_marks_each_of_its_inputs_failed(kleer_ids: HubSpotSim) -> None:
    inputs = companies(120)
    inputs[110] = RecordInput({"no_such_property": "x"}, id="k110")
    async with kleer_ids.client() as hubspot:
        result = await hubspot.batch_upsert(COMPANIES, inputs, id_property="kleer_id")
    assert [f.index for f in result.failed] == list(range(100, 120))
    assert all(f.whole_chunk and f.status == 400 and "PROPERTY_DOESNT_EXIST" in f.message for f in result.failed)
    assert len(result.succeeded) == 100


async def test_create_update_read_and_archive(kleer_ids: HubSpotSim) -> None:
    async with kleer_ids.client() as hubspot:
        created = await hubspot.batch_create(ObjectType.DEALS, [{"dealname": f"D{i}"} for i in range(130)])
        assert created.ok and len(created.ids()) == 130
        ids = [created.ids()[i] for i in range(130)]
        updated = await hubspot.batch_update(ObjectType.DEALS, [RecordInput({"amount": "10.50"}, id=i) for i in ids])
        assert updated.ok
        read = await hubspot.batch_read(ObjectType.DEALS, [*ids[:3], "999999"], properties=["amount", "dealname"])
        assert [s.record.properties["amount"] for s in read.succeeded] == ["10.50"] * 3
        assert [(f.index, f.category) for f in read.failed] == [(3, "OBJECT_NOT_FOUND")]
        await hubspot.batch_archive(ObjectType.DEALS, ids)
    assert kleer_ids.records("deals") == []


async def test_read_by_unique_property(kleer_ids: HubSpotSim) -> None:
    async with kleer_ids.client() as hubspot:
        await hubspot.batch_upsert(COMPANIES, companies(3), id_property="kleer_id")
        read = await hubspot.batch_read(COMPANIES, ["k2", "k0", "nope"], properties=["name"], id_property="kleer_id")
    assert [(s.index, s.record.properties["name"]) for s in read.succeeded] == [(0, "Company 2"), (1, "Company 0")]
    assert [f.index for f in read.failed] == [2]


async def test_list_follows_the_cursor_to_the_end(kleer_ids: HubSpotSim) -> None:
    async with kleer_ids.client() as hubspot:
        await hubspot.batch_upsert(COMPANIES, companies(230), id_property="kleer_id")
        records = await hubspot.list_records(COMPANIES, properties=["kleer_id"])
    assert sorted(r.properties["kleer_id"] or "" for r in records) == sorted(f"k{i}" for i in range(230))
    assert kleer_ids.request_counts()["endpoints"]["GET /crm/v3/objects/companies"] == {"200": 3}


async def test_projects_go_to_their_own_path(kleer_ids: HubSpotSim) -> None:
    async with kleer_ids.client() as hubspot:
        result = await hubspot.batch_upsert(ObjectType.PROJECTS, [RecordInput({"hs_name": "P"}, id="p1")],
                                            id_property="kleer_id")
        listed = await hubspot.list_records(ObjectType.PROJECTS, properties=["hs_name"])
    assert result.ok and [r.properties["hs_name"] for r in listed] == ["P"]


async def test_ensure_properties_is_idempotent(hubspot_sim: HubSpotSim) -> None:
    specs = [PropertySpec("kleer_id", "Kleer id", has_unique_value=True), PropertySpec("kleer_invoice_id", "Invoice")]
    group = PropertyGroupSpec("kleer", "Kleer")
    async with hubspot_sim.client() as hubspot:
        first = await hubspot.ensure_properties(ObjectType.DEALS, specs, group=group)
        second = await hubspot.ensure_properties(ObjectType.DEALS, specs, group=group)
        hubspot_sim.create_property("companies", "kleer_id")  # exists, but not unique
        third = await hubspot.ensure_properties(COMPANIES, specs[:1])
    assert first.created == ("kleer_id", "kleer_invoice_id") and first.group_created
    assert second.created == () and second.existing == ("kleer_id", "kleer_invoice_id") and not second.group_created
    assert third.mismatched == ("kleer_id",)
    assert hubspot_sim.store.properties[ObjectType.DEALS]["kleer_id"].group_name == "kleer"


async def test_associations_batch_default_and_read(kleer_ids: HubSpotSim) -> None:
    async with kleer_ids.client(association_chunk_size=2) as hubspot:
        invoices = await hubspot.batch_upsert(ObjectType.INVOICES, [RecordInput({}, id=f"i{i}") for i in range(3)],
                                              id_property="kleer_id")
        company = (await hubspot.batch_upsert(COMPANIES, companies(1), id_property="kleer_id")).ids()[0]
        project = (await hubspot.batch_upsert(ObjectType.PROJECTS, [RecordInput({}, id="p")],
                                              id_property="kleer_id")).ids()[0]
        inputs = [AssociationInput(invoices.ids()[i], company) for i in range(3)] + [
            AssociationInput("404404", company)]
        result = await hubspot.associate_batch(ObjectType.INVOICES, COMPANIES, inputs)
        assert result.written == 3 and [f.index for f in result.failed] == [3]
        defaulted = await hubspot.associate_batch(ObjectType.PROJECTS, COMPANIES, [AssociationInput(project, company)])
        assert defaulted.ok
        await hubspot.associate(ObjectType.DEALS if False else ObjectType.INVOICES, invoices.ids()[0], COMPANIES,
                                company)
        found = await hubspot.get_associations(COMPANIES, company, ObjectType.INVOICES)
    assert sorted(a.to_id for a in found) == sorted(invoices.ids().values())
    assert {a.type_ids for a in found} == {(180,)}


async def test_search_pages_through_results(kleer_ids: HubSpotSim) -> None:
    async with kleer_ids.client() as hubspot:
        await hubspot.batch_upsert(COMPANIES, companies(250, city="Lund"), id_property="kleer_id")
        found = await hubspot.search(COMPANIES, filter_groups=[{"filters": [
            {"propertyName": "city", "operator": "EQ", "value": "Lund"}]}], properties=["kleer_id"])
    assert len(found) == 250


async def test_retries_transient_statuses_then_succeeds(kleer_ids: HubSpotSim) -> None:
    kleer_ids.set_faults(storm_429={"requests": 2})
    async with kleer_ids.client() as hubspot:
        result = await hubspot.batch_upsert(COMPANIES, companies(1), id_property="kleer_id")
    assert result.ok
    assert upsert_requests(kleer_ids) == {"429": 2, "200": 1}


@pytest.mark.parametrize("status", [502, 503, 504, 521, 523, 524, 423])
async def test_every_retryable_status_is_retried(kleer_ids: HubSpotSim, status: int) -> None:
    kleer_ids.set_faults(error_rates={status: 1.0})
    async with kleer_ids.client(max_retries=2) as hubspot:
        with pytest.raises(HubSpotUnavailable) as info:
            await hubspot.list_records(COMPANIES)
    assert info.value.attempts == 3 and info.value.status == status
    assert kleer_ids.request_counts()["endpoints"]["GET /crm/v3/objects/companies"] == {str(status): 3}


@pytest.mark.parametrize("status", [400, 403, 404, 409, 500])
async def test_other_errors_are_not_retried(kleer_ids: HubSpotSim, status: int) -> None:
    kleer_ids.set_faults(error_rates={status: 1.0})
    async with kleer_ids.client() as hubspot:
        with pytest.raises(Exception) as info:
            await hubspot.list_records(COMPANIES)
    assert getattr(info.value, "status", None) == status
    assert kleer_ids.request_counts()["endpoints"]["GET /crm/v3/objects/companies"] == {str(status): 1}


async def test_dropped_connections_are_retried(kleer_ids: HubSpotSim) -> None:
    kleer_ids.set_faults(drop_rate=1.0)
    async with kleer_ids.client(max_retries=2) as hubspot:
        with pytest.raises(HubSpotUnavailable):
            await hubspot.list_records(COMPANIES)
        kleer_ids.clear_faults()
        assert await hubspot.list_records(COMPANIES) == []


async def test_typed_errors_for_refusals(kleer_ids: HubSpotSim) -> None:
    async with kleer_ids.client() as hubspot:
        with pytest.raises(HubSpotValidationError) as info:
            await hubspot.create_property(COMPANIES, PropertySpec("Bad Name", "x"))
        assert info.value.category == "VALIDATION_ERROR" and info.value.correlation_id
        with pytest.raises(HubSpotNotFound):
            await hubspot.complete_callback("never-issued", {"hs_execution_state": "SUCCESS"})


async def test_daily_limit_is_not_retried(kleer_ids: HubSpotSim) -> None:
    kleer_ids.set_rate_limit(daily=1)
    async with kleer_ids.client() as hubspot:
        await hubspot.list_records(COMPANIES)
        with pytest.raises(HubSpotRateLimited) as info:
            await hubspot.list_records(COMPANIES)
    assert info.value.policy == "DAILY"


async def test_oauth_token_is_refreshed_once_on_401(kleer_ids: HubSpotSim) -> None:
    async with kleer_ids.client(oauth=True) as hubspot:
        await hubspot.list_records(COMPANIES)
        kleer_ids.sim.tokens.expire_all()
        await hubspot.list_records(COMPANIES)
    assert kleer_ids.sim.tokens.issued == 2


async def test_expired_oauth_token_is_renewed_before_use(kleer_ids: HubSpotSim) -> None:
    kleer_ids.sim.config.access_token_lifetime_s = 0.2
    async with kleer_ids.client(oauth=True) as hubspot:
        await hubspot.list_records(COMPANIES)
        await asyncio.sleep(0.25)
        await hubspot.list_records(COMPANIES)
    assert kleer_ids.sim.tokens.issued == 2
    assert "401" not in kleer_ids.request_counts()["endpoints"]["GET /crm/v3/objects/companies"]


async def test_refused_oauth_refresh_fails_loudly(kleer_ids: HubSpotSim) -> None:
    credentials = OAuthCredentials(kleer_ids.client_id, Secret(kleer_ids.client_secret), Secret("revoked"))
    async with HubSpotClient(base_url=kleer_ids.base_url, oauth=credentials) as hubspot:
        with pytest.raises(HubSpotAuthError) as info:
            await hubspot.list_records(COMPANIES)
    assert "BAD_REFRESH_TOKEN" in str(info.value)


async def test_a_bad_private_token_fails_without_retrying(kleer_ids: HubSpotSim) -> None:
    async with HubSpotClient(base_url=kleer_ids.base_url, token=Secret("pat-na1-wrong-token-0000")) as hubspot:
        with pytest.raises(HubSpotAuthError) as info:
            await hubspot.list_records(COMPANIES)
    assert info.value.status == 401 and info.value.category == "INVALID_AUTHENTICATION"


async def test_tokens_never_appear_in_logs_or_errors(kleer_ids: HubSpotSim, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    with structlog.testing.capture_logs() as captured:
        kleer_ids.set_faults(storm_429={"requests": 2})
        async with kleer_ids.client(oauth=True, max_retries=3) as hubspot:
            await hubspot.list_records(COMPANIES)
            kleer_ids.sim.tokens.expire_all()
            await hubspot.list_records(COMPANIES)
            kleer_ids.set_faults(error_rates={503: 1.0})
            try:
                await hubspot.list_records(COMPANIES)
            except HubSpotUnavailable as exc:
                errors.append(f"{exc!s} {exc!r}")
            access_tokens = list(kleer_ids.sim.tokens._access)
            errors.append(repr(hubspot))
        kleer_ids.set_faults(error_rates={400: 1.0})
        async with HubSpotClient(base_url=kleer_ids.base_url, token=Secret(kleer_ids.token)) as private:
            try:
                await private.list_records(COMPANIES)
            except HubSpotValidationError as exc:
                errors.append(f"{exc!s} {exc!r}")
    events = {e["event"] for e in captured}
    assert {"hubspot_retry", "hubspot_token_refresh"} <= events
    assert len(errors) == 3
    text = repr(captured) + caplog.text + "\n".join(errors)
    for secret in [kleer_ids.token, kleer_ids.client_secret, kleer_ids.refresh_token, *access_tokens]:
        assert secret not in text


async def test_budget_keeps_a_burst_of_300_requests_under_the_limit_with_zero_429s(kleer_ids: HubSpotSim) -> None:
    kleer_ids.set_rate_limit(100, 10_000, time_scale=20)  # 100 per 500 ms
    before = HUBSPOT_RATE_LIMITED.labels(policy="TEN_SECONDLY_ROLLING")._value.get()
    budget = SlidingWindowBudget(100, 10_000)
    async with kleer_ids.client(budget=budget) as hubspot:
        await hubspot.list_records(COMPANIES)  # the first answer's headers teach the budget the 500 ms window
        started = time.monotonic()
        answers = await asyncio.gather(*(
            hubspot.request("GET", "/crm/v3/objects/{objectType}", "/crm/v3/objects/companies",
                            params={"limit": "1"}) for _ in range(300)))
        elapsed = time.monotonic() - started
    assert {a.status for a in answers} == {200}
    assert kleer_ids.request_counts()["endpoints"]["GET /crm/v3/objects/companies"] == {"200": 301}
    assert HUBSPOT_RATE_LIMITED.labels(policy="TEN_SECONDLY_ROLLING")._value.get() == before
    # 95 grants per ~510 ms window: 300 requests cannot finish before the fourth window opens.
    assert elapsed > 1.4
    assert HUBSPOT_REQUESTS.labels(endpoint="GET /crm/v3/objects/{objectType}", status="200")._value.get() >= 300


async def test_budgeted_upserts_of_many_records_meet_no_429(kleer_ids: HubSpotSim) -> None:
    kleer_ids.set_rate_limit(20, 10_000, time_scale=50)  # 20 per 200 ms
    async with kleer_ids.client(budget=SlidingWindowBudget(20, 200), concurrency=8) as hubspot:
        result = await hubspot.batch_upsert(COMPANIES, companies(3_000), id_property="kleer_id")
    assert result.ok
    assert upsert_requests(kleer_ids) == {"200": 30}


class _Recording(SlidingWindowBudget):
    """A budget that keeps what the client told it: ("sent", went) and ("observe", status), with the time."""

    def __init__(self) -> None:
        super().__init__(100, 10_000)
        self.calls: list[tuple[str, object, float]] = []

    def sent(self, went: bool = True) -> None:
        self.calls.append(("sent", went, time.monotonic()))
        super().sent(went)

    def observe(self, headers: Mapping[str, str], status: int = 200) -> None:
        self.calls.append(("observe", status, time.monotonic()))
        super().observe(headers, status)


async def test_each_granted_request_tells_its_budget_once_when_it_went_out(kleer_ids: HubSpotSim) -> None:
    """``sent`` once per grant, before its answer's ``observe``: True once its headers are out, False when it
    never went out (a shared budget then stops counting that grant at once)."""
    budget = _Recording()
    kleer_ids.set_faults(latency={"ms": 300})  # every answer takes 300 ms more
    async with kleer_ids.client(budget=budget) as hubspot:
        await asyncio.gather(*(hubspot.list_records(COMPANIES) for _ in range(5)))
    kleer_ids.clear_faults()
    assert sorted((kind, value) for kind, value, _ in budget.calls) == [("observe", 200)] * 5 + [("sent", True)] * 5
    first_answer = min(at for kind, _, at in budget.calls if kind == "observe")
    assert all(at < first_answer - 0.25 for kind, _, at in budget.calls if kind == "sent")  # out before answers

    gone = _Recording()
    async with HubSpotClient(base_url="http://127.0.0.1:9", token=Secret("pat-x"), budget=gone, max_retries=1,
                             retry_base_s=0.01) as hubspot:
        with pytest.raises(HubSpotUnavailable):
            await hubspot.list_records(COMPANIES)  # nothing listens there: no request ever went out
    assert [(kind, value) for kind, value, _ in gone.calls] == [("sent", False), ("observe", 0)] * 2  # two tries
