"""``kleer-sync demo`` (what ``make run`` runs): the whole system on one machine, against the simulators.

Starts the dev Kafka broker, the Kleer simulator (seeded with a realistic
book), the HubSpot simulator (its webhooks wired to our inbound service),
migrates the database, creates our HubSpot properties, starts the outbound
(poller + relay + pusher) and inbound (webhooks + handlers + admin) services
as separate processes, shows the first sync per object type as it happens,
then prints where to look. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg

from libs.events.migrate import migrate
from sim.broker import TansuBroker, free_port

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/kleer_sync_demo"
RUN_DIR = Path(".run")
DEMO_TOKEN_KLEER = "demo-kleer-token"
DEMO_TOKEN_HUBSPOT = "demo-hubspot-token"
DEMO_CLIENT_SECRET = "demo-client-secret-0000"
DEMO_ADMIN_TOKEN = "demo-admin"
DEMO_APP_ID = "1234567"
DEMO_PORTAL_ID = "62515"
DEMO_COMPANY_ID = "1001"

# What the progress display counts, per object type: Kleer change events vs HubSpot upserts.
OBJECT_TYPES = (
    ("clients", "KleerClientChanged", "HubSpotCompanyUpserted"),
    ("products", "KleerProductChanged", "HubSpotProductUpserted"),
    ("projects", "KleerProjectChanged", "HubSpotProjectUpserted"),
    ("invoices", "KleerInvoiceChanged", "HubSpotInvoiceUpserted"),
    ("agreements", "KleerAgreementChanged", "HubSpotSubscriptionUpserted"),
    ("line items", "KleerLineItemChanged", "HubSpotLineItemUpserted"),
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="run everything against the simulators and show a live sync")
    parser.add_argument(
        "--clients", type=int, default=300, help="clients in the seeded Kleer book (default 300)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--port", type=int, default=8080, help="inbound service port (default 8080, or a free one)"
    )
    parser.add_argument(
        "--exit-after-sync", action="store_true", help="stop once the first sync is done (for CI)"
    )
    parser.set_defaults(func=run)


def _port(preferred: int) -> int:
    """``preferred`` if it is free (0: any free port), else a free one."""
    if preferred == 0:
        return free_port()
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


@dataclass
class Processes:
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        RUN_DIR.mkdir(exist_ok=True)
        log = open(RUN_DIR / f"{name}.log", "ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.children.append((name, process))
        return process

    def check(self) -> None:
        for name, process in self.children:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {process.returncode}; see {RUN_DIR / (name + '.log')}"
                )

    def stop(self) -> None:
        for _, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, process in reversed(self.children):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
            if process.poll() is None:
                process.kill()


def _wait_http(url: str, timeout: float = 30.0) -> None:
    parsed = urlparse(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((parsed.hostname, parsed.port), 0.3):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers at {url} after {timeout:.0f}s")


async def _ensure_database(dsn: str) -> None:
    name = urlparse(dsn).path.lstrip("/")
    admin = await asyncpg.connect(urlparse(dsn)._replace(path="/postgres").geturl())
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    await migrate(dsn, log=lambda m: print(f"  {m}"))


async def _counts(dsn: str) -> dict[str, tuple[int, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT type, count(*) AS n FROM events GROUP BY type")
    finally:
        await conn.close()
    by_type = {r["type"]: r["n"] for r in rows}
    return {
        label: (by_type.get(changed, 0), by_type.get(pushed, 0)) for label, changed, pushed in OBJECT_TYPES
    }


async def _show_progress(dsn: str, processes: Processes, timeout: float = 600.0) -> None:
    print("\n==> first sync, Kleer → HubSpot (changes found by the poller / records upserted in HubSpot)")
    deadline = time.monotonic() + timeout
    last = ""
    stable_since = None
    while time.monotonic() < deadline:
        processes.check()
        counts = await _counts(dsn)
        line = "  " + "  ".join(f"{label} {pushed}/{changed}" for label, (changed, pushed) in counts.items())
        if line != last:
            print(line, flush=True)
            last = line
            stable_since = time.monotonic()
        done = all(changed > 0 and pushed >= changed for label, (changed, pushed) in counts.items())
        if done and stable_since and time.monotonic() - stable_since > 2:
            print("==> first sync complete", flush=True)
            return
        await asyncio.sleep(1.0)
    print("==> the first sync is still running; it carries on in the background (see .run/*.log)")


def run(args: argparse.Namespace) -> int:
    dsn = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    inbound_port = _port(args.port)
    kleer_port, hubspot_port = _port(8091), _port(8090)
    metrics_ports = {name: free_port() for name in ("outbound", "inbound")}
    processes = Processes()
    broker = TansuBroker(port=_port(9092), log_path=str(RUN_DIR / "broker.log"))
    RUN_DIR.mkdir(exist_ok=True)
    try:
        print("==> starting the Kafka-protocol broker (Tansu, memory only)")
        broker.start()
        print(f"==> migrating {urlparse(dsn).path.lstrip('/')}")
        asyncio.run(_ensure_database(dsn))
        public = f"http://127.0.0.1:{inbound_port}"
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "KLEER_API_BASE": f"http://127.0.0.1:{kleer_port}/v1",
            "KLEER_TOKEN": DEMO_TOKEN_KLEER,
            "KLEER_COMPANY_ID": DEMO_COMPANY_ID,
            "HUBSPOT_API_BASE": f"http://127.0.0.1:{hubspot_port}",
            "HUBSPOT_ACCESS_TOKEN": DEMO_TOKEN_HUBSPOT,
            "HUBSPOT_CLIENT_SECRET": DEMO_CLIENT_SECRET,
            "HUBSPOT_APP_ID": DEMO_APP_ID,
            "HUBSPOT_PORTAL_ID": DEMO_PORTAL_ID,
            "PUBLIC_BASE_URL": public,
            "PORT": str(inbound_port),
            "ADMIN_TOKEN": DEMO_ADMIN_TOKEN,
            "LOG_LEVEL": "info",
            # The demo shows a first sync, then keeps polling often so edits show up fast.
            "POLL_INTERVAL_CLIENTS": "30",
            "POLL_INTERVAL_PROJECTS": "30",
            "POLL_INTERVAL_INVOICES": "60",
            "POLL_INTERVAL_AGREEMENTS": "60",
            "POLL_INTERVAL_LINE_ITEMS": "60",
            "POLL_INTERVAL_PRODUCTS": "120",
        }
        print(f"==> starting the Kleer simulator with a book of {args.clients} clients (seed {args.seed})")
        processes.start(
            "sim-kleer",
            [
                "sim",
                "kleer",
                "--port",
                str(kleer_port),
                "--seed",
                str(args.seed),
                "--clients",
                str(args.clients),
                "--token",
                DEMO_TOKEN_KLEER,
                "--company-id",
                DEMO_COMPANY_ID,
            ],
            env,
        )
        print("==> starting the HubSpot simulator (webhooks go to our inbound service)")
        processes.start(
            "sim-hubspot",
            [
                "sim",
                "hubspot",
                "--port",
                str(hubspot_port),
                "--token",
                DEMO_TOKEN_HUBSPOT,
                "--client-secret",
                DEMO_CLIENT_SECRET,
                "--app-id",
                DEMO_APP_ID,
                "--portal-id",
                DEMO_PORTAL_ID,
                "--webhook-url",
                f"{public}/webhooks/hubspot",
            ],
            env,
        )
        _wait_http(env["KLEER_API_BASE"])
        _wait_http(env["HUBSPOT_API_BASE"])
        _subscribe_webhooks(env["HUBSPOT_API_BASE"])
        print("==> creating our HubSpot properties (kleer-sync hubspot setup)")
        subprocess.run([sys.executable, "-m", "services.cli", "hubspot", "setup"], env=env, check=True)
        print("==> starting the inbound service (webhooks, workflow actions, admin, handlers)")
        processes.start(
            "inbound", ["inbound", "--with-handlers"], {**env, "METRICS_PORT": str(metrics_ports["inbound"])}
        )
        print("==> starting the outbound service (poller, relay, pusher)")
        processes.start("outbound", ["outbound"], {**env, "METRICS_PORT": str(metrics_ports["outbound"])})
        _wait_http(public)
        asyncio.run(_show_progress(dsn, processes))
        _print_where_to_look(public, hubspot_port, kleer_port, metrics_ports)
        if args.exit_after_sync:
            return 0
        print("\nRunning. Ctrl-C stops everything.", flush=True)
        while True:
            processes.check()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\n==> stopping")
        return 0
    except (RuntimeError, subprocess.CalledProcessError, OSError, asyncpg.PostgresError) as exc:
        print(
            f"\nERROR: {exc}\nLogs of every process are in {RUN_DIR}/; fix the cause and run `make run` again.",
            file=sys.stderr,
        )
        return 1
    finally:
        processes.stop()
        broker.stop()


def webhook_subscriptions() -> list[dict[str, Any]]:
    """What our HubSpot app subscribes to: company lifecycle, the triggering properties, project changes."""
    from libs.mapping import trigger_properties

    subscriptions: list[dict[str, Any]] = [
        {"subscriptionType": f"company.{kind}"} for kind in ("creation", "deletion", "merge")
    ]
    subscriptions += [
        {"subscriptionType": "company.propertyChange", "propertyName": name}
        for name in trigger_properties("client")
    ]
    subscriptions += [
        {"subscriptionType": "object.propertyChange", "objectTypeId": "0-970", "propertyName": name}
        for name in trigger_properties("project")
    ]
    return [{"id": i, **sub} for i, sub in enumerate(subscriptions, 1)]


def _subscribe_webhooks(hubspot_base: str) -> None:
    """Configure the simulated app's webhook subscriptions, as a real app's settings page would."""
    import json
    import urllib.request

    body = json.dumps({"subscriptions": webhook_subscriptions()}).encode()
    request = urllib.request.Request(
        f"{hubspot_base}/_sim/webhooks",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def _example_company(hubspot_base: str) -> tuple[str, str, str]:
    """(HubSpot id, name, kleer_id) of one synced company, for the printed example."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{hubspot_base}/crm/v3/objects/companies?limit=1&properties=name,kleer_id",
        headers={"Authorization": f"Bearer {DEMO_TOKEN_HUBSPOT}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            results = json.loads(response.read())["results"]
    except (OSError, ValueError, KeyError):
        return "<hubspot-id>", "", "<kleer-id>"
    if not results:
        return "<hubspot-id>", "", "<kleer-id>"
    first = results[0]
    return str(first["id"]), first["properties"].get("name", ""), first["properties"].get("kleer_id", "")


def _print_where_to_look(
    public: str, hubspot_port: int, kleer_port: int, metrics_ports: dict[str, int]
) -> None:
    company_id, company_name, kleer_id = _example_company(f"http://127.0.0.1:{hubspot_port}")
    print(
        f"""
Where to look:
  admin pages     {public}/admin   (token: {DEMO_ADMIN_TOKEN}; user any, password {DEMO_ADMIN_TOKEN})
  metrics         http://127.0.0.1:{metrics_ports["outbound"]}/metrics (outbound)
                  http://127.0.0.1:{metrics_ports["inbound"]}/metrics (inbound)
  health          {public}/readyz
  HubSpot sim     http://127.0.0.1:{hubspot_port}/_sim/state   Kleer sim  http://127.0.0.1:{kleer_port}/_sim/state
  logs            {RUN_DIR}/*.log
  audit a record  DATABASE_URL=... .venv/bin/kleer-sync audit kleer:client:{kleer_id}

Try an inbound edit: rename "{company_name}" in the HubSpot simulator as a user would; Kleer has it within a second:
  curl -s -X POST http://127.0.0.1:{hubspot_port}/_sim/ui-edit/companies/{company_id} \\
       -H 'Content-Type: application/json' -d '{{"properties": {{"name": "Renamed AB"}}}}'
  curl -s -H 'X-Token: {DEMO_TOKEN_KLEER}' -H 'Accept: application/json' \\
       http://127.0.0.1:{kleer_port}/v1/company/{DEMO_COMPANY_ID}/client/{kleer_id}
Change a share of the Kleer book (shows up at the next poll):
  curl -s -X POST http://127.0.0.1:{kleer_port}/_sim/mutate -H 'Content-Type: application/json' -d '{{"share": 0.05}}'"""
    )
