"""Security checks against the real inbound process, running as a database role without superuser.

One ``kleer-sync inbound`` process for the module, over a fresh migrated
database, connected as the restricted service role of ``dbrole.py`` (its
grants are documented there and in ``README.md``). Checks:

- forged, stale (replayed after five minutes), unsigned and cross-portal
  webhooks are refused and leave nothing in the log; workflow actions too;
- admin pages refuse every request without valid credentials, and a POST
  without the CSRF token;
- request bodies, header fields, header counts and request lines are limited;
- the service role cannot rewrite the event log or change the schema, and both
  the webhook intake and a Kleer poll work as that role.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from libs.hubspot.signatures import HEADER_SIGNATURE, HEADER_SIGNATURE_VERSION, sign_v1, v3_headers
from services.inbound.webhook_events import webhook_event_id
from sim.broker import free_port
from sim.kleer import KleerSimServer
from tests.reliability.dbrole import create_service_role, drop_service_role
from tests.reliability.processes import REPO_ROOT, ManagedProcess, tail
from tests.reliability.system import create_database, drop_database, server_dsn_from_env

PORTAL = 62515
SECRET = "cs-security-" + uuid.uuid4().hex
ADMIN = "adm-security-" + uuid.uuid4().hex
MiB = 1024 * 1024


@dataclass
class Inbound:
    base_url: str
    owner_dsn: str
    service_dsn: str
    log: Path

    @property
    def webhook_url(self) -> str:
        return self.base_url + "/webhooks/hubspot"


@pytest.fixture(scope="module")
def inbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inbound]:
    server = server_dsn_from_env()
    owner_dsn = asyncio.run(create_database(server, prefix="kssec"))
    role, service_dsn = asyncio.run(create_service_role(owner_dsn))
    port, metrics_port = free_port(), free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": service_dsn,
        "HUBSPOT_CLIENT_SECRET": SECRET,
        "PUBLIC_BASE_URL": base_url,
        "HUBSPOT_PORTAL_ID": str(PORTAL),
        "HUBSPOT_APP_ID": "1234567",
        "ADMIN_TOKEN": ADMIN,
        "PORT": str(port),
        "METRICS_PORT": str(metrics_port),
        "LOG_LEVEL": "info",
    }
    log = tmp_path_factory.mktemp("security") / "inbound.log"
    process = ManagedProcess("inbound", ["inbound"], env, log, f"{base_url}/healthz")
    process.start()
    try:
        _wait_healthy(process, f"{base_url}/healthz")
        yield Inbound(base_url, owner_dsn, service_dsn, log)
    finally:
        process.stop()
        asyncio.run(drop_database(owner_dsn))
        asyncio.run(drop_service_role(server, role))


def _wait_healthy(process: ManagedProcess, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_running()
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        time.sleep(0.1)
    raise AssertionError(f"the inbound service did not become healthy:\n{tail(process.log_path)}")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


_ids = iter(range(7 * 10**12, 8 * 10**12))


def _events(portal: int = PORTAL, count: int = 2) -> list[dict[str, object]]:
    now = int(time.time() * 1000)
    return [{"eventId": next(_ids), "subscriptionId": 1, "portalId": portal, "appId": 1234567, "occurredAt": now,
             "subscriptionType": "company.propertyChange", "attemptNumber": 0, "objectId": 4242,
             "propertyName": "name", "propertyValue": "Säker AB", "changeSource": "CRM_UI", "sourceId": "userId:1"}
            for _ in range(count)]


async def _post(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> int:
    async with http.post(url, data=body, headers={"Content-Type": "application/json", **headers}) as resp:
        await resp.read()
        return resp.status


async def _recorded(inbound: Inbound, events: list[dict[str, object]], portal: int = PORTAL) -> int:
    conn = await asyncpg.connect(inbound.owner_dsn)
    try:
        ids = [webhook_event_id(portal, int(e["eventId"])) for e in events]  # type: ignore[call-overload]
        return int(await conn.fetchval("SELECT count(*) FROM events WHERE event_id = ANY($1::uuid[])", ids))
    finally:
        await conn.close()


# --- webhooks ---------------------------------------------------------------------------------------------


async def test_signed_webhook_is_recorded_by_the_service_role(inbound: Inbound, http: aiohttp.ClientSession) -> None:
    events = _events()
    body = orjson.dumps(events)
    status = await _post(http, inbound.webhook_url, body,
                         v3_headers(SECRET, "POST", inbound.webhook_url, body, int(time.time() * 1000)))
    assert status == 200
    assert await _recorded(inbound, events) == len(events)


@pytest.mark.parametrize("forgery", ["wrong_secret", "unsigned", "other_url", "tampered_body", "v1_wrong_secret"])
async def test_forged_webhooks_are_refused_and_leave_no_trace(
    inbound: Inbound, http: aiohttp.ClientSession, forgery: str
) -> None:
    events = _events()
    body = orjson.dumps(events)
    now = int(time.time() * 1000)
    url = inbound.webhook_url
    headers = {
        "wrong_secret": lambda: v3_headers("not-" + SECRET, "POST", url, body, now),
        "unsigned": lambda: {},
        "other_url": lambda: v3_headers(SECRET, "POST", "https://attacker.example/webhooks/hubspot", body, now),
        "tampered_body": lambda: v3_headers(SECRET, "POST", url, body.replace(b"S\xc3\xa4ker", b"Evil!"), now),
        "v1_wrong_secret": lambda: {HEADER_SIGNATURE: sign_v1("not-" + SECRET, body), HEADER_SIGNATURE_VERSION: "v1"},
    }[forgery]()
    assert await _post(http, url, body, headers) == 401
    assert await _recorded(inbound, events) == 0


async def test_a_replay_after_five_minutes_is_refused(inbound: Inbound, http: aiohttp.ClientSession) -> None:
    events = _events()
    body = orjson.dumps(events)
    captured_at = int(time.time() * 1000) - 5 * 60 * 1000 - 5_000
    headers = v3_headers(SECRET, "POST", inbound.webhook_url, body, captured_at)
    assert await _post(http, inbound.webhook_url, body, headers) == 401
    assert await _recorded(inbound, events) == 0


async def test_a_replay_within_five_minutes_changes_nothing(inbound: Inbound, http: aiohttp.ClientSession) -> None:
    events = _events()
    body = orjson.dumps(events)
    headers = v3_headers(SECRET, "POST", inbound.webhook_url, body, int(time.time() * 1000))
    assert await _post(http, inbound.webhook_url, body, headers) == 200
    conn = await asyncpg.connect(inbound.owner_dsn)
    try:
        head = await conn.fetchval("SELECT max(position) FROM events")
        assert await _post(http, inbound.webhook_url, body, headers) == 200  # the very same request again
        assert await conn.fetchval("SELECT max(position) FROM events") == head
    finally:
        await conn.close()


async def test_cross_portal_webhooks_are_refused(inbound: Inbound, http: aiohttp.ClientSession) -> None:
    foreign = _events(portal=PORTAL + 1)
    body = orjson.dumps(foreign)
    now = int(time.time() * 1000)
    assert await _post(http, inbound.webhook_url, body, v3_headers(SECRET, "POST", inbound.webhook_url, body, now)) == 403
    assert await _recorded(inbound, foreign, PORTAL + 1) == 0
    ours = _events()
    mixed = orjson.dumps([*ours, *_events(portal=PORTAL + 1)])
    assert await _post(http, inbound.webhook_url, mixed,
                       v3_headers(SECRET, "POST", inbound.webhook_url, mixed, now)) == 200
    assert await _recorded(inbound, ours) == len(ours)


async def test_forged_workflow_action_is_refused(inbound: Inbound, http: aiohttp.ClientSession) -> None:
    url = inbound.base_url + "/actions/create-client"
    body = orjson.dumps({"callbackId": "ap-forged-1", "origin": {"portalId": PORTAL},
                         "object": {"objectId": 1, "objectType": "COMPANY"}, "inputFields": {}})
    now = int(time.time() * 1000)
    assert await _post(http, url, body, v3_headers("not-" + SECRET, "POST", url, body, now)) == 401
    assert await _post(http, url, body, {}) == 401
    assert await _post(http, url, body, v3_headers(SECRET, "POST", url, body, now - 6 * 60 * 1000)) == 401


# --- admin pages -------------------------------------------------------------------------------------------

ADMIN_GETS = ["/admin", "/admin/", "/admin/mappings", "/admin/records?record=kleer:client:1", "/admin/dlq",
              "/admin/dlq/1", "/admin/replay", "/admin/replay/runs/1", "/admin/no-such-page", "/admin/admin.css"]
ADMIN_POSTS = ["/admin/dlq/1/redrive", "/admin/dlq/1/discard", "/admin/replay/preview", "/admin/replay/run"]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("credentials", [None, "Bearer wrong-token", "basic-wrong", "Bearer ", "Token {admin}"])
async def test_admin_pages_refuse_requests_without_valid_credentials(
    inbound: Inbound, http: aiohttp.ClientSession, credentials: str | None
) -> None:
    headers = {}
    if credentials == "basic-wrong":
        headers["Authorization"] = _basic("admin", "wrong")
    elif credentials is not None:
        headers["Authorization"] = credentials.format(admin=ADMIN)
    refused = []
    for path in ADMIN_GETS:
        async with http.get(inbound.base_url + path, headers=headers, allow_redirects=False) as resp:
            if resp.status != 401:
                refused.append(f"GET {path}: {resp.status}")
    for path in ADMIN_POSTS:
        async with http.post(inbound.base_url + path, headers=headers, data={"x": "1"}, allow_redirects=False) as resp:
            if resp.status != 401:
                refused.append(f"POST {path}: {resp.status}")
    assert not refused, f"answered without valid credentials ({credentials}): {refused}"


async def test_admin_accepts_the_token_and_refuses_a_post_without_csrf(
    inbound: Inbound, http: aiohttp.ClientSession
) -> None:
    for auth in (f"Bearer {ADMIN}", _basic("ops", ADMIN)):
        async with http.get(inbound.base_url + "/admin/mappings", headers={"Authorization": auth}) as resp:
            assert resp.status == 200
    async with http.post(inbound.base_url + "/admin/dlq/1/discard", headers={"Authorization": f"Bearer {ADMIN}"},
                         data={"reason": "forged"}, allow_redirects=False) as resp:
        assert resp.status == 403


# --- size limits --------------------------------------------------------------------------------------------


async def test_webhook_bodies_over_one_mebibyte_are_refused(inbound: Inbound, http: aiohttp.ClientSession) -> None:
    body = b"[" + b" " * (MiB + 10) + b"]"
    headers = v3_headers(SECRET, "POST", inbound.webhook_url, body, int(time.time() * 1000))
    assert await _post(http, inbound.webhook_url, body, headers) == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while streaming
        for _ in range(20):
            yield b" " * (128 * 1024)

    async with http.post(inbound.webhook_url, data=chunks(), headers={"Content-Type": "application/json"}) as resp:
        await resp.read()
        assert resp.status == 413


async def test_action_bodies_over_one_mebibyte_are_refused(inbound: Inbound, http: aiohttp.ClientSession) -> None:
    url = inbound.base_url + "/actions/create-invoice"
    body = b"{" + b" " * (MiB + 10) + b"}"
    assert await _post(http, url, body, v3_headers(SECRET, "POST", url, body, int(time.time() * 1000))) == 413


@pytest.mark.parametrize("oversize", ["one_huge_header", "many_headers", "long_url"])
async def test_oversized_headers_and_request_lines_are_refused(inbound: Inbound, oversize: str) -> None:
    """Raw HTTP, so the client adds nothing of its own; the server answers 4xx (400/413/414/431) or closes."""
    path = "/webhooks/hubspot"
    headers = ["Host: 127.0.0.1", "Content-Type: application/json", "Content-Length: 2"]
    if oversize == "one_huge_header":
        headers.append("X-Padding: " + "a" * 20_000)
    elif oversize == "many_headers":
        headers.extend(f"X-Pad-{i}: {i}" for i in range(500))
    else:
        path += "?q=" + "a" * 20_000
    request = f"POST {path} HTTP/1.1\r\n" + "\r\n".join(headers) + "\r\nConnection: close\r\n\r\n[]"
    host, port = inbound.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request.encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    except (ConnectionResetError, BrokenPipeError):
        status_line = b""
    finally:
        writer.close()
    if status_line:
        status = int(status_line.split()[1])
        assert 400 <= status < 500 and status != 401, f"{oversize}: answered {status_line!r}"


# --- the database role --------------------------------------------------------------------------------------


async def test_the_service_role_cannot_rewrite_the_log_or_the_schema(inbound: Inbound) -> None:
    conn = await asyncpg.connect(inbound.service_dsn)
    try:
        assert await conn.fetchval("SELECT rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles "
                                   "WHERE rolname = current_user") is False
        for statement in ("UPDATE events SET type = 'Forged'", "DELETE FROM events", "TRUNCATE events",
                          "CREATE TABLE sneaky (id int)", "DROP TABLE dead_letters",
                          "ALTER TABLE events ADD COLUMN x int", "DELETE FROM schema_migrations"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()


async def test_a_kleer_poll_runs_as_the_service_role(inbound: Inbound) -> None:
    async with KleerSimServer() as sim:
        sim.seed(n_clients=5, seed=11)
        env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": inbound.service_dsn, "KLEER_API_BASE": sim.base_url,
               "KLEER_TOKEN": sim.token, "KLEER_COMPANY_ID": str(sim.company_id), "LOG_LEVEL": "warning",
               "CONNECTION_ID": "security"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "outbound", "poller", "--once", env=env, cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode()[-3000:]
    conn = await asyncpg.connect(inbound.owner_dsn)
    try:
        changed = await conn.fetchval("SELECT count(*) FROM events WHERE type = 'KleerClientChanged' "
                                      "AND stream LIKE 'security/%'")
        fingerprints = await conn.fetchval("SELECT count(*) FROM outbound_fingerprints WHERE connection = 'security'")
    finally:
        await conn.close()
    assert changed == 5 and fingerprints > 5, output.decode()[-2000:]
