"""Helpers for the HubSpot contract tests: an authenticated raw HTTP session on the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
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
