"""HubSpot simulator throughput: upserted records per second in 100-input batches, limits off.

The simulator runs as its own process (``kleer-sync sim hubspot --rate-limit 0``)
so it has a core to itself; this process sends pre-encoded batch upserts over
a few keep-alive connections. Two passes: the first creates every record, the
second updates them all. The baseline, measured in the same run, is a bare
aiohttp handler that parses the same JSON bodies and answers 200, so the ratio
shows what the simulator's HubSpot semantics cost.

Usage: ``python bench/bench_hubspot_sim.py [--records 100000] [--concurrency 8]``;
writes ``bench/results/hubspot_sim.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import socket
import subprocess
import sys
import time
from typing import Any

import aiohttp
import orjson

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOKEN = "pat-na1-bench-token"
BARE_SERVER = """
import sys, orjson
from aiohttp import web
async def upsert(request):
    body = orjson.loads(await request.read())
    return web.Response(body=orjson.dumps({"status": "COMPLETE", "results": body["inputs"]}),
                        content_type="application/json")
app = web.Application(client_max_size=16 * 1024**2)
app.router.add_post("/crm/v3/objects/{type}/batch/upsert", upsert)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(base: str) -> None:
    deadline = time.monotonic() + 15
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(base + "/_sim/state") as resp:
                    await resp.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"server at {base} did not start")


def bodies(records: int, generation: int) -> list[bytes]:
    out = []
    for start in range(0, records, 100):
        inputs = [
            {
                "id": f"kleer-client-{n}",
                "idProperty": "kleer_id",
                "objectWriteTraceId": str(n),
                "properties": {
                    "name": f"Client {n} AB gen {generation}",
                    "domain": f"client{n}.example.se",
                    "phone": "+46 8 123 45 67",
                    "city": "Stockholm",
                    "country": "Sweden",
                    "zip": "111 22",
                    "annualrevenue": str(1_000_000 + n),
                },
            }
            for n in range(start, min(records, start + 100))
        ]
        out.append(orjson.dumps({"inputs": inputs}))
    return out


async def send_all(base: str, payloads: list[bytes], concurrency: int) -> tuple[float, dict[int, int]]:
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for payload in payloads:
        queue.put_nowait(payload)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    url = base + "/crm/v3/objects/companies/batch/upsert"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            while not queue.empty():
                payload = queue.get_nowait()
                async with session.post(url, data=payload) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, statuses


async def setup_property(base: str) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        prop = {"name": "kleer_id", "label": "Kleer id", "type": "string", "fieldType": "text",
                "groupName": "companyinformation", "hasUniqueValue": True}
        async with session.post(base + "/crm/v3/properties/companies", json=prop) as resp:
            if resp.status not in (201, 409):
                raise RuntimeError(f"property setup failed: {resp.status} {await resp.text()}")


def start(cmd: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def measure_simulator(records: int, concurrency: int) -> dict[str, Any]:
    port = free_port()
    proc = start([sys.executable, "-m", "services.cli", "sim", "hubspot", "--port", str(port), "--token", TOKEN,
                  "--rate-limit", "0", "--search-limit", "0"])
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base)
        await setup_property(base)
        created = bodies(records, 1)
        updated = bodies(records, 2)
        create_s, create_statuses = await send_all(base, created, concurrency)
        update_s, update_statuses = await send_all(base, updated, concurrency)
        async with aiohttp.ClientSession() as session, session.get(base + "/_sim/state") as resp:
            state = await resp.json()
        if state["records"]["companies"] != records:
            raise RuntimeError(f"expected {records} companies, simulator holds {state['records']['companies']}")
        return {
            "create_records_per_s": round(records / create_s),
            "update_records_per_s": round(records / update_s),
            "create_seconds": round(create_s, 3),
            "update_seconds": round(update_s, 3),
            "statuses": {"create": create_statuses, "update": update_statuses},
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def measure_bare(records: int, concurrency: int) -> float:
    port = free_port()
    proc = start([sys.executable, "-c", BARE_SERVER, str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        seconds, _ = await send_all(base, bodies(records, 1), concurrency)
        return records / seconds
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    sim = await measure_simulator(args.records, args.concurrency)
    bare = await measure_bare(args.records, args.concurrency)
    result = {
        "benchmark": "hubspot_sim",
        "records": args.records,
        "batch_size": 100,
        "concurrency": args.concurrency,
        **sim,
        "baseline_bare_aiohttp_records_per_s": round(bare),
        "create_ratio_to_baseline": round(sim["create_records_per_s"] / bare, 3),
        "update_ratio_to_baseline": round(sim["update_records_per_s"] / bare, 3),
        "goal_records_per_s": 20_000,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    print(f"HubSpot simulator, batch upsert of {args.records} records in 100-input batches, limits off:")
    print(f"  create: {sim['create_records_per_s']:>8,} records/s   update: {sim['update_records_per_s']:>8,} records/s")
    print(f"  baseline (bare aiohttp, same bodies): {round(bare):>8,} records/s; "
          f"ratio create {result['create_ratio_to_baseline']}, update {result['update_ratio_to_baseline']}")
    print(f"  goal >= 20,000 records/s: {'met' if min(sim['create_records_per_s'], sim['update_records_per_s']) >= 20_000 else 'NOT met'}")
    out = ROOT / "bench" / "results" / "hubspot_sim.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
