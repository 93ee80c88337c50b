"""Fixtures of the inbound tests: the real app on a free port over a fresh database."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from libs.config import Secret, Settings
from libs.events.dlq import DeadLetterQueue
from libs.events.group_commit import GroupCommitter
from libs.events.store import PostgresEventStore
from libs.hubspot.signatures import HEADER_SIGNATURE, HEADER_SIGNATURE_VERSION, sign_v1, sign_v2, v3_headers
from libs.mapping.loader import default_mappings
from services.inbound.app import app_runner, create_app
from services.inbound.deps import InboundDeps
from services.inbound.options import InboundOptions
from sim.broker import free_port

SECRET = "test-client-secret-0000"
PORTAL = 62515
APP_ID = 1_234_567
CONNECTION = "acme"

_event_ids = itertools.count(1_000_000)


def company_change(object_id: int, prop: str, value: str, **extra: Any) -> dict[str, Any]:
    """A HubSpot company.propertyChange event as HubSpot sends it."""
    return {
        "eventId": next(_event_ids),
        "subscriptionId": 11,
        "portalId": PORTAL,
        "appId": APP_ID,
        "occurredAt": int(time.time() * 1000),
        "subscriptionType": "company.propertyChange",
        "attemptNumber": 0,
        "objectId": object_id,
        "propertyName": prop,
        "propertyValue": value,
        "changeSource": "CRM_UI",
        "sourceId": "userId:1",
        **extra,
    }


def signed_headers(url: str, body: bytes, version: str = "v3", secret: str = SECRET, method: str = "POST",
                   timestamp_ms: int | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if version == "v3":
        headers.update(v3_headers(secret, method, url, body, timestamp_ms or int(time.time() * 1000)))
    elif version == "v2":
        headers.update({HEADER_SIGNATURE: sign_v2(secret, method, url, body), HEADER_SIGNATURE_VERSION: "v2"})
    elif version == "v1":
        headers.update({HEADER_SIGNATURE: sign_v1(secret, body), HEADER_SIGNATURE_VERSION: "v1"})
    return headers


@dataclass
class InboundServer:
    base_url: str
    deps: InboundDeps
    session: aiohttp.ClientSession

    @property
    def webhook_url(self) -> str:
        return self.base_url + "/webhooks/hubspot"

    async def post_events(self, events: Sequence[dict[str, Any]], version: str = "v3") -> aiohttp.ClientResponse:
        body = orjson.dumps(list(events))
        headers = signed_headers(self.webhook_url, body, version)
        async with self.session.post(self.webhook_url, data=body, headers=headers) as response:
            await response.read()
            return response


def inbound_options(base_url: str, **overrides: Any) -> InboundOptions:
    return InboundOptions(
        client_secret=Secret(SECRET),
        public_base_url=base_url,
        portals={PORTAL: CONNECTION},
        app_id=APP_ID,
        **overrides,
    )


def inbound_settings(database_url: str, **values: str) -> Settings:
    return Settings({"DATABASE_URL": database_url, "CONNECTION_ID": CONNECTION, **values})


@pytest.fixture
async def inbound_server(
    pool: asyncpg.Pool, store: PostgresEventStore, database_url: str
) -> AsyncIterator[InboundServer]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    async with GroupCommitter(store) as committer:
        deps = InboundDeps(
            settings=inbound_settings(database_url),
            options=inbound_options(base_url),
            pool=pool,
            store=store,
            dlq=DeadLetterQueue(store),
            committer=committer,
            mappings=default_mappings(),
        )
        runner = app_runner(create_app(deps, routes=()))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with aiohttp.ClientSession() as session:
            yield InboundServer(base_url, deps, session)
        await runner.cleanup()
