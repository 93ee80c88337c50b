"""KleerClient against the simulator over real HTTP: paging, retries, typed errors, secrecy, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from libs.config import ConfigError, Secret, load_settings
from libs.kleer import (
    CLIENT,
    INVOICE,
    KleerAuthError,
    KleerClient,
    KleerError,
    KleerNotFound,
    KleerUnavailable,
    KleerValidationError,
    RetryPolicy,
)
from sim.kleer import KleerSimServer
from tests.fixtures.kleer_sim import FAST_RETRY

LIST_CLIENTS = "/v1/company/{company-id}/client"


class RecordedSleep:
    """Stands in for asyncio.sleep: remembers each wait and only yields."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def client_for(sim: KleerSimServer, **options: Any) -> KleerClient:
    options.setdefault("retry", FAST_RETRY)
    return KleerClient(company_id=sim.company_id, token=Secret(sim.token), base_url=sim.base_url, **options)


@pytest.fixture
async def seeded(kleer_sim: KleerSimServer) -> AsyncIterator[KleerSimServer]:
    kleer_sim.seed(n_clients=30, seed=8)
    yield kleer_sim


async def test_list_all_follows_the_pages_to_the_end(seeded: KleerSimServer, kleer_client: KleerClient) -> None:
    clients = await kleer_client.list_all(CLIENT, page_size=7)
    assert [c["id"] for c in clients] == seeded.book.clients.ids()
    assert seeded.request_count("GET", LIST_CLIENTS) == 5  # 30 records in pages of 7, no extra empty page
    invoices = await kleer_client.invoices.list_all(page_size=13)
    assert [i["id"] for i in invoices] == seeded.book.invoices.ids() and all(i["rows"] for i in invoices)


async def test_pages_come_in_order_with_every_record_once(seeded: KleerSimServer, kleer_client: KleerClient) -> None:
    sizes = []
    seen: list[int] = []
    async for page in kleer_client.clients.pages(page_size=8):
        sizes.append(len(page))
        seen += [c["id"] for c in page]
    assert sizes == [8, 8, 8, 6] and seen == seeded.book.clients.ids()


async def test_a_caller_may_stop_paging_early(seeded: KleerSimServer, kleer_client: KleerClient) -> None:
    async for page in kleer_client.clients.pages(page_size=5):
        assert len(page) == 5
        break
    assert seeded.request_count("GET", LIST_CLIENTS) <= 2  # the first page and at most the prefetched second


async def test_list_filters_reach_kleer(seeded: KleerSimServer, kleer_client: KleerClient) -> None:
    day = min(i["invoice-date"] for i in seeded.book.invoices)
    invoices = await kleer_client.invoices.list_all(params={"from-date": day, "to-date": day})
    assert invoices and all(i["invoice-date"] == day for i in invoices)


async def test_retries_on_503_then_succeeds(seeded: KleerSimServer) -> None:
    seeded.fail_next(503, 503)
    async with client_for(seeded) as kleer:
        client = await kleer.clients.get(seeded.book.clients.ids()[0])
    assert client["id"] == seeded.book.clients.ids()[0]
    assert seeded.request_count(status=503) == 2 and seeded.request_count(status=200) == 1


async def test_429_is_retried_after_the_servers_retry_after(seeded: KleerSimServer) -> None:
    seeded.set_faults({"force-429": 1, "retry-after": 0.4})
    sleep = RecordedSleep()
    async with client_for(seeded, sleep=sleep) as kleer:
        clients = await kleer.clients.list_all()
    assert len(clients) == 30
    assert sleep.delays and sleep.delays[0] >= 0.4


async def test_a_dropped_connection_is_retried_for_reads(seeded: KleerSimServer) -> None:
    seeded.fail_next(0, 0, 0)
    async with client_for(seeded) as kleer:
        assert len(await kleer.clients.list_all()) == 30


async def test_gives_up_after_the_last_attempt(seeded: KleerSimServer) -> None:
    seeded.fail_next(*[503] * 10)
    policy = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002)
    async with client_for(seeded, retry=policy) as kleer:
        with pytest.raises(KleerUnavailable) as caught:
            await kleer.clients.get(seeded.book.clients.ids()[0])
    assert caught.value.attempts == 3 and caught.value.status == 503
    assert "injected failure" in str(caught.value)
    assert seeded.request_count() == 3


async def test_a_slow_kleer_times_out_and_is_retried(seeded: KleerSimServer) -> None:
    seeded.set_faults({"latency": {"distribution": "fixed", "ms": 300}})
    policy = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.002)
    async with client_for(seeded, retry=policy, timeout=0.05) as kleer:
        with pytest.raises(KleerUnavailable, match="did not answer in time") as caught:
            await kleer.clients.get(seeded.book.clients.ids()[0])
    assert caught.value.attempts == 2


async def test_a_400_is_not_retried_and_carries_kleers_message_and_the_record(
    kleer_sim: KleerSimServer, kleer_client: KleerClient
) -> None:
    record = {"name": 42}
    with pytest.raises(KleerValidationError) as caught:
        await kleer_client.create(CLIENT, record)
    assert caught.value.message == "client.name must be a string, got the integer 42"
    assert caught.value.record == record and caught.value.status == 400
    assert "PUT /company/{company-id}/client" in str(caught.value)
    assert kleer_sim.request_count() == 1


async def test_other_failures_map_to_their_types(seeded: KleerSimServer, kleer_client: KleerClient) -> None:
    with pytest.raises(KleerNotFound, match="client-invoice 1 not found"):
        await kleer_client.invoices.get(1)
    wrong = KleerClient(company_id=seeded.company_id, token=Secret("not-the-token"), base_url=seeded.base_url)
    async with wrong:
        with pytest.raises(KleerAuthError):
            await wrong.clients.list_all()
    missing = KleerClient(company_id=999, token=Secret(seeded.token), base_url=seeded.base_url)
    async with missing:
        with pytest.raises(KleerNotFound, match="company 999 not found"):
            await missing.clients.list_all()
    assert seeded.request_count(status=401) == 1


async def test_create_update_delete_through_the_client(kleer_sim: KleerSimServer, kleer_client: KleerClient) -> None:
    client_id = await kleer_client.clients.create({"name": "Växjö Trädgård AB", "payment-days": 15})
    agreement_id = await kleer_client.agreements.create(
        {"client-ref": {"id": client_id}, "invoice-interval-months": 12,
         "recurring-rows": [{"quantity": 1, "price": 1200000}]}
    )
    saved = await kleer_client.agreements.update(agreement_id, {"description": "Driftavtal"})
    assert saved == {"id": agreement_id, "revision-nr": 2}
    agreement = await kleer_client.agreements.get(agreement_id)
    assert agreement["description"] == "Driftavtal" and agreement["invoice-interval-months"] == 12
    await kleer_client.agreements.delete(agreement_id)
    assert (await kleer_client.agreements.get(agreement_id))["deleted"] is True
    project_id = await kleer_client.projects.create({"name": "Takbyte", "client": {"id": client_id}})
    await kleer_client.projects.delete(project_id)
    with pytest.raises(KleerNotFound):
        await kleer_client.projects.get(project_id)


async def test_a_create_refused_before_processing_is_sent_again_once_stored(
    kleer_sim: KleerSimServer, kleer_client: KleerClient
) -> None:
    kleer_sim.fail_next(503, 429)
    new_id = await kleer_client.clients.create({"name": "Luleå El AB"})
    assert [c["id"] for c in kleer_sim.book.clients] == [new_id]


@pytest.mark.parametrize("plan", [{"drop-after-rate": 1.0}, {"fail-next": [500]}])
async def test_a_create_with_an_unknown_outcome_is_not_resent(kleer_sim: KleerSimServer, plan: dict[str, Any]) -> None:
    kleer_sim.set_faults(plan)
    async with client_for(kleer_sim) as kleer:
        with pytest.raises(KleerUnavailable) as caught:
            await kleer.clients.create({"name": "Gävle Rör AB"})
    assert caught.value.ambiguous and "look the record up" in str(caught.value)
    assert kleer_sim.request_count("PUT") == 1
    assert len(kleer_sim.book.clients) == (1 if "drop-after-rate" in plan else 0)


async def test_concurrency_is_bounded(seeded: KleerSimServer) -> None:
    seeded.set_faults({"latency": {"distribution": "fixed", "ms": 20}})
    ids = seeded.book.clients.ids()[:12]
    async with client_for(seeded, max_concurrency=3) as kleer:
        records = await asyncio.gather(*(kleer.clients.get(i) for i in ids))
    assert [r["id"] for r in records] == ids
    assert seeded.requests.max_in_flight == 3


async def test_the_token_never_reaches_logs_or_errors(kleer_sim: KleerSimServer) -> None:
    token = kleer_sim.token
    kleer_sim.fail_next(503, 503, 503, 503, 503)
    with capture_logs() as logs:
        async with client_for(kleer_sim) as kleer:
            assert token not in repr(kleer)
            with pytest.raises(KleerError) as unavailable:
                await kleer.clients.list_all()
            with pytest.raises(KleerError) as invalid:
                await kleer.clients.create({"name": ""})
    assert logs and any(entry["event"] == "kleer_request_retry" for entry in logs)
    for text in [repr(logs), str(unavailable.value), repr(unavailable.value), str(invalid.value)]:
        assert token not in text


async def test_requests_are_counted_by_route_template(seeded: KleerSimServer, kleer_client: KleerClient) -> None:
    endpoint = "GET /company/{company-id}/client/{id}"

    def count(status: str) -> float:
        return REGISTRY.get_sample_value("kleer_sync_kleer_requests_total", {"endpoint": endpoint, "status": status}) or 0

    before_ok, before_503 = count("200"), count("503")
    seeded.fail_next(503)
    await kleer_client.clients.get(seeded.book.clients.ids()[0])
    assert (count("200") - before_ok, count("503") - before_503) == (1, 1)
    assert REGISTRY.get_sample_value("kleer_sync_kleer_request_seconds_count", {"endpoint": endpoint})


def test_client_from_settings_needs_a_token_and_a_company() -> None:
    env = {"KLEER_API_BASE": "http://127.0.0.1:1/v1", "KLEER_COMPANY_ID": "7", "KLEER_TOKEN": "t0ken-value"}
    client = KleerClient.from_settings(load_settings(env=env))
    assert (client.base_url, client.company_id) == ("http://127.0.0.1:1/v1", 7)
    assert "t0ken-value" not in repr(client)
    with pytest.raises(ConfigError, match="KLEER_TOKEN"):
        KleerClient.from_settings(load_settings(env={"KLEER_COMPANY_ID": "7"}))


async def test_invoice_resource_shortcuts_match_the_generic_calls(seeded: KleerSimServer, kleer_client: KleerClient) -> None:
    first = seeded.book.invoices.ids()[0]
    assert await kleer_client.invoices.get(first) == await kleer_client.get(INVOICE, first)
