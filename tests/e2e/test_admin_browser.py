"""An operator in a real browser: signs in, reads the field mappings, redrives a dead letter; strangers are refused."""

from __future__ import annotations

import contextlib
import pathlib
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Error as PlaywrightError

from libs.events.store import PostgresEventStore
from libs.mapping.seed import TRIGGER_PROPERTIES
from services.outbound.setup import setup_hubspot
from sim.broker import free_port
from tests.integration.operations.harness import (
    ADMIN_TOKEN,
    CONNECTION,
    SyncHarness,
    admin_site,
    fixed_redriver,
)

pytestmark = pytest.mark.asyncio

ADMIN_URLS = [
    "/admin",
    "/admin/",
    "/admin/mappings",
    "/admin/mappings?object=project",
    "/admin/records?record=kleer:client:1",
    "/admin/correlations/abc",
    "/admin/dlq",
    "/admin/dlq/1",
    "/admin/replay",
    "/admin/replay/runs/x",
    "/admin/admin.css",
    "/admin/anything-else",
]


async def _screenshot(page: Any, path: str, **options: Any) -> None:
    """Save a screenshot for people to look at (tests/artifacts/); it proves nothing, so a browser that
    cannot capture one on a loaded machine ("Unable to capture screenshot") does not fail the test."""
    try:
        await page.screenshot(path=path, **options)
    except PlaywrightError as exc:
        print(f"screenshot {path} not taken: {exc}")


async def signed_in(browser: Any) -> Any:
    return await browser.new_context(http_credentials={"username": "ops", "password": ADMIN_TOKEN})


async def test_signed_in_operator_sees_one_way_badges_on_exactly_the_non_trigger_company_properties(
    browser: Any, store: PostgresEventStore, database_url: str, artifacts: pathlib.Path
) -> None:
    async with admin_site(store, database_url) as site:
        context = await signed_in(browser)
        page = await context.new_page()
        response = await page.goto(site.base_url + "/admin/")
        assert response is not None and response.status == 200
        assert await page.inner_text("header .user") == "signed in as ops"
        await _screenshot(page, path=str(artifacts / "admin-overview.png"), full_page=True)

        await page.click("text=Field mappings")
        await page.wait_for_url("**/admin/mappings")
        assert await page.inner_text("h2") == "client → HubSpot companies"
        rows = page.locator("#mappings tbody tr")
        properties = [await rows.nth(i).get_attribute("data-property") for i in range(await rows.count())]
        badged = [
            await row.get_attribute("data-property")
            for row in await page.locator("#mappings tbody tr:has(.badge.one-way)").all()
        ]
        assert badged == [p for p in properties if p not in TRIGGER_PROPERTIES]
        assert set(badged) == {"kleer_id", "kleer_contact", "kleer_gln", "kleer_country_code", "kleer_client_type",
                               "kleer_active"}
        assert await page.locator(".badge.one-way").first.inner_text() == "One-way"
        await _screenshot(page, path=str(artifacts / "admin-field-mappings.png"), full_page=True)
        await context.close()


async def test_operator_redrives_a_dead_letter_from_the_page(
    browser: Any, sync: SyncHarness, store: PostgresEventStore, database_url: str, artifacts: pathlib.Path
) -> None:
    companies = sync.hubspot_sim.sim.object_type("companies")
    sync.hubspot_sim.store.properties[companies].pop("kleer_gln")  # HubSpot refuses every company write
    kleer_id = await sync.kleer.clients.create({"name": "Marstrand Segel AB", "gln": "7350000000001", "currency-type": "SEK"})
    await sync.sync(["client"])
    [entry] = await sync.handlers.dlq.list(source="outbound-pusher")
    await setup_hubspot(sync.hubspot)  # the cause is fixed

    extras = {"redriver_factories": {"outbound-pusher": fixed_redriver(sync.pusher.redrive)}}
    async with admin_site(store, database_url, extras=extras) as site:
        context = await signed_in(browser)
        page = await context.new_page()
        await page.goto(site.base_url + "/admin/dlq")
        row = page.locator(f'#dead-letters tr[data-id="{entry.id}"]')
        assert "kleer_gln" in await row.inner_text()
        await _screenshot(page, path=str(artifacts / "admin-dead-letters.png"), full_page=True)

        await row.locator("button", has_text="Redrive").click()
        await page.wait_for_url(f"**/admin/dlq/{entry.id}?done=redriven")
        assert "Redriven" in await page.inner_text(".flash")
        assert await page.inner_text(".status-redriven") == "redriven"
        await _screenshot(page, path=str(artifacts / "admin-dead-letter-redriven.png"), full_page=True)

        await page.goto(site.base_url + "/admin/dlq")
        assert await page.locator("#dead-letters tr[data-id]").count() == 0
        await page.goto(site.base_url + f"/admin/records?record=kleer:client:{kleer_id}&connection={CONNECTION}")
        steps = await page.locator("#timeline tr[data-step]").evaluate_all("rows => rows.map(r => r.dataset.step)")
        assert steps == ["poll", "dead-letter", "push", "dead-letter"]
        await _screenshot(page, path=str(artifacts / "admin-record.png"), full_page=True)
        await context.close()
    assert sync.company_of(kleer_id).properties["kleer_gln"] == "7350000000001"


async def test_without_credentials_every_admin_url_answers_401_and_a_forged_post_is_refused(
    browser: Any, store: PostgresEventStore, database_url: str, artifacts: pathlib.Path
) -> None:
    async with admin_site(store, database_url) as site:
        async with store.pool.acquire() as conn, conn.transaction():
            entry_id = await site.deps.dlq.park(
                conn, source="outbound-pusher", connection=CONNECTION, record="kleer:client:1", reason="test"
            )
        stranger = await browser.new_context()
        page = await stranger.new_page()
        for path in ADMIN_URLS:
            url = site.base_url + path
            async with page.expect_response(url) as answer:
                # Chromium answers the basic-auth challenge it cannot meet with a navigation error.
                with contextlib.suppress(PlaywrightError):
                    await page.goto(url)
            assert (await answer.value).status == 401, path
        await stranger.close()

        # Another site's page posts a form to the admin while the operator's browser holds the credentials.
        evil = web.Application()
        target = f"{site.base_url}/admin/dlq/{entry_id}/discard"

        async def lure(_: web.Request) -> web.Response:
            return web.Response(
                text=f'<form method="post" action="{target}"><input name="why" value="forged">'
                '<button id="prize">Claim your prize</button></form>',
                content_type="text/html",
            )

        evil.router.add_get("/", lure)
        runner = web.AppRunner(evil)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        context = await signed_in(browser)
        page = await context.new_page()
        try:
            await page.goto(f"http://127.0.0.1:{port}/")
            async with page.expect_response(target) as answer:
                await page.click("#prize")
            assert (await answer.value).status == 403
            await _screenshot(page, path=str(artifacts / "admin-forged-post-refused.png"))

            # Even from our own page, a form whose CSRF token was taken out is refused.
            await page.goto(f"{site.base_url}/admin/dlq/{entry_id}")
            await page.evaluate("document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove())")
            async with page.expect_response(target) as answer:
                await page.locator("button", has_text="Discard").click()
            assert (await answer.value).status == 403
        finally:
            await context.close()
            await runner.cleanup()
        entry = await site.deps.dlq.get(entry_id)
        assert entry is not None and entry.status == "open"
