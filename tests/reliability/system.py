"""The whole system as separate OS processes, on a fresh database: what the scenarios run against.

``System`` creates a database on the tests' Postgres server (``DATABASE_URL``
names the server; the database itself is new and dropped afterwards) or, with
``private_postgres``, on a cluster of its own (``pgcluster.py``) that it can
restart, migrates it, starts the dev broker, both simulators and every service as its
own process, configured through the environment exactly as
``services/demo.py`` does. HubSpot's webhooks reach the inbound service
through ``WebhookProxy``, a pass-through in the runner's event loop that
records which events the inbound service accepted (2xx): the ledger the
"nothing lost" invariant checks against.

Processes (each can be SIGKILLed and restarted): ``poller``, ``relay``,
``pusher`` (``kleer-sync outbound poller|pusher``, ``kleer-sync relay``),
``inbound`` (webhooks, workflow actions, admin) and ``handlers``
(``kleer-sync inbound handlers``). The broker is restarted through
``TansuBroker.restart`` (it keeps nothing: every topic and offset is lost).
The simulators stand for the external SaaS systems and are never killed:
their state *is* Kleer's and HubSpot's data.

The machine's shared Postgres server, used by every other test, is never
restarted: ``restart_postgres`` needs the private cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import asyncpg
import orjson
from aiohttp import web

from libs.events.migrate import migrate
from libs.mapping import hubspot_properties_to_read, trigger_properties
from sim.broker import TansuBroker, free_port
from tests.reliability.dbrole import create_service_role, drop_service_role
from tests.reliability.pgcluster import PrivateCluster
from tests.reliability.processes import REPO_ROOT, ManagedProcess, ProcessFailed, tail

DEFAULT_SERVER_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PORTAL_ID = 62515
APP_ID = 1234567
COMPANY_ID = 1001
CONNECTION = "default"
WEBHOOK_PATH = "/webhooks/hubspot"

#: The services, in start order, with their ``kleer-sync`` arguments.
SERVICE_ARGS: dict[str, list[str]] = {
    "relay": ["relay"],
    "pusher": ["outbound", "pusher"],
    "poller": ["outbound", "poller"],
    "handlers": ["inbound", "handlers"],
    "inbound": ["inbound"],
}
SERVICES: tuple[str, ...] = tuple(SERVICE_ARGS)


@dataclass(frozen=True)
class RunSecrets:
    """Fresh credentials per run; none of them may appear in any process log."""

    kleer_token: str = field(default_factory=lambda: "kleer-tok-" + secrets.token_hex(12))
    hubspot_token: str = field(default_factory=lambda: "pat-na1-" + secrets.token_hex(16))
    client_secret: str = field(default_factory=lambda: "cs-" + secrets.token_hex(16))
    refresh_token: str = field(default_factory=lambda: "rt-" + secrets.token_hex(16))
    admin_token: str = field(default_factory=lambda: "adm-" + secrets.token_hex(12))

    def named(self) -> dict[str, str]:
        return {
            "KLEER_TOKEN": self.kleer_token,
            "HUBSPOT_ACCESS_TOKEN": self.hubspot_token,
            "HUBSPOT_CLIENT_SECRET": self.client_secret,
            "HUBSPOT_REFRESH_TOKEN": self.refresh_token,
            "ADMIN_TOKEN": self.admin_token,
        }


@dataclass
class SystemConfig:
    workdir: Path
    clients: int = 100
    seed: int = 7
    poll_interval: int = 3  # seconds, every object type
    server_dsn: str | None = None  # Postgres server; default DATABASE_URL or the local one
    keep_database: bool = False
    service_role: bool = True  # services connect as a role without superuser (``dbrole.py``)
    private_postgres: bool = False  # a cluster of our own (restartable) instead of the shared server
    extra_env: dict[str, str] = field(default_factory=dict)


def server_dsn_from_env() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_SERVER_DSN


def with_database(dsn: str, database: str) -> str:
    return urlparse(dsn)._replace(path=f"/{database}").geturl()


async def create_database(server_dsn: str, prefix: str = "kssoak") -> str:
    """Create and migrate a new database beside ``server_dsn``'s; returns its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(with_database(server_dsn, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = with_database(server_dsn, name)
    await migrate(dsn, log=None)
    return dsn


async def drop_database(dsn: str) -> None:
    name = urlparse(dsn).path.lstrip("/")
    admin = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def webhook_subscriptions() -> list[dict[str, Any]]:
    """What our HubSpot app subscribes to: company and project creation, deletion and the
    property changes of every mapped or triggering property (HubSpot subscribes property by property)."""
    subs: list[dict[str, Any]] = []

    def add(kind: str, prop: str | None = None, object_type_id: str | None = None) -> None:
        subs.append({"id": len(subs) + 1, "subscriptionType": kind, "propertyName": prop,
                     "objectTypeId": object_type_id})

    add("company.creation")
    add("company.deletion")
    for prop in sorted(set(hubspot_properties_to_read("client")) | set(trigger_properties("client"))):
        add("company.propertyChange", prop)
    add("object.creation", None, "0-970")
    add("object.deletion", None, "0-970")
    for prop in sorted(set(hubspot_properties_to_read("project")) | set(trigger_properties("project"))):
        add("object.propertyChange", prop, "0-970")
    return subs


class WebhookProxy:
    """Passes HubSpot's webhook requests to the inbound service unchanged; remembers what was accepted.

    ``accepted`` maps each HubSpot ``eventId`` the inbound service answered 2xx
    for to the time it was first accepted. When the inbound service is down the
    proxy answers 502, as an ingress would, and HubSpot retries.
    """

    def __init__(self, target_url: str) -> None:
        self.target_url = target_url
        self.port = free_port()
        self.accepted: dict[int, float] = {}
        self.statuses: Counter[int] = Counter()
        self.captured: list[tuple[float, bytes, dict[str, str]]] = []  # (when, body, headers) of accepted requests
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post(WEBHOOK_PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower().startswith(("x-hubspot", "content-type"))}
        try:
            async with self._session.post(
                self.target_url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                answer = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.statuses[502] += 1
            return web.Response(status=502, text=f"inbound unreachable: {type(exc).__name__}")
        self.statuses[status] += 1
        if 200 <= status < 300:
            now = time.time()
            with contextlib.suppress(orjson.JSONDecodeError, TypeError, AttributeError):
                for event in orjson.loads(body):
                    self.accepted.setdefault(int(event["eventId"]), now)
            # The first 10 and the latest 40: in a long run, replays of old (stale) and recent requests.
            self.captured.append((time.monotonic(), body, headers))
            if len(self.captured) > 50:
                del self.captured[10]
        return web.Response(status=status, body=answer, content_type="application/json")


class System:
    """Broker, simulators and services as processes over one fresh database (see the module docstring)."""

    def __init__(self, config: SystemConfig) -> None:
        self.config = config
        self.secrets = RunSecrets()
        self.logs = config.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.server_dsn = config.server_dsn or server_dsn_from_env()
        self.dsn = ""  # the owner's DSN (migrations, the runner's checks)
        self.service_dsn = ""  # what the services connect with
        self.service_role = ""
        self.broker = TansuBroker(log_path=str(self.logs / "broker.log"))
        self.kleer_port = free_port()
        self.hubspot_port = free_port()
        self.inbound_port = free_port()
        self.public_url = f"http://127.0.0.1:{self.inbound_port}"
        self.proxy = WebhookProxy(self.public_url + WEBHOOK_PATH)
        self.processes: dict[str, ManagedProcess] = {}
        self.session: aiohttp.ClientSession | None = None
        self.broker_restarts = 0
        self.cluster = PrivateCluster(self.logs / "postgres.log") if config.private_postgres else None
        self.postgres_restarts = 0
        self.postgres_down: list[tuple[float, float]] = []  # (stopped, accepting again), monotonic
        self._postgres_down_since: float | None = None
        self._postgres_lock = asyncio.Lock()
        self.supervised = False  # ``supervise`` restarts services that exit, as Kubernetes would
        self.exits: list[dict[str, Any]] = []  # every service exit the runner did not cause
        self._process_locks: dict[str, asyncio.Lock] = {}
        self.started_at = 0.0
        self.pool: asyncpg.Pool | None = None
        self.start_timings: dict[str, float] = {}

    # --- addresses -------------------------------------------------------------------------------

    @property
    def kleer_base(self) -> str:
        return f"http://127.0.0.1:{self.kleer_port}"

    @property
    def hubspot_base(self) -> str:
        return f"http://127.0.0.1:{self.hubspot_port}"

    @property
    def webhook_url(self) -> str:
        return self.public_url + WEBHOOK_PATH

    def env(self) -> dict[str, str]:
        interval = str(self.config.poll_interval)
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": self.service_dsn or self.dsn,
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": "soak",
            "KLEER_API_BASE": f"{self.kleer_base}/v1",
            "KLEER_COMPANY_ID": str(COMPANY_ID),
            "HUBSPOT_API_BASE": self.hubspot_base,
            "HUBSPOT_APP_ID": str(APP_ID),
            "HUBSPOT_PORTAL_ID": str(PORTAL_ID),
            "PUBLIC_BASE_URL": self.public_url,
            "PORT": str(self.inbound_port),
            "CONNECTION_ID": CONNECTION,
            "LOG_LEVEL": "info",
            **{f"POLL_INTERVAL_{kind}": interval
               for kind in ("CLIENTS", "PROJECTS", "INVOICES", "AGREEMENTS", "LINE_ITEMS", "PRODUCTS")},
            **self.secrets.named(),
            **self.config.extra_env,
        }

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self, services: Iterable[str] = SERVICES) -> None:
        self.started_at = time.monotonic()
        mark = time.monotonic()

        def lap(step: str) -> None:
            nonlocal mark
            self.start_timings[step] = round(time.monotonic() - mark, 2)
            mark = time.monotonic()

        self.session = aiohttp.ClientSession()
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.start)
            self.server_dsn = self.cluster.dsn
            lap("private_postgres")
        self.dsn = await create_database(self.server_dsn)
        self.pool = await asyncpg.create_pool(self.dsn, min_size=0, max_size=4)
        if self.config.service_role:
            self.service_role, self.service_dsn = await create_service_role(self.dsn)
        lap("database")
        await asyncio.to_thread(self.broker.start)
        await self.proxy.start()
        self._start_simulators()
        await self._wait_http(self.kleer_base + "/_sim/health", "sim-kleer")
        await self._wait_http(self.hubspot_base + "/_sim/state", "sim-hubspot")
        await self._configure_hubspot_sim()
        lap("broker_and_simulators")
        await self._hubspot_setup()
        lap("hubspot_setup")
        # Independent processes: start them side by side (each takes a second or two to import).
        await asyncio.gather(*(self.start_service(name) for name in services))
        lap("services")

    async def stop(self, failed: bool = False) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()
        self.broker.stop()
        await self.proxy.stop()
        if self.pool is not None:
            await self.pool.close()
        if self.session is not None:
            await self.session.close()
        keep = self.config.keep_database or (failed and bool(os.environ.get("SOAK_KEEP_FAILED_DB")))
        if self.cluster is not None:
            if keep:  # stopped, its data directory left in place for a look
                self.cluster.stop("fast")
                print(f"kept the private cluster's data in {self.cluster.data}: start it with "
                      f"`{self.cluster.start_command()}`, then DATABASE_URL={self.dsn}", file=sys.stderr)
            else:
                self.cluster.destroy()
            return
        if self.dsn and not keep:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await drop_database(self.dsn)
            if self.service_role:
                with contextlib.suppress(OSError, asyncpg.PostgresError):
                    await drop_service_role(self.server_dsn, self.service_role)

    def _start_simulators(self) -> None:
        env = self.env()
        kleer = ManagedProcess(
            "sim-kleer",
            ["sim", "kleer", "--port", str(self.kleer_port), "--seed", str(self.config.seed),
             "--clients", str(self.config.clients), "--token", self.secrets.kleer_token,
             "--company-id", str(COMPANY_ID)],
            env, self.logs / "sim-kleer.log",
        )
        hubspot = ManagedProcess(
            "sim-hubspot",
            ["sim", "hubspot", "--port", str(self.hubspot_port), "--token", self.secrets.hubspot_token,
             "--client-secret", self.secrets.client_secret, "--app-id", str(APP_ID),
             "--portal-id", str(PORTAL_ID), "--refresh-token", self.secrets.refresh_token,
             "--webhook-url", self.proxy.url, "--webhook-signed-url", self.webhook_url],
            env, self.logs / "sim-hubspot.log",
        )
        for process in (kleer, hubspot):
            self.processes[process.name] = process
            process.start()

    async def _wait_http(self, url: str, name: str, timeout: float = 30.0) -> None:
        assert self.session is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.processes[name].check_running()
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status < 500:
                        return
            await asyncio.sleep(0.1)
        raise ProcessFailed(f"{name} did not answer at {url} within {timeout:.0f}s:\n"
                            f"{tail(self.processes[name].log_path)}")

    async def _configure_hubspot_sim(self) -> None:
        await self.sim_post(self.hubspot_base + "/_sim/webhooks", {
            "subscriptions": webhook_subscriptions(),
            # HubSpot retries for a day with long waits; the same schedule, compressed.
            "retry_base_ms": 250, "retry_max_ms": 4000, "max_attempts": 10, "timeout_s": 5,
        })

    async def _hubspot_setup(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "hubspot", "setup",
            env=self.env(), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        (self.logs / "hubspot-setup.log").write_bytes(out)
        if proc.returncode != 0:
            raise ProcessFailed(f"`kleer-sync hubspot setup` failed ({proc.returncode}):\n{out.decode()[-2000:]}")

    def _service(self, name: str) -> ManagedProcess:
        if name not in self.processes:
            metrics_port = free_port()
            env = {**self.env(), "METRICS_PORT": str(metrics_port)}
            health = f"http://127.0.0.1:{metrics_port}/healthz"
            if name == "inbound":
                health = f"{self.public_url}/healthz"
            self.processes[name] = ManagedProcess(name, SERVICE_ARGS[name], env, self.logs / f"{name}.log", health)
        return self.processes[name]

    async def start_service(self, name: str) -> float:
        assert self.session is not None
        process = self._service(name)
        process.start()
        return await process.wait_healthy(self.session)

    async def sigkill(self, name: str) -> None:
        self.processes[name].sigkill()

    def process_lock(self, name: str) -> asyncio.Lock:
        """Held while the runner kills or restarts ``name`` (the supervisor leaves it alone meanwhile)."""
        return self._process_locks.setdefault(name, asyncio.Lock())

    async def restart(self, name: str, timeout: float = 120.0) -> float:
        """Start a stopped service again until it is healthy (a start-up that exits is retried with
        backoff, as Kubernetes would, and recorded in ``exits``); returns the seconds it took."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                await self.start_service(name)
                return time.monotonic() - started
            except ProcessFailed as exc:
                process = self.processes[name]
                if process.alive or time.monotonic() - started > timeout:
                    raise
                self._record_exit(process, "start-up", str(exc))
                attempt += 1
                await asyncio.sleep(min(8.0, 0.5 * 2**attempt))

    def _record_exit(self, process: ManagedProcess, phase: str, detail: str) -> None:
        code = process.popen.returncode if process.popen is not None else None
        process.exits.append(code if code is not None else -1)
        now = time.monotonic()
        self.exits.append({
            "process": process.name, "phase": phase, "exit_code": code,
            "at_s": round(now - self.started_at, 1), "while_postgres_down": self.postgres_was_down(now),
            "detail": detail[-1500:],
        })

    def postgres_was_down(self, when: float, grace: float = 5.0) -> bool:
        """Whether ``when`` falls in a Postgres restart (or ``grace`` seconds after it)."""
        if self._postgres_down_since is not None and when >= self._postgres_down_since:
            return True
        return any(down <= when <= up + grace for down, up in self.postgres_down)

    async def supervise(self, interval: float = 0.5) -> None:
        """Restart every service that exits on its own (``restartPolicy: Always``); each exit is recorded."""
        self.supervised = True
        while True:
            await asyncio.sleep(interval)
            for name in SERVICES:
                process = self.processes.get(name)
                lock = self.process_lock(name)
                if process is None or process.popen is None or process.alive or lock.locked():
                    continue
                async with lock:
                    if process.alive:
                        continue
                    self._record_exit(process, "running", f"exited on its own; last lines of {process.log_path}:\n"
                                      f"{tail(process.log_path)}")
                    with contextlib.suppress(ProcessFailed):  # recorded; the invariants report it
                        await self.restart(name)

    async def restart_broker(self) -> None:
        """SIGKILL the broker and start it again on the same port: every topic, message and offset is gone."""

        def kill_and_start() -> None:
            self.broker.kill()
            self.broker.start()

        await asyncio.to_thread(kill_and_start)
        self.broker_restarts += 1

    async def restart_postgres(self, mode: str, pause: float) -> None:
        """Stop the private cluster (``pg_ctl stop -m <mode>``), stay down ``pause`` seconds, start it again."""
        if self.cluster is None:
            raise RuntimeError("a Postgres restart needs the private cluster (SystemConfig(private_postgres=True)): "
                               "the shared server serves every other test on the machine")
        async with self._postgres_lock:  # one restart at a time: overlapping faults queue up
            self._postgres_down_since = stopped = time.monotonic()
            try:
                await asyncio.to_thread(self.cluster.restart, mode, pause)
            finally:
                self.postgres_down.append((stopped, time.monotonic()))
                self._postgres_down_since = None
        self.postgres_restarts += 1

    def check_processes(self) -> None:
        """Raise if a process died that the runner did not kill (under ``supervise``: a simulator)."""
        for name, process in self.processes.items():
            if not (self.supervised and name in SERVICES):
                process.check_running()

    # --- talking to the simulators ------------------------------------------------------------------

    async def sim_post(self, url: str, body: Any) -> Any:
        assert self.session is not None
        async with self.session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=30)) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                raise RuntimeError(f"POST {url} answered {resp.status}: {raw[:500]!r}")
            return orjson.loads(raw) if raw else None

    async def sim_get(self, url: str) -> Any:
        assert self.session is not None
        async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                raise RuntimeError(f"GET {url} answered {resp.status}: {raw[:500]!r}")
            return orjson.loads(raw)

    async def sim_delete(self, url: str) -> None:
        assert self.session is not None
        async with self.session.delete(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
            await resp.read()

    def log_files(self) -> list[Path]:
        return sorted(self.logs.glob("*.log"))
