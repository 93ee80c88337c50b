"""The admin pages over HTTP: authentication, CSRF, escaping, and each page's content."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from libs.config import Secret
from libs.events.store import PostgresEventStore
from libs.mapping.objects import KLEER_OBJECT_TYPES
from libs.mapping.seed import TRIGGER_PROPERTIES
from libs.mapping.triggers import one_way_properties
from services.inbound.admin.auth import AdminAuth

from .harness import ADMIN_TOKEN, CONNECTION, AdminSite, SyncHarness, admin_site, fixed_redriver

pytestmark = pytest.mark.asyncio

ADMIN_GETS = [
    "/admin",
    "/admin/",
    "/admin/admin.css",
    "/admin/mappings",
    "/admin/mappings?object=invoice",
    "/admin/records?record=kleer:client:1",
    "/admin/correlations/abc",
    "/admin/dlq",
    "/admin/dlq/1",
    "/admin/replay",
    "/admin/replay/runs/abc",
    "/admin/no-such-page",
]
ADMIN_POSTS = ["/admin/dlq/1/redrive", "/admin/dlq/1/discard", "/admin/replay/preview", "/admin/replay/run"]
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def basic(password: str, user: str = "ops") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def admin(store: PostgresEventStore, database_url: str) -> AsyncIterator[AdminSite]:
    async with admin_site(store, database_url) as site:
        yield site


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def page(http: aiohttp.ClientSession, site: AdminSite, path: str) -> str:
    async with http.get(site.base_url + path, headers=basic(site.token)) as response:
        assert response.status == 200, (path, response.status, await response.text())
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        return await response.text()


async def test_admin_is_off_without_admin_token(store: PostgresEventStore, database_url: str, http: aiohttp.ClientSession) -> None:
    async with admin_site(store, database_url, token=None) as site:
        for path in ADMIN_GETS:
            async with http.get(site.base_url + path, headers=basic("anything")) as response:
                assert response.status == 503, path
                assert "admin disabled: set ADMIN_TOKEN" in await response.text()
        async with http.post(site.base_url + ADMIN_POSTS[0]) as response:
            assert response.status == 503


async def test_every_admin_url_without_credentials_answers_401(admin: AdminSite, http: aiohttp.ClientSession) -> None:
    wrong = [{}, {"Authorization": "Bearer nope"}, basic("nope"), {"Authorization": "Basic %%%"}, basic(ADMIN_TOKEN[:-1])]
    for headers in wrong:
        for path in ADMIN_GETS:
            async with http.get(admin.base_url + path, headers=headers, allow_redirects=False) as response:
                assert response.status == 401, (path, headers)
                assert 'Basic realm="kleer-sync admin"' in response.headers.getall("WWW-Authenticate")[0]
        for path in ADMIN_POSTS:
            async with http.post(admin.base_url + path, headers=headers, data={"x": "1"}) as response:
                assert response.status == 401, (path, headers)
    for headers in ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, basic(ADMIN_TOKEN)):
        async with http.get(admin.base_url + "/admin/", headers=headers) as response:
            assert response.status == 200
    async with http.get(admin.base_url + "/healthz") as response:  # the rest of the service is not behind it
        assert response.status != 401


async def park(site: AdminSite, reason: str = "HubSpot refused it", record: str = "kleer:client:1") -> int:
    async with site.deps.pool.acquire() as conn, conn.transaction():
        return await site.deps.dlq.park(
            conn, source="outbound-pusher", connection=CONNECTION, record=record, reason=reason, payload={"a": 1}
        )


async def test_forged_form_post_without_the_csrf_token_is_refused(admin: AdminSite, http: aiohttp.ClientSession) -> None:
    entry_id = await park(admin)
    url = f"{admin.base_url}/admin/dlq/{entry_id}/discard"
    html = await page(http, admin, f"/admin/dlq/{entry_id}")
    token = _CSRF.search(html)
    assert token is not None
    other_users_token = AdminAuth(Secret(ADMIN_TOKEN)).csrf_token("mallory")
    stale_token = AdminAuth(Secret(ADMIN_TOKEN)).csrf_token("ops", now=0)
    forged = [
        ({}, basic(admin.token)),
        ({"csrf_token": "1.deadbeef"}, basic(admin.token)),
        ({"csrf_token": other_users_token}, basic(admin.token)),
        ({"csrf_token": stale_token}, basic(admin.token)),
        ({"csrf_token": token[1]}, {**basic(admin.token), "Origin": "https://evil.example"}),
    ]
    for form, headers in forged:
        async with http.post(url, data={"why": "forged", **form}, headers=headers, allow_redirects=False) as response:
            assert response.status == 403, form
    entry = await admin.deps.dlq.get(entry_id)
    assert entry is not None and entry.status == "open"

    async with http.post(url, data={"why": "duplicate", "csrf_token": token[1]}, headers=basic(admin.token),
                         allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == f"/admin/dlq/{entry_id}?done=discarded"
    entry = await admin.deps.dlq.get(entry_id)
    assert entry is not None and entry.status == "discarded"


async def test_pages_escape_everything_they_show(admin: AdminSite, http: aiohttp.ClientSession) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    entry_id = await park(admin, reason=evil, record="kleer:client:<b>1</b>")
    for path in ("/admin/dlq", f"/admin/dlq/{entry_id}", "/admin/dlq?source=" + "%3Cscript%3E",
                 "/admin/records?record=%3Cscript%3E", f"/admin/dlq/{entry_id}?done=failed&why=%3Cscript%3Ex",
                 f"/admin/dlq/{entry_id}?done=%3Cscript%3E"):
        html = await page(http, admin, path)
        assert "<script" not in html and "<img" not in html and "<b>1" not in html, path
    assert "&lt;script&gt;" in await page(http, admin, f"/admin/dlq/{entry_id}")


async def test_mappings_page_badges_exactly_the_mapped_properties_that_are_not_triggers(
    admin: AdminSite, http: aiohttp.ClientSession
) -> None:
    for object_type in KLEER_OBJECT_TYPES:
        html = await page(http, admin, f"/admin/mappings?object={object_type}")
        rows = re.findall(r'<tr data-property="([^"]+)">(.*?)</tr>', html, re.S)
        badged = [prop for prop, row in rows if 'class="badge one-way"' in row]
        assert badged == list(one_way_properties(object_type)), object_type
    html = await page(http, admin, "/admin/mappings?object=client")
    rows = dict(re.findall(r'<tr data-property="([^"]+)">(.*?)</tr>', html, re.S))
    # The user's own rule: mapped and not in the trigger list <=> One-way.
    assert {p for p, row in rows.items() if "One-way" in row} == set(rows) - set(TRIGGER_PROPERTIES)
    assert {"kleer_contact", "kleer_gln", "kleer_id"} <= {p for p, row in rows.items() if "One-way" in row}
    assert "One-way" not in rows["name"] and "One-way" not in rows["organization_number"]
    assert "address.zip-code" in rows["zip"] and "two way" in rows["zip"]


async def test_overview_record_and_dead_letter_pages_show_the_sync(
    sync: SyncHarness, store: PostgresEventStore, database_url: str, http: aiohttp.ClientSession
) -> None:
    kleer_id = await sync.kleer.clients.create({"name": "Uddevalla Varv AB", "currency-type": "SEK"})
    await sync.kleer.clients.create({"name": "Orust Båt AB", "currency-type": "SEK"})
    await sync.sync(["client"])
    async with admin_site(store, database_url) as site:
        entry_id = await park(site, reason="HubSpot said no", record=f"kleer:client:{kleer_id}")
        overview = await page(http, site, "/admin/")
        row = re.search(r"<tr><th>client</th>(.*?)</tr>", overview, re.S)
        assert row is not None
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row[1], re.S)
        assert cells[0] == "2" and cells[1] == "2"  # records known, records in HubSpot
        assert "Connection acme" in overview and ">1</a>" in cells[-1]  # one open dead letter

        record = await page(http, site, f"/admin/records?record=kleer:client:{kleer_id}")
        steps = re.findall(r'data-step="([^"]+)"', record)
        assert steps[:2] == ["poll", "push"] and "dead-letter" in steps
        assert "Uddevalla Varv AB" in record and f"hubspot:company:{sync.company_of(kleer_id).id}" in record

        correlation = re.search(r'href="(/admin/correlations/[^"]+)"', record)
        assert correlation is not None
        chain = await page(http, site, correlation[1])
        assert chain.count('data-step="poll"') == 2  # one poll saw both clients: one correlation

        listing = await page(http, site, f"/admin/dlq?record=kleer:client:{kleer_id}")
        assert f'data-id="{entry_id}"' in listing and "HubSpot said no" in listing


async def test_overview_shows_the_last_poll_and_its_error_from_a_poller_in_another_process(
    sync: SyncHarness, store: PostgresEventStore, database_url: str, http: aiohttp.ClientSession
) -> None:
    await sync.kleer.clients.create({"name": "Strömstad Sill AB", "currency-type": "SEK"})
    await sync.sync(["client"])
    sync.kleer_sim.set_faults({"error-rates": {"503": 1.0}})  # Kleer down for the next pass: its error is recorded
    report = await sync.poll(["client"])
    sync.kleer_sim.clear_faults()
    assert not report.ok
    row = await store.pool.fetchrow("SELECT * FROM poll_runs WHERE connection = $1 AND kind = 'client'", CONNECTION)
    assert row["last_success_at"] is not None and row["seen"] == 1 and "503" in row["last_error"]
    # A poller elsewhere (another connection, so no gauge of this process knows it) polled a minute ago.
    await store.pool.execute(
        "INSERT INTO poll_runs (connection, kind, last_attempt_at, last_success_at, seen) "
        "VALUES ('elsewhere', 'invoice', now(), now() - interval '60 seconds', 7)")
    async with admin_site(store, database_url) as site:
        overview = await page(http, site, "/admin/")
    assert "Connection elsewhere" in overview
    sections = dict(re.findall(r"<h2>Connection (\w+)</h2>(.*?)</table>", overview, re.S))
    invoice = re.search(r"<tr><th>invoice</th>(.*?)</tr>", sections["elsewhere"], re.S)
    assert invoice is not None
    fresh = re.findall(r"<td[^>]*>(.*?)</td>", invoice[1], re.S)[3]
    seconds = re.fullmatch(r"(\d+) s", fresh.strip())
    assert seconds is not None and 55 <= int(seconds[1]) < 90, fresh  # freshness from the row, not a gauge
    client = re.search(r"<tr><th>client</th>(.*?)</tr>", sections[CONNECTION], re.S)
    assert client is not None and "last pass failed" in client[1] and "503" in client[1]

    await sync.poll(["client"])  # Kleer is back: the error clears
    assert await store.pool.fetchval(
        "SELECT last_error FROM poll_runs WHERE connection = $1 AND kind = 'client'", CONNECTION) is None


async def test_replay_from_the_admin_previews_the_diff_then_runs(
    sync: SyncHarness, store: PostgresEventStore, database_url: str, http: aiohttp.ClientSession
) -> None:
    ids = [await sync.kleer.clients.create({"name": f"Lysekil {n} AB", "currency-type": "SEK"}) for n in range(3)]
    await sync.sync(["client"])
    sync.hubspot_sim.wipe()
    extras = {"replay_tools": sync.replay_tools(), "redriver_factories": {"outbound-pusher": fixed_redriver(sync.pusher.redrive)}}
    async with admin_site(store, database_url, extras=extras) as site:
        form = await page(http, site, "/admin/replay")
        token = _CSRF.search(form)
        assert token is not None
        selection = {"csrf_token": token[1], "connection": CONNECTION, "kind": "client"}
        async with http.post(site.base_url + "/admin/replay/preview", data=selection, headers=basic(site.token)) as response:
            assert response.status == 200
            preview = await response.text()
        assert preview.count('data-action="create"') == 3 and "Lysekil 0 AB" in preview
        assert sync.hubspot_sim.records("companies") == []  # the preview wrote nothing
        run_token = _CSRF.search(preview)
        assert run_token is not None and 'action="/admin/replay/run"' in preview
        async with http.post(site.base_url + "/admin/replay/run", data={**selection, "csrf_token": run_token[1]},
                             headers=basic(site.token), allow_redirects=False) as response:
            assert response.status == 303
            run_path = response.headers["Location"]
        for _ in range(200):
            status = await page(http, site, run_path)
            if 'id="status">completed' in status:
                break
            await asyncio.sleep(0.05)
        assert 'id="status">completed' in status and "3 of 3 records: 3 pushed" in status
        assert sorted(r["kleer_id"] for r in sync.hubspot_sim.records("companies")) == sorted(str(i) for i in ids)


async def test_a_redrive_that_fails_again_says_why_and_leaves_the_entry_open(
    store: PostgresEventStore, database_url: str, http: aiohttp.ClientSession
) -> None:
    async def still_broken(entry: object) -> None:
        raise RuntimeError("HubSpot still refuses kleer_gln")

    extras = {"redriver_factories": {"outbound-pusher": fixed_redriver(still_broken)}}
    async with admin_site(store, database_url, extras=extras) as site:
        broken = await park(site)
        async with site.deps.pool.acquire() as conn, conn.transaction():
            orphan = await site.deps.dlq.park(conn, source="mystery", connection=CONNECTION, record="kleer:client:2",
                                              reason="?")
        for entry_id, expected in ((broken, "Redrive failed, the entry stays open: redrive failed: HubSpot still "
                                             "refuses kleer_gln"),
                                   (orphan, "No service exports a redrive path for source mystery.")):
            html = await page(http, site, f"/admin/dlq/{entry_id}")
            token = _CSRF.search(html)
            assert token is not None
            async with http.post(f"{site.base_url}/admin/dlq/{entry_id}/redrive", data={"csrf_token": token[1]},
                                 headers=basic(site.token)) as response:
                assert response.status == 200
                assert expected in await response.text()
            entry = await site.deps.dlq.get(entry_id)
            assert entry is not None and entry.status == "open"


async def test_overview_says_when_the_pushers_are_paused_by_whom_and_why(
    store: PostgresEventStore, database_url: str, http: aiohttp.ClientSession
) -> None:
    from libs.events import pauses

    await pauses.pause(store.pool, "outbound-pusher", reason="HubSpot <incident>", by="user:ops")
    async with admin_site(store, database_url) as site:
        overview = await page(http, site, "/admin/")
        banner = re.search(r'<p class="flash error" data-paused="outbound-pusher">(.*?)</p>', overview, re.S)
        assert banner is not None
        assert "user:ops: HubSpot &lt;incident&gt;" in banner[1] and "kleer-sync outbound resume" in banner[1]
        await pauses.resume(store.pool, "outbound-pusher")
        assert "data-paused" not in await page(http, site, "/admin/")
