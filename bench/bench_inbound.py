"""Inbound benchmark: webhook intake throughput and webhook-to-Kleer latency.

1. Requests/s, 1 event per request: the real ``kleer-sync inbound`` process
   (v3 signature check + durable group-committed append before the 200) beside
   a bare aiohttp handler answering 204, same load generator, same run, in
   interleaved rounds (``--rounds``; the ratio is over the summed rounds).
   Target: at least 30 % of bare.
2. Events/s at 100 events per request through the same process (target >= 20,000).
3. Webhook-to-Kleer latency through the whole path (HubSpot simulator UI edits
   -> signed webhooks -> intake -> log -> relay -> Kafka -> handlers -> Kleer
   simulator): from the webhook's recording to the commit of its
   ``KleerClientUpdated`` (after the Kleer write). Targets: p50 < 250 ms, p99 < 1 s.

The load generator is in-repo: a minimal HTTP/1.1 client in this process with
N concurrent keep-alive connections, requests signed and serialised ahead of
time (signing is HubSpot's cost, not ours). It shares the machine with the
server, so every phase reports the CPU seconds of the load generator, of the
server process and of the PostgreSQL backends serving the benchmark's
database, per event, with the load average before and after: on a shared
machine compare those and the ratios, not the absolute rates.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import orjson

from bench.common import (
    backend_pids,
    cpu_seconds,
    drop_database_async,
    fresh_database,
    progress,
    write_results,
)
from libs.events.migrate import migrate
from libs.hubspot.signatures import v3_headers
from sim.broker import free_port

SECRET = "bench-client-secret"
PORTAL = 62515
ROOT = Path(__file__).resolve().parents[1]

# The baseline runs on the event loop the inbound service runs on (EVENT_LOOP), as a fair peer must.
BARE_SERVER = """
import asyncio, sys
from aiohttp import web
from libs.runtime import run_event_loop
async def hook(request):
    await request.read()
    return web.Response(status=204)
async def main():
    app = web.Application()
    app.router.add_post("/webhooks/hubspot", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
    await asyncio.Event().wait()
run_event_loop(main())
"""


def _events(start_id: int, count: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [
        {"eventId": start_id + i, "subscriptionId": 1, "portalId": PORTAL, "appId": 1, "occurredAt": now,
         "subscriptionType": "company.propertyChange", "attemptNumber": 0, "objectId": 10_000 + ((start_id + i) // 10) % 5000,
         "propertyName": "name", "propertyValue": f"Company {start_id + i} AB", "changeSource": "CRM_UI",
         "sourceId": "userId:1"}
        for i in range(count)
    ]


def _signed_requests(url: str, total: int, per_request: int, first_id: int) -> list[bytes]:
    """``total`` signed HTTP/1.1 requests of ``per_request`` events each, as the bytes sent on the wire."""
    target = urlsplit(url)
    requests = []
    now = int(time.time() * 1000)
    for r in range(total):
        body = orjson.dumps(_events(first_id + r * per_request, per_request))
        headers = {"Host": target.netloc, "Content-Type": "application/json", "Content-Length": str(len(body)),
                   **v3_headers(SECRET, "POST", url, body, now)}
        head = f"POST {target.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        requests.append(head.encode() + body)
    return requests


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on a keep-alive connection and read its answer; returns the status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _load(url: str, requests: list[bytes], concurrency: int, seconds: float) -> dict[str, Any]:
    """Send the prepared requests over ``concurrency`` keep-alive connections for at most ``seconds``.

    A minimal HTTP/1.1 client (pre-built request bytes, Content-Length answers): a full client library
    cost more CPU per request than the bare server it measured, on the same two cores.
    """
    target = urlsplit(url)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    cursor = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal cursor
        reader, writer = await asyncio.open_connection(target.hostname, target.port)
        try:
            while cursor < len(requests) and time.perf_counter() < deadline:
                request = requests[cursor]
                cursor += 1
                started = time.perf_counter()
                status = await _exchange(reader, writer, request)
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    started = time.perf_counter()
    cpu_started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    load_generator_cpu = time.process_time() - cpu_started
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "load_generator_cpu_s": round(load_generator_cpu, 3),
        "statuses": {str(k): v for k, v in statuses.items()},
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2) if latencies else None,
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
    }


async def _wait_up(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                err = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"server exited: {err[-2000:]}")
            try:
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def _measured(label: str, url: str, requests: list[bytes], per_request: int,
                    server: subprocess.Popen[bytes], database: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """One load phase, with the CPU seconds it cost the load generator, the server and PostgreSQL."""
    progress(f"{label}: {per_request} event(s)/request, {args.concurrency} connections, {args.seconds}s")
    pg_before = {pid: cpu_seconds(pid) for pid in (await backend_pids(database) if database else [])}
    server_before = cpu_seconds(server.pid)
    load_before = os.getloadavg()[0]
    result = await _load(url, requests, args.concurrency, args.seconds)
    server_cpu = cpu_seconds(server.pid) - server_before
    # backends that opened during the phase count whole; the ones that closed are lost (rare: the pool keeps them)
    pg_cpu = sum(cpu_seconds(pid) - pg_before.get(pid, 0.0) for pid in
                 (await backend_pids(database) if database else []))
    events = result["requests"] * per_request
    result["events_per_s"] = round(events / result["seconds"], 1)
    result["cpu_s"] = {"load_generator": result.pop("load_generator_cpu_s"), "server": round(server_cpu, 3),
                       "postgres": round(pg_cpu, 3)}
    result["cpu_us_per_event"] = {k: round(v / events * 1e6, 1) if events else None
                                  for k, v in result["cpu_s"].items()}
    result["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    progress(f"  {result}")
    return result


def _combined(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's rounds as one phase: requests over the summed time, CPU summed, each round kept."""
    requests = sum(r["requests"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    statuses: dict[str, int] = {}
    cpu: dict[str, float] = {}
    for r in rounds:
        for status, count in r["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
        for process, value in r["cpu_s"].items():
            cpu[process] = cpu.get(process, 0.0) + value
    return {
        "requests": requests,
        "seconds": round(seconds, 3),
        "requests_per_s": round(requests / seconds, 1),
        "events_per_s": round(requests / seconds, 1),
        "statuses": statuses,
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "cpu_us_per_event": {k: round(v / requests * 1e6, 1) for k, v in cpu.items()},
        "load_average_1m": [rounds[0]["load_average_1m"][0], rounds[-1]["load_average_1m"][1]],
        "rounds": [{k: r[k] for k in ("requests", "seconds", "requests_per_s", "p50_ms", "p99_ms")}
                   for r in rounds],
    }


def _start_bare(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)], cwd=ROOT, stderr=subprocess.PIPE)


def _start_inbound(dsn: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": dsn, "PORT": str(port), "METRICS_PORT": str(free_port()),
           "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "HUBSPOT_CLIENT_SECRET": SECRET,
           "HUBSPOT_PORTAL_ID": str(PORTAL), "LOG_LEVEL": "error"}
    return subprocess.Popen([sys.executable, "-m", "services.cli", "inbound"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def intake(args: argparse.Namespace) -> dict[str, Any]:
    name = f"bench_inbound_{uuid.uuid4().hex[:8]}"
    dsn = await fresh_database(name)
    await migrate(dsn, log=None)
    bare_port, full_port = free_port(), free_port()
    bare = _start_bare(bare_port)
    full = _start_inbound(dsn, full_port)
    results: dict[str, Any] = {}
    try:
        bare_url = f"http://127.0.0.1:{bare_port}/webhooks/hubspot"
        full_url = f"http://127.0.0.1:{full_port}/webhooks/hubspot"
        await _wait_up(bare_url, bare)
        await _wait_up(f"http://127.0.0.1:{full_port}/healthz", full)
        # Interleaved rounds, the side that goes first alternating, each side with more requests than it can
        # send in its window: a burst of load from elsewhere hits both sides instead of one.
        bare_requests = _signed_requests(bare_url, int(args.seconds * 40_000), 1, 1)
        bare_rounds, inbound_rounds = [], []
        for r in range(args.rounds):
            inbound_requests = _signed_requests(full_url, int(args.seconds * 20_000), 1, 10_000_000 * (r + 1))
            for side in ("bare", "inbound") if r % 2 == 0 else ("inbound", "bare"):
                if side == "bare":
                    bare_rounds.append(await _measured(f"bare aiohttp 204, round {r + 1}", bare_url,
                                                       bare_requests, 1, bare, None, args))
                else:
                    inbound_rounds.append(await _measured(
                        f"kleer-sync inbound (verify + durable append), round {r + 1}", full_url,
                        inbound_requests, 1, full, name, args))
        results["bare_1_event"] = _combined(bare_rounds)
        results["inbound_1_event"] = _combined(inbound_rounds)
        results["ratio_to_bare"] = round(
            results["inbound_1_event"]["requests_per_s"] / results["bare_1_event"]["requests_per_s"], 3)
        results["ratio_to_bare_by_round"] = [round(i["requests_per_s"] / b["requests_per_s"], 3)
                                             for b, i in zip(bare_rounds, inbound_rounds, strict=True)]
        batched = await _measured("kleer-sync inbound", full_url,
                                  _signed_requests(full_url, int(args.seconds * 400), 100, 50_000_000), 100, full,
                                  name, args)
        results["inbound_100_events"] = batched
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            stored = await conn.fetchval("SELECT count(*) FROM events WHERE type = 'WebhookReceived'")
        finally:
            await conn.close()
        accepted = sum(r["statuses"].get("200", 0) * n for r, n in
                       ((results["inbound_1_event"], 1), (batched, 100)))
        results["events_recorded"] = stored
        results["events_answered_200"] = accepted
    finally:
        for process in (bare, full):
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        await drop_database_async(name)
    return results


async def latency(args: argparse.Namespace) -> dict[str, Any]:
    """The whole inbound path, in-process, against both simulators and a real broker."""
    import asyncpg
    from aiohttp import web

    from libs.config import Secret, Settings
    from libs.events.dlq import DeadLetterQueue
    from libs.events.group_commit import GroupCommitter
    from libs.events.kafka import ensure_topics
    from libs.events.store import PostgresEventStore, create_pool
    from libs.hubspot.client import HubSpotClient
    from libs.hubspot.rate_budget import UnlimitedBudget
    from libs.kleer import KleerClient
    from libs.mapping.convert import to_hubspot
    from libs.mapping.loader import default_mappings
    from libs.mapping.properties import custom_properties
    from services.inbound.app import app_runner, create_app
    from services.inbound.deps import InboundDeps
    from services.inbound.handlers import InboundHandlers
    from services.inbound.hubspot_port import ClientHubSpotPort
    from services.inbound.options import InboundOptions
    from services.inbound.service import handlers_consumer, relay_component
    from services.topics import all_topic_names
    from sim.broker import TansuBroker
    from sim.hubspot.app import create_app as hubspot_app
    from sim.hubspot.config import SimConfig
    from sim.hubspot.simulator import HubSpotSimulator
    from sim.hubspot.store import Source
    from sim.kleer import KleerSimServer

    name = f"bench_inbound_lat_{uuid.uuid4().hex[:8]}"
    dsn = await fresh_database(name)
    await migrate(dsn, log=None)
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    samples: list[float] = []
    transport_s: list[float] = []
    handler_s: list[float] = []
    kafka_s: list[float] = []
    process_cpu_share = 0.0
    with TansuBroker() as broker:
        pool = await create_pool(dsn, min_size=2, max_size=12)
        store = PostgresEventStore(pool)
        simulator = HubSpotSimulator(SimConfig(rate_limit_max=0, time_scale=10.0))
        hub_runner = web.AppRunner(hubspot_app(simulator), access_log=None)
        await hub_runner.setup()
        hub_port = free_port()
        await web.TCPSite(hub_runner, "127.0.0.1", hub_port).start()
        for object_name, definitions in custom_properties().items():
            kind = simulator.object_type(object_name)
            for d in definitions:
                if d.name not in simulator.store.properties[kind]:
                    simulator.store.create_property(kind, {"name": d.name, "label": d.name, "type": "string",
                                                           "fieldType": "text", "hasUniqueValue": d.has_unique_value})
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        async with KleerSimServer() as kleer_sim:
            kleer = KleerClient(company_id=kleer_sim.company_id, token=Secret(kleer_sim.token),
                                base_url=kleer_sim.base_url)
            hubspot_client = HubSpotClient(base_url=f"http://127.0.0.1:{hub_port}",
                                           token=Secret(simulator.config.private_app_token),
                                           budget=UnlimitedBudget(), search_budget=UnlimitedBudget())
            async with kleer, hubspot_client, GroupCommitter(store) as committer:
                options = InboundOptions(client_secret=Secret(simulator.config.client_secret),
                                         public_base_url=base_url, portals={simulator.config.portal_id: "bench"},
                                         app_id=simulator.config.app_id)
                deps = InboundDeps(Settings({"DATABASE_URL": dsn}), options, pool, store, DeadLetterQueue(store),
                                   committer, default_mappings(), broker.bootstrap_servers, prefix, kleer,
                                   ClientHubSpotPort(hubspot_client))
                handlers = InboundHandlers.from_deps(deps)
                handle = handlers.handle

                async def timed_handle(events: Any) -> Any:
                    # Stage timings: recorded -> in the handler (relay + Kafka + consumer), and the handler itself.
                    started = time.time()
                    transport_s.extend(started - e.recorded_at.timestamp() for e in events)
                    kafka_s.extend(started - published_at[e.position] for e in events if e.position in published_at)
                    result = await handle(events)
                    handler_s.append(time.time() - started)
                    return result

                handlers.handle = timed_handle  # type: ignore[method-assign]
                await ensure_topics(broker.bootstrap_servers, all_topic_names(prefix))
                # The service's own consumer and relay settings (poll intervals, fetch waits, idle sleeps).
                consumers = [handlers_consumer(deps, handlers) for _ in range(args.consumers)]
                relay = relay_component(deps)
                published_at: dict[int, float] = {}  # log position -> when the relay had it acknowledged by Kafka
                publish_once = relay.publish_once

                async def timed_publish_once() -> int:
                    before = relay.published_position
                    count = await publish_once()
                    now = time.time()
                    published_at.update((p, now) for p in range(before + 1, relay.published_position + 1))
                    return count

                relay.publish_once = timed_publish_once  # type: ignore[method-assign]
                runner = app_runner(create_app(deps, routes=()))
                await runner.setup()
                await web.TCPSite(runner, "127.0.0.1", port).start()
                tasks = [asyncio.create_task(relay.run()), *(asyncio.create_task(c.run()) for c in consumers)]
                try:
                    progress("latency: waiting for the consumer group")
                    for _ in range(600):
                        if await pool.fetchval("SELECT count(*) FROM consumer_checkpoints") >= 4:
                            break
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(1.0)  # let the group settle
                    kind = simulator.object_type("companies")
                    companies = []
                    for i in range(args.companies):
                        kleer_id = await kleer.clients.create({"name": f"Latency {i} AB"})
                        mapped = to_hubspot("client", await kleer.clients.get(kleer_id))
                        record = simulator.store.create_one(kind, {"properties": mapped},
                                                            Source("INTEGRATION", str(simulator.config.app_id)))
                        companies.append(record.id)
                    simulator.configure_webhooks({"target_url": base_url + "/webhooks/hubspot", "batch_window_ms": 5})
                    progress(f"latency: {args.edits} UI edits over {args.companies} companies, one every "
                             f"{args.interval_ms} ms")
                    edits_started, edits_cpu = time.perf_counter(), time.process_time()
                    for n in range(args.edits):
                        simulator.ui_edit("companies", str(companies[n % len(companies)]),
                                          {"properties": {"name": f"Edited {n} AB"}})
                        await asyncio.sleep(args.interval_ms / 1000)
                    await simulator.webhooks.drain(10)
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        done = await pool.fetchval("SELECT count(*) FROM events WHERE type = 'KleerClientUpdated'")
                        if done >= args.edits * 0.95:
                            break
                        await asyncio.sleep(0.1)
                    # Everything here (both simulators, intake, relay, handlers) shares this one process.
                    process_cpu_share = (time.process_time() - edits_cpu) / (time.perf_counter() - edits_started)
                    await asyncio.sleep(0.5)
                    rows = await pool.fetch(
                        "SELECT u.recorded_at AS done, min(w.recorded_at) AS received FROM events u "
                        "CROSS JOIN LATERAL jsonb_array_elements_text(u.data::jsonb -> 'webhook_event_ids') AS id(v) "
                        "JOIN events w ON w.event_id = id.v::uuid WHERE u.type = 'KleerClientUpdated' "
                        "GROUP BY u.position, u.recorded_at")
                    samples = sorted((r["done"] - r["received"]).total_seconds() for r in rows)
                    writes = kleer_sim.request_count(method="POST")
                finally:
                    for consumer in consumers:
                        await consumer.stop()
                    await asyncio.wait(tasks[1:], timeout=20)
                    await relay.stop()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    await runner.cleanup()
        await hub_runner.cleanup()
        await pool.close()
    await drop_database_async(name)
    _ = asyncpg
    if not samples:
        return {"error": "no Kleer writes observed"}
    return {
        "edits": args.edits,
        "kleer_writes": writes,
        "samples": len(samples),
        "p50_ms": round(statistics.median(samples) * 1000, 1),
        "p90_ms": round(samples[int(len(samples) * 0.9)] * 1000, 1),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000, 1),
        "max_ms": round(samples[-1] * 1000, 1),
        "bench_process_cpu_share": round(process_cpu_share, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "stages_p50_ms": {
            "recorded_to_handler": round(statistics.median(transport_s) * 1000, 1) if transport_s else None,
            "published_to_handler": round(statistics.median(kafka_s) * 1000, 1) if kafka_s else None,
            "handler_batch": round(statistics.median(handler_s) * 1000, 1) if handler_s else None,
        },
    }


async def main(args: argparse.Namespace) -> None:
    results: dict[str, Any] = {"concurrency": args.concurrency}
    results["intake"] = await intake(args) if args.only in (None, "intake") else {}
    results["webhook_to_kleer"] = await latency(args) if args.only in (None, "latency") else {}
    if args.only:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        return
    intake_results = results["intake"]
    lat = results["webhook_to_kleer"]
    results["targets"] = {
        "ratio_to_bare >= 0.30": intake_results["ratio_to_bare"] >= 0.30,
        "events_per_s_at_100 >= 20000": intake_results["inbound_100_events"]["events_per_s"] >= 20_000,
        "p50 < 250 ms": lat.get("p50_ms", 1e9) < 250,
        "p99 < 1000 ms": lat.get("p99_ms", 1e9) < 1000,
        "every event answered 200 is recorded": intake_results["events_recorded"]
        >= intake_results["events_answered_200"],
    }
    print()
    print(f"bare aiohttp (204):          {intake_results['bare_1_event']['requests_per_s']:>10,.0f} requests/s")
    print(f"inbound, 1 event/request:    {intake_results['inbound_1_event']['requests_per_s']:>10,.0f} requests/s "
          f"({intake_results['ratio_to_bare']:.0%} of bare, target >= 30%; by round "
          f"{', '.join(f'{r:.0%}' for r in intake_results['ratio_to_bare_by_round'])})")
    print(f"inbound, 100 events/request: {intake_results['inbound_100_events']['events_per_s']:>10,.0f} events/s "
          "(target >= 20,000)")
    print(f"webhook -> Kleer write:      p50 {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms "
          "(targets 250 ms / 1 s)")
    for phase in ("bare_1_event", "inbound_1_event", "inbound_100_events"):
        print(f"CPU us/event {phase + ':':20s} {intake_results[phase]['cpu_us_per_event']} "
              f"(load average {intake_results[phase]['load_average_1m']})")
    write_results("inbound", results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per throughput phase")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of bare and inbound, 1 event")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent connections")
    parser.add_argument("--companies", type=int, default=50)
    parser.add_argument("--edits", type=int, default=300)
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--consumers", type=int, default=4, help="handler consumers (one per partition at most)")
    parser.add_argument("--only", choices=["intake", "latency"], help="run one part (prints, writes nothing)")
    asyncio.run(main(parser.parse_args()))
