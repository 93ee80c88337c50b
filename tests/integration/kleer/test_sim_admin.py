"""The simulator's /_sim admin endpoints over HTTP: faults, request log, state, reset, seed, mutate."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sim.kleer import KleerSimServer


class Admin:
    def __init__(self, sim: KleerSimServer, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.sim.admin_url + path, json=body) as response:
            return response.status, await response.json()

    async def api(self, path: str = "/client") -> aiohttp.ClientResponse:
        url = f"{self.sim.base_url}/company/{self.sim.company_id}{path}"
        headers = {"X-Token": self.sim.token, "Accept": "application/json"}
        async with self.session.get(url, headers=headers) as response:
            await response.read()
            return response


@pytest.fixture
async def admin(kleer_sim: KleerSimServer) -> AsyncIterator[Admin]:
    async with aiohttp.ClientSession() as session:
        yield Admin(kleer_sim, session)


async def test_injected_errors_answer_the_error_shape_with_retry_after(admin: Admin) -> None:
    status, plan = await admin.call("POST", "/faults", {"error-rates": {"503": 1.0}, "retry-after": 2})
    assert status == 200 and plan["error-rates"] == {"503": 1.0}
    response = await admin.api()
    assert response.status == 503 and response.headers["Retry-After"] == "2"
    status, plan = await admin.call("DELETE", "/faults")
    assert plan["error-rates"] == {}
    assert (await admin.api()).status == 200


async def test_forced_429s_then_normal_service(admin: Admin) -> None:
    await admin.call("POST", "/faults", {"force-429": 2, "retry-after": 0.5})
    statuses = [(await admin.api()).status for _ in range(3)]
    assert statuses == [429, 429, 200]


async def test_a_bad_fault_plan_is_a_400(admin: Admin) -> None:
    status, body = await admin.call("POST", "/faults", {"error-rates": {"503": 7}})
    assert status == 400 and "error-rates.503" in body["error"]["message"]


async def test_latency_is_injected(admin: Admin) -> None:
    await admin.call("POST", "/faults", {"latency": {"distribution": "fixed", "ms": 60}})
    started = time.perf_counter()
    await admin.api()
    assert time.perf_counter() - started >= 0.05


async def test_a_dropped_connection_gives_no_answer(admin: Admin) -> None:
    admin.sim.set_faults({"drop-rate": 1.0})
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await admin.api()
    assert admin.sim.request_count(status=0) >= 1


async def test_request_log_counts_per_endpoint_and_status(admin: Admin) -> None:
    admin.sim.fail_next(500)
    for path in ("/client", "/client", "/client/invoice"):
        await admin.api(path)
    status, log = await admin.call("GET", "/requests?recent=2")
    assert status == 200 and log["total"] == 3
    assert log["by-endpoint"] == {
        "GET /v1/company/{company-id}/client": {"200": 1, "500": 1},
        "GET /v1/company/{company-id}/client/invoice": {"200": 1},
    }
    assert [r["path"] for r in log["recent"]] == ["/v1/company/1/client", "/v1/company/1/client/invoice"]
    await admin.call("DELETE", "/requests")
    assert (await admin.call("GET", "/requests"))[1]["total"] == 0


async def test_seed_state_mutate_and_reset(admin: Admin) -> None:
    status, summary = await admin.call("POST", "/seed", {"clients": 25, "seed": 3})
    assert status == 200 and summary["clients"] == 25 and summary["invoices"] > 0
    status, state = await admin.call("GET", "/state")
    assert state["companies"]["1"]["client"] == 25

    status, report = await admin.call("POST", "/mutate", {"share": 0.2, "seed": 5})
    assert status == 200 and len(report["changed"]["client"]) == 5 and report["counts"]["changed"] >= 5
    status, second = await admin.call("POST", "/mutate", {"share": 0.2})
    assert status == 200 and second["seed"] == 2  # without a seed, each call takes the next one

    status, dump = await admin.call("GET", "/state?records=true&resource=client")
    names = {c["id"]: c["name"] for c in dump["1"]["client"]}
    assert len(names) == len(admin.sim.book.clients)

    status, answer = await admin.call("POST", "/reset", {"clients": 4, "seed": 1})
    assert answer["reset"] is True and answer["seeded"]["clients"] == 4
    assert len(admin.sim.book.clients) == 4


async def test_admin_input_is_checked(admin: Admin) -> None:
    assert (await admin.call("POST", "/mutate", {"share": 2}))[0] == 400
    assert (await admin.call("POST", "/mutate", {"company-id": 99}))[0] == 404
    assert (await admin.call("POST", "/seed", {"clients": -1}))[0] == 400
    assert (await admin.call("GET", "/state?records=1&resource=invoice"))[0] == 400


async def test_a_second_company_has_its_own_book(admin: Admin) -> None:
    status, company = await admin.call("POST", "/companies", {"company-id": 77, "name": "Andra AB"})
    assert status == 200 and company == {"company-id": 77, "name": "Andra AB"}
    await admin.call("POST", "/seed", {"clients": 3, "company-id": 77})
    url = f"{admin.sim.base_url}/company/77/client"
    async with admin.session.get(url, headers={"X-Token": admin.sim.token, "Accept": "application/json"}) as response:
        assert (await response.json())["size"] == 3
    assert len(admin.sim.book.clients) == 0
