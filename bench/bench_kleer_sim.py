"""Kleer simulator: seeding time for a big book, and list throughput through the real client with paging.

1. Seeding: ``sim.kleer.seeding.seed`` of ``--clients`` clients (default 100,000)
   in this process (target: under 30 s).
2. Listing: the simulator runs as its own process (``kleer-sync sim kleer``)
   with the same book, so it has a core to itself. Every client and every
   invoice (with rows) is read in pages of 1000 twice: over plain HTTP with
   the bodies read but not decoded (what the simulator serves; target: at
   least 50,000 records/s), and through ``KleerClient`` as the outbound poller
   reads them (there decoding the JSON in this process is the larger cost).
   The baseline, measured in the same run, is a bare aiohttp server holding
   the same book with every page encoded in advance, read the same two ways:
   the ratios show what the simulator's per-request work costs.

Usage: ``python bench/bench_kleer_sim.py [--clients 100000] [--rounds 2]``;
writes ``bench/results/kleer_sim.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import orjson  # noqa: E402

from bench.common import progress, write_results  # noqa: E402
from libs.config import Secret  # noqa: E402
from libs.kleer import CLIENT, INVOICE, KleerClient, Resource  # noqa: E402
from sim.kleer.seeding import seed  # noqa: E402
from sim.kleer.store import DEFAULT_TOKEN, KleerStore  # noqa: E402

SEED = 1
PAGE = 1000
TARGET_SEED_SECONDS = 30.0
TARGET_RECORDS_PER_SECOND = 50_000

# The baseline: the same seeded book, every page pre-encoded, one bare handler, no middlewares.
BARE_SERVER = """
import sys, orjson
from aiohttp import web
from sim.kleer.seeding import seed
from sim.kleer.store import KleerStore
port, clients, seed_value, page = (int(a) for a in sys.argv[1:5])
store = KleerStore()
seed(store, n_clients=clients, seed=seed_value)
book = store.company()
pages = {}
for name in ("client", "client-invoice"):
    table = book.tables[name]
    ids = table.ids()
    for offset in range(0, len(ids) + 1, page):
        items = table.page(ids, offset, page)
        pages[(name, offset)] = orjson.dumps({name: items, "offset": offset, "limit": len(items), "size": len(ids)})
async def serve(request, name):
    return web.Response(body=pages[(name, int(request.query.get("offset", 0)))], content_type="application/json")
app = web.Application()
app.router.add_get("/v1/company/1/client", lambda r: serve(r, "client"))
app.router.add_get("/v1/company/1/client/invoice", lambda r: serve(r, "client-invoice"))
web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on port {port} within {timeout:.0f}s")


def measure_seeding(clients: int) -> dict[str, Any]:
    progress(f"seeding {clients:,} clients in this process")
    store = KleerStore()
    started = time.perf_counter()
    summary = seed(store, n_clients=clients, seed=SEED)
    seconds = time.perf_counter() - started
    book = store.company()
    rows = sum(len(invoice["rows"]) for invoice in book.invoices)
    progress(
        f"seeded in {seconds:.1f}s: {summary.clients:,} clients, {summary.products} products, "
        f"{summary.invoices:,} invoices ({rows:,} rows, {summary.credit_invoices:,} credit), "
        f"{summary.agreements:,} agreements, {summary.projects:,} projects"
    )
    result = {"seconds": round(seconds, 2), "book": {**summary.as_dict(), "invoice-rows": rows}}
    del store, book
    gc.collect()
    return result


async def serve_all(base_url: str, resource: Resource, concurrency: int = 4) -> tuple[int, float]:
    """Every page over plain HTTP, bodies read but not decoded: what the server alone can serve."""
    headers = {"X-Token": DEFAULT_TOKEN, "Accept": "application/json"}
    url = f"{base_url}/company/1/{resource.path}"
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(url, params={"offset": "0", "limit": "1"}) as response:
            size = int((await response.json(loads=orjson.loads))["size"])
        offsets = list(range(0, size, PAGE))
        started = time.perf_counter()

        async def fetch_some(mine: list[int]) -> None:
            for offset in mine:
                async with session.get(url, params={"offset": str(offset), "limit": str(PAGE)}) as response:
                    await response.read()

        await asyncio.gather(*(fetch_some(offsets[i::concurrency]) for i in range(concurrency)))
        return size, time.perf_counter() - started


async def read_all(base_url: str, resource: Resource) -> tuple[int, float]:
    async with KleerClient(company_id=1, token=Secret(DEFAULT_TOKEN), base_url=base_url, page_size=PAGE) as kleer:
        started = time.perf_counter()
        count = 0
        async for page in kleer.iter_pages(resource):
            count += len(page)
        return count, time.perf_counter() - started


def measure_listing(command: list[str], port: int, rounds: int, label: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        progress(f"{label}: starting (it seeds the same book first)")
        wait_for_port(port, process, timeout=180)
        base_url = f"http://127.0.0.1:{port}/v1"
        results: dict[str, Any] = {}
        for resource in (CLIENT, INVOICE):
            numbers: dict[str, Any] = {}
            for key, reader in (("client", read_all), ("served", serve_all)):
                count, seconds = min((asyncio.run(reader(base_url, resource)) for _ in range(rounds)),
                                     key=lambda result: result[1])
                rate = count / seconds
                how = "through KleerClient" if key == "client" else "served (bodies not decoded)"
                progress(f"{label}: {resource.name}: {count:,} records {how} in {seconds:.2f}s = {rate:,.0f}/s")
                numbers["records"] = count
                numbers[f"{key}_seconds"] = round(seconds, 3)
                numbers[f"{key}_records_per_s"] = round(rate)
            results[resource.name] = numbers
        return results
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2, help="reads per resource; the best counts")
    args = parser.parse_args()

    seeding = measure_seeding(args.clients)

    sim_port, bare_port = free_port(), free_port()
    simulator = measure_listing(
        [sys.executable, "-m", "services.cli", "sim", "kleer", "--port", str(sim_port), "--clients",
         str(args.clients), "--seed", str(SEED), "--log-level", "warning"],
        sim_port,
        args.rounds,
        "simulator",
    )
    baseline = measure_listing(
        [sys.executable, "-c", BARE_SERVER, str(bare_port), str(args.clients), str(SEED), str(PAGE)],
        bare_port,
        args.rounds,
        "baseline (pre-encoded pages)",
    )
    listing = {
        name: {
            **numbers,
            "baseline_client_records_per_s": baseline[name]["client_records_per_s"],
            "baseline_served_records_per_s": baseline[name]["served_records_per_s"],
            "client_ratio_to_baseline": round(
                numbers["client_records_per_s"] / baseline[name]["client_records_per_s"], 2
            ),
            "served_ratio_to_baseline": round(
                numbers["served_records_per_s"] / baseline[name]["served_records_per_s"], 2
            ),
        }
        for name, numbers in simulator.items()
    }
    slowest = min(n["served_records_per_s"] for n in listing.values())
    meets = seeding["seconds"] < TARGET_SEED_SECONDS and slowest >= TARGET_RECORDS_PER_SECOND
    print()
    print(f"seeding {args.clients:,} clients: {seeding['seconds']:.1f}s (target < {TARGET_SEED_SECONDS:.0f}s)")
    for name, n in listing.items():
        print(
            f"listing {name}: served {n['served_records_per_s']:,}/s (target >= {TARGET_RECORDS_PER_SECOND:,}/s; "
            f"pre-encoded baseline {n['baseline_served_records_per_s']:,}/s, ratio {n['served_ratio_to_baseline']}); "
            f"through KleerClient {n['client_records_per_s']:,}/s (baseline {n['baseline_client_records_per_s']:,}/s, "
            f"ratio {n['client_ratio_to_baseline']})"
        )
    print(f"targets {'met' if meets else 'NOT met'}")
    write_results(
        "kleer_sim",
        {
            "clients": args.clients,
            "page_size": PAGE,
            "seeding": seeding,
            "listing": listing,
            "targets": {"seed_seconds_below": TARGET_SEED_SECONDS, "records_per_s_at_least": TARGET_RECORDS_PER_SECOND},
            "targets_met": meets,
        },
    )
    return 0 if meets else 1


if __name__ == "__main__":
    sys.exit(main())
