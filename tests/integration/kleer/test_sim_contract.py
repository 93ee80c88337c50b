"""The Kleer simulator over real HTTP, fact by fact from shared/kleer-api.md."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDictProxy

from sim.kleer import KleerSimServer

JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}


class Api:
    """Raw HTTP against the simulator's default company, JSON unless told otherwise."""

    def __init__(self, sim: KleerSimServer, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session
        self.company = f"{sim.base_url}/company/{sim.company_id}"

    async def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, CIMultiDictProxy[str]]:
        sent = {"X-Token": self.sim.token, **JSON_HEADERS, **(headers or {})}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        async with self.session.request(method, self.company + path, data=data, headers=sent) as response:
            text = await response.read()
            is_json = response.content_type == "application/json"
            return response.status, json.loads(text) if is_json else text.decode(), response.headers


@pytest.fixture
async def api(kleer_sim: KleerSimServer) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(kleer_sim, session)


async def test_without_accept_json_the_answer_is_xml(api: Api) -> None:
    api.sim.seed(n_clients=3, seed=1)
    status, body, headers = await api.call("GET", "/client", headers={"Accept": "*/*"})
    assert status == 200 and headers["Content-Type"].startswith("application/xml")
    root = ElementTree.fromstring(body)
    assert root.tag == "clients" and root.attrib["size"] == "3"
    assert [c.tag for c in root] == ["client"] * 3 and root[0].findtext("name")


async def test_errors_are_xml_too_without_accept_json(api: Api) -> None:
    status, body, _ = await api.call("GET", "/client/999999", headers={"Accept": "application/xml"})
    assert status == 404
    assert ElementTree.fromstring(body).findtext("message") == "client 999999 not found"


@pytest.mark.parametrize("token", ["wrong-token", ""])
async def test_a_wrong_or_missing_token_is_a_401_with_the_error_shape(api: Api, token: str) -> None:
    status, body, _ = await api.call("GET", "/client", headers={"X-Token": token})
    assert status == 401
    assert set(body) == {"error"} and "X-Token" in body["error"]["message"]
    assert token not in body["error"]["message"] or not token


async def test_an_unknown_company_is_a_404(api: Api) -> None:
    async with api.session.get(
        f"{api.sim.base_url}/company/4711/client", headers={"X-Token": api.sim.token, **JSON_HEADERS}
    ) as response:
        assert response.status == 404
        assert (await response.json()) == {"error": {"message": "company 4711 not found"}}


async def test_put_creates_post_updates_delete_deletes(api: Api) -> None:
    status, body, _ = await api.call("PUT", "/client", {"name": "Kalmar Konsult AB", "payment-days": 20})
    assert status == 200 and set(body) == {"created"}
    client_id = body["created"]["id"]
    assert isinstance(client_id, int)

    status, record, _ = await api.call("GET", f"/client/{client_id}")
    assert status == 200 and record["name"] == "Kalmar Konsult AB" and record["payment-days"] == 20
    assert "payment-days" in record and "currency-type" in record  # kebab-case keys, every field present

    status, body, _ = await api.call("POST", f"/client/{client_id}", {"email": "info@kalmarkonsult.se"})
    assert (status, body) == (200, {"saved": {"id": client_id}})
    _, record, _ = await api.call("GET", f"/client/{client_id}")
    assert record["email"] == "info@kalmarkonsult.se" and record["name"] == "Kalmar Konsult AB"

    status, body, _ = await api.call("DELETE", f"/client/{client_id}")
    assert (status, body) == (200, {"deleted": {"id": client_id}})
    status, body, _ = await api.call("GET", f"/client/{client_id}")
    assert status == 404 and body["error"]["message"] == f"client {client_id} not found"


async def test_each_agreement_update_makes_a_new_revision(api: Api) -> None:
    _, created, _ = await api.call("PUT", "/client", {"name": "Mora Data AB"})
    client = created["created"]["id"]
    _, created, _ = await api.call(
        "PUT",
        "/client/agreement",
        {"client-ref": {"id": client}, "invoice-interval-months": 1,
         "recurring-rows": [{"quantity": 1, "price": 49900, "description": "Licens"}]},
    )
    agreement = created["created"]["id"]
    _, record, _ = await api.call("GET", f"/client/agreement/{agreement}")
    assert record["revision-nr"] == 1
    for expected in (2, 3):
        status, body, _ = await api.call(
            "POST", f"/client/agreement/{agreement}", {"recurring-rows": [{"quantity": expected, "price": 49900}]}
        )
        assert (status, body) == (200, {"saved": {"id": agreement, "revision-nr": expected}})
    _, record, _ = await api.call("GET", f"/client/agreement/{agreement}")
    assert record["revision-nr"] == 3 and record["recurring-rows"][0]["quantity"] == 3
    await api.call("DELETE", f"/client/agreement/{agreement}")
    _, record, _ = await api.call("GET", f"/client/agreement/{agreement}")
    assert record["deleted"] is True and record["revision-nr"] == 4


@pytest.mark.parametrize("limit", [1, 7, 100, 5000])
async def test_paging_returns_every_record_exactly_once(api: Api, limit: int) -> None:
    api.sim.seed(n_clients=45, seed=2)
    for resource, path in (("client", "/client"), ("client-invoice", "/client/invoice")):
        seen: list[int] = []
        offset = 0
        while True:
            status, page, _ = await api.call("GET", f"{path}?offset={offset}&limit={limit}")
            assert status == 200
            items = page[resource]
            assert page["offset"] == offset and page["limit"] == len(items) <= min(limit, 1000)
            assert page["size"] == len(api.sim.book.tables[resource])
            seen += [item["id"] for item in items]
            offset += len(items)
            if not items or offset >= page["size"]:
                break
        assert sorted(seen) == seen and len(set(seen)) == len(seen)
        assert set(seen) == {r["id"] for r in api.sim.book.tables[resource]}


async def test_lists_carry_complete_records(api: Api) -> None:
    api.sim.seed(n_clients=30, seed=4)
    _, page, _ = await api.call("GET", "/client/invoice?limit=1000")
    assert all(invoice["rows"] and "quantity" in invoice["rows"][0] for invoice in page["client-invoice"])
    assert page["client-invoice"][0] == api.sim.book.invoices.get(page["client-invoice"][0]["id"])
    _, page, _ = await api.call("GET", "/client/agreement?limit=1000")
    assert all(a["recurring-rows"] and "first-invoice-rows" in a for a in page["client-agreement"])


async def test_paging_parameters_are_checked(api: Api) -> None:
    for query in ("offset=-1", "limit=0", "limit=ten"):
        status, body, _ = await api.call("GET", f"/client?{query}")
        assert status == 400 and body["error"]["message"]


async def test_invoice_lists_filter_by_date_range_and_text(api: Api) -> None:
    api.sim.seed(n_clients=60, seed=5)
    invoices = list(api.sim.book.invoices)
    days = sorted(i["invoice-date"] for i in invoices)
    first, last = days[len(days) // 4], days[len(days) // 2]
    _, page, _ = await api.call("GET", f"/client/invoice?from-date={first}&to-date={last}&limit=1000")
    assert {i["id"] for i in page["client-invoice"]} == {i["id"] for i in invoices if first <= i["invoice-date"] <= last}
    number = invoices[3]["invoice-nr"]
    _, page, _ = await api.call("GET", f"/client/invoice?query={number}&limit=1000")
    assert number in {i["invoice-nr"] for i in page["client-invoice"]}
    status, _, _ = await api.call("GET", "/client/invoice?from-date=yesterday")
    assert status == 400


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"name": "A"', "not valid JSON"),
        (b"", "not valid JSON"),
        (b'["name"]', "must be a JSON object"),
        (b'{"name": 5}', "client.name must be a string"),
        (b'{"name": "A", "payment-days": "30"}', "client.payment-days must be an integer"),
        (b'{"name": "A", "shoe-size": 44}', "unknown field 'shoe-size' in client"),
        (b'{"email": "a@b.se"}', "client.name is required"),
        (b'{"name": "A", "address": {"zip": "1"}}', "unknown field 'zip' in client.address"),
        (b'{"name": "A", "active": "yes"}', "client.active must be true or false"),
        (b'{"name": "\xff"}', "not valid JSON"),
    ],
)
async def test_malformed_bodies_are_400s_with_the_error_shape(api: Api, raw: bytes, fragment: str) -> None:
    status, body, _ = await api.call("PUT", "/client", raw=raw)
    assert status == 400
    assert set(body) == {"error"} and fragment in body["error"]["message"]


async def test_a_body_that_is_neither_json_nor_xml_is_refused(api: Api) -> None:
    status, body, _ = await api.call("PUT", "/client", raw=b"name=A", headers={"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in body["error"]["message"]


async def test_an_xml_body_creates_like_json(api: Api) -> None:
    raw = b"<client><name>Visby Event AB</name><payment-days>15</payment-days></client>"
    status, body, _ = await api.call("PUT", "/client", raw=raw, headers={"Content-Type": "application/xml"})
    assert status == 200
    record = api.sim.book.clients.get(body["created"]["id"])
    assert record is not None and record["payment-days"] == 15


async def test_money_stays_integer_ore(api: Api) -> None:
    _, created, _ = await api.call("PUT", "/client", {"name": "Ek Bygg AB"})
    client = created["created"]["id"]
    body = {"client-ref": {"id": client}, "rows": [{"quantity": 1.5, "price": 12950, "vat": 0.25}]}
    _, created, _ = await api.call("PUT", "/client/invoice", body)
    async with api.session.get(
        f"{api.company}/client/invoice/{created['created']['id']}", headers={"X-Token": api.sim.token, **JSON_HEADERS}
    ) as response:
        text = await response.text()
    invoice = json.loads(text)
    assert (invoice["amount"], invoice["vat"], invoice["remaining"]) == (19425, 4856, 24281)
    assert all(isinstance(invoice[k], int) for k in ("amount", "vat", "remaining"))
    assert '"amount":19425,' in text and "19425.0" not in text
    status, refused, _ = await api.call("PUT", "/client/invoice", {**body, "rows": [{"quantity": 1, "price": 129.5}]})
    assert status == 400 and "whole number of öre" in refused["error"]["message"]


async def test_credit_invoices_name_their_debit_invoice(api: Api) -> None:
    _, created, _ = await api.call("PUT", "/client", {"name": "Al Plåt AB"})
    client = created["created"]["id"]
    _, created, _ = await api.call("PUT", "/client/invoice", {"client-ref": {"id": client},
                                                              "rows": [{"quantity": 1, "price": 1000}]})
    _, debit, _ = await api.call("GET", f"/client/invoice/{created['created']['id']}")
    status, created, _ = await api.call(
        "PUT",
        "/client/invoice",
        {"client-ref": {"id": client}, "debit-invoice-nr": debit["invoice-nr"], "rows": [{"quantity": -1, "price": 1000}]},
    )
    assert status == 200
    _, credit, _ = await api.call("GET", f"/client/invoice/{created['created']['id']}")
    assert credit["debit-invoice-nr"] == debit["invoice-nr"] and credit["amount"] == -1000


async def test_unknown_routes_and_methods_answer_the_error_shape(api: Api) -> None:
    status, body, _ = await api.call("GET", "/supplier")
    assert status == 404 and "error" in body
    status, body, headers = await api.call("PATCH", "/client/1")
    assert status == 405 and "PATCH" in body["error"]["message"] and "Allow" in headers


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=12,
)
FIELDS = ["name", "client-ref", "rows", "price", "quantity", "recurring-rows", "client", "invoice-date", "id",
          "debit-invoice-nr", "address", "product", "discount", "status", "invoice-nr"]
BODIES = st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6) | JSON_VALUES
PATHS = ["/client", "/product", "/client/invoice", "/client/agreement", "/client-project"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS), body=BODIES, update=st.booleans())
async def test_no_body_makes_the_simulator_fail_with_a_5xx(api: Api, path: str, body: Any, update: bool) -> None:
    if not api.sim.book.clients.ids():
        api.sim.seed(n_clients=20, seed=1)
    ids = api.sim.book.tables[_resource(path)].ids()
    update = update and bool(ids)
    target = f"{path}/{ids[0]}" if update else path
    status, answer, _ = await api.call("POST" if update else "PUT", target, body)
    assert status < 500, answer
    assert status == 200 or set(answer) == {"error"}


def _resource(path: str) -> str:
    return {"/client": "client", "/product": "product", "/client/invoice": "client-invoice",
            "/client/agreement": "client-agreement", "/client-project": "client-project"}[path]


NUMBERS = st.integers(-(10**16), 10**16) | st.floats(-1e13, 1e13, allow_nan=False) | st.sampled_from([0, -1, 0.5, 1e-9])
ROWS = st.lists(
    st.fixed_dictionaries(
        {"quantity": NUMBERS},
        optional={"price": NUMBERS, "vat": NUMBERS, "discount": st.fixed_dictionaries(
            {}, optional={"percentage": NUMBERS, "absolute": NUMBERS})},
    ),
    max_size=4,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(rows=[{"quantity": 1e12, "price": 10**15}], interval=1, extra={})
@example(rows=[{"quantity": 2, "price": 100, "discount": {"percentage": 1e12}}], interval=0, extra={})
@given(rows=ROWS, interval=st.integers(-5, 100), extra=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=2))
async def test_extreme_but_well_typed_rows_never_make_a_5xx(
    api: Api, rows: list[dict[str, Any]], interval: int, extra: dict[str, Any]
) -> None:
    if not api.sim.book.clients.ids():
        api.sim.seed(n_clients=5, seed=1)
    client = {"id": api.sim.book.clients.ids()[0]}
    for path, body in (
        ("/client/invoice", {"client-ref": client, "rows": rows}),
        ("/client/invoice", {**extra, "client-ref": client, "rows": rows}),
        ("/client/agreement", {"client-ref": client, "recurring-rows": rows, "invoice-interval-months": interval}),
    ):
        status, answer, _ = await api.call("PUT", path, body)
        assert status < 500, answer
        if status == 200:
            status, answer, _ = await api.call("GET", f"{path}/{answer['created']['id']}")
            assert status == 200
