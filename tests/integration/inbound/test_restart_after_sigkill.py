"""The service is SIGKILLed after answering 2xx and before handling: after a restart the change is applied."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from typing import Any

import aiohttp
import pytest

from libs.kleer import KleerClient
from libs.mapping.convert import to_hubspot
from sim.broker import TansuBroker, free_port
from sim.hubspot.store import Source
from tests.fixtures.hubspot_sim import HubSpotSim

from .conftest import CONNECTION, setup_hubspot_properties

pytestmark = pytest.mark.slow


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "services.cli", "inbound", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while asyncio.get_running_loop().time() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"inbound exited early: {process.stderr.read().decode()[-2000:] if process.stderr else ''}")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} not healthy within {timeout}s")


async def test_webhook_answered_then_sigkill_is_applied_after_restart(
    database_url: str, broker: TansuBroker, hubspot_sim: HubSpotSim, kleer_sim: Any, kleer_client: KleerClient
) -> None:
    setup_hubspot_properties(hubspot_sim)
    kleer_id = await kleer_client.clients.create({"name": "Before Crash AB"})
    mapped = to_hubspot("client", await kleer_client.clients.get(kleer_id))
    kind = hubspot_sim.sim.object_type("companies")
    company = hubspot_sim.store.create_one(kind, {"properties": mapped}, Source("INTEGRATION", str(hubspot_sim.app_id)))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:8]}",
        "PORT": str(port),
        "METRICS_PORT": str(free_port()),
        "PUBLIC_BASE_URL": base_url,
        "HUBSPOT_CLIENT_SECRET": hubspot_sim.client_secret,
        "HUBSPOT_PORTAL_ID": str(hubspot_sim.portal_id),
        "HUBSPOT_APP_ID": str(hubspot_sim.app_id),
        "HUBSPOT_API_BASE": hubspot_sim.base_url,
        "HUBSPOT_ACCESS_TOKEN": hubspot_sim.token,
        "KLEER_API_BASE": kleer_sim.base_url,
        "KLEER_TOKEN": kleer_sim.token,
        "KLEER_COMPANY_ID": str(kleer_sim.company_id),
        "CONNECTION_ID": CONNECTION,
        "LOG_LEVEL": "warning",
    }
    # First life: the web server only (nothing handles), killed right after its 2xx.
    first = _start([], env)
    try:
        await _wait_healthy(base_url + "/healthz", first)
        hubspot_sim.configure_webhooks(base_url + "/webhooks/hubspot", batch_window_ms=5, max_attempts=1)
        hubspot_sim.ui_edit("companies", company.id, {"name": "After Crash AB"})
        stats = hubspot_sim.sim.webhooks.stats
        for _ in range(500):
            if stats["requests_ok"] >= 1:
                break
            await asyncio.sleep(0.01)
        assert stats["requests_ok"] >= 1
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert kleer_sim.book.clients.get(kleer_id)["name"] == "Before Crash AB"
    # Second life: everything in one process.
    second = _start(["--with-handlers", "--with-relay"], env)
    try:
        await _wait_healthy(base_url + "/healthz", second)
        for _ in range(3000):
            if kleer_sim.book.clients.get(kleer_id)["name"] == "After Crash AB":
                break
            await asyncio.sleep(0.01)
        assert kleer_sim.book.clients.get(kleer_id)["name"] == "After Crash AB"
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(30)
        except subprocess.TimeoutExpired:
            second.kill()
