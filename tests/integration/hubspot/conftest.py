"""Helpers for the HubSpot contract tests: an authenticated raw HTTP session on the simulator."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlparse

import aiohttp
import asyncpg
import pytest

from tests.fixtures.hubspot_sim import HubSpotSim


class Api:
    """Raw HTTP against the simulator, so the contract tests see exactly what HubSpot would send."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        kwargs: dict[str, Any] = {"headers": headers or {}}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.base_url + path, **kwargs) as resp:
            text = await resp.read()
            try:
                payload = await resp.json(content_type=None) if text else None
            except ValueError:
                payload = text.decode(errors="replace")
            return resp.status, payload, dict(resp.headers)


@pytest.fixture
async def api(hubspot_sim: HubSpotSim) -> AsyncIterator[Api]:
    headers = {"Authorization": f"Bearer {hubspot_sim.token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield Api(session, hubspot_sim.base_url)


@pytest.fixture
def kleer_ids(hubspot_sim: HubSpotSim) -> HubSpotSim:
    """The simulator with a unique ``kleer_id`` on companies, deals and projects."""
    for kind in ("companies", "deals", "projects", "line_items", "invoices"):
        hubspot_sim.create_property(kind, "kleer_id", unique=True)
    return hubspot_sim


async def _admin(server_dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(urlparse(server_dsn)._replace(path="/postgres").geturl())
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def budget_database_url(pg_server_dsn: str, template_database: str) -> Iterator[str]:
    """One migrated database for a whole module (creating one per test costs seconds); use unique portals."""
    name = f"kshsbudget_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(pg_server_dsn, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    yield urlparse(pg_server_dsn)._replace(path=f"/{name}").geturl()
    asyncio.run(_admin(pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def budget_pool(budget_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(budget_database_url, min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()
