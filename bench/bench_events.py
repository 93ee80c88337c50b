"""Event log benchmark: kleer-sync's Postgres store vs the eventsourcing library's PostgreSQL recorder.

Side by side in one run, on the same server: single-event appends/s, batched
appends (100 per call) events/s, read-all events/s. Ratios are ours / peer.

The peer runs in its fastest set-ups, and for each number the better one is the
baseline: psycopg[binary], prepared statements, its ``PostgresApplicationRecorder``
plain (a pipelined transaction that takes its table lock, as ours takes the
append lock) and with ``enable_db_functions`` (one autocommit call of its insert
function, which skips that lock: weaker ordering than ours, and faster for
single events). Durability is the same on both sides (``synchronous_commit`` as
the server has it).

The machine is shared and noisy, so the sides are measured in interleaved
rounds (ours, peer plain, peer with functions, in a rotating order) and each
number is events over the summed time of its rounds: a burst of load from
elsewhere hits every side alike instead of one of them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    SERVER_DSN,
    drop_database,
    drop_database_async,
    dsn_for,
    fresh_database,
    progress,
    write_results,
)
from libs.events.envelope import NewEvent
from libs.events.migrate import migrate
from libs.events.store import AppendRequest, PostgresEventStore, create_pool
from libs.runtime import run_event_loop

PAYLOAD = {"name": "Nordic Timber AB", "orgno": "556677-8899", "amount": "129.50", "city": "Göteborg"}
BATCH = 100
PAGE = 1000
METRICS = ("single_appends_per_s", "batched_events_per_s", "read_events_per_s")


class Ours:
    label = "ours"

    async def open(self) -> None:
        self.name = "kleer_bench_events_ours"
        dsn = await fresh_database(self.name)
        await migrate(dsn, log=None)
        self.pool = await create_pool(dsn, min_size=1, max_size=2)
        self.store = PostgresEventStore(self.pool)
        self.appended = 0

    async def singles(self, count: int) -> None:
        for _ in range(count):
            await self.store.append(f"bench/kleer-client/{uuid.uuid4().hex}", [NewEvent("KleerClientChanged", PAYLOAD)])
        self.appended += count

    async def batches(self, count: int) -> None:
        for _ in range(count):
            stream = f"bench/kleer-invoice/{uuid.uuid4().hex}"
            await self.store.append_batch(
                [AppendRequest(f"{stream}-{i}", [NewEvent("KleerInvoiceChanged", PAYLOAD)]) for i in range(BATCH)]
            )
        self.appended += count * BATCH

    async def fill(self, total: int) -> None:
        while self.appended < total:
            await self.store.append_batch(
                [AppendRequest(f"bench/fill/{uuid.uuid4().hex}", [NewEvent("Fill", PAYLOAD)]) for _ in range(PAGE)]
            )
            self.appended += PAGE

    async def read_all(self) -> int:
        after, count = 0, 0
        while page := await self.store.read_all(after, PAGE):
            after = page[-1].position
            count += len(page)
        return count

    async def close(self) -> None:
        await self.pool.close()
        await drop_database_async(self.name)


class Peer:
    """eventsourcing's PostgresApplicationRecorder (sync psycopg; runs on the event loop's thread)."""

    def __init__(self, db_functions: bool) -> None:
        self.db_functions = db_functions
        self.label = "peer (with db functions)" if db_functions else "peer (plain)"

    async def open(self) -> None:
        import orjson
        from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

        self.name = f"kleer_bench_events_peer_{int(self.db_functions)}"
        await fresh_database(self.name)
        server = urlparse(SERVER_DSN)
        self.datastore = PostgresDatastore(
            dbname=self.name,
            host=server.hostname or "127.0.0.1",
            port=server.port or 5432,
            user=server.username or "postgres",
            password=server.password or "",
            enable_db_functions=self.db_functions,
        )
        self.recorder = PostgresApplicationRecorder(self.datastore)
        self.recorder.create_table()
        self.state = orjson.dumps(PAYLOAD)
        self.appended = 0

    def _event(self, topic: str) -> Any:
        from eventsourcing.persistence import StoredEvent

        return StoredEvent(uuid.uuid4(), 1, topic, self.state)

    async def singles(self, count: int) -> None:
        for _ in range(count):
            self.recorder.insert_events([self._event("KleerClientChanged")])
        self.appended += count

    async def batches(self, count: int) -> None:
        for _ in range(count):
            self.recorder.insert_events([self._event("KleerInvoiceChanged") for _ in range(BATCH)])
        self.appended += count * BATCH

    async def fill(self, total: int) -> None:
        while self.appended < total:
            self.recorder.insert_events([self._event("Fill") for _ in range(PAGE)])
            self.appended += PAGE

    async def read_all(self) -> int:
        cursor, count = 1, 0
        while page := self.recorder.select_notifications(cursor, PAGE):
            cursor = page[-1].id + 1
            count += len(page)
        return count

    async def close(self) -> None:
        self.datastore.close()
        await asyncio.to_thread(drop_database, self.name)


Side = Ours | Peer
_TICK = os.sysconf("SC_CLK_TCK")


async def backend_cpu_seconds(database: str) -> float | None:
    """CPU seconds used so far by the server processes serving ``database`` (None: server not local)."""
    if urlparse(SERVER_DSN).hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    admin = await asyncpg.connect(dsn_for("postgres"))
    try:
        pids = [r[0] for r in await admin.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)]
    finally:
        await admin.close()
    total = 0.0
    for pid in pids:
        try:
            proc = Path(f"/proc/{pid}")
            if proc.joinpath("comm").read_text().strip() != "postgres":
                return None
            fields = proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    return total


@dataclass
class Tally:
    """One side's sums over the rounds of one phase."""

    seconds: float = 0.0
    events: int = 0
    client_cpu: float = 0.0
    server_cpu: float | None = 0.0

    def add(self, seconds: float, events: int, client_cpu: float, server_cpu: float | None) -> None:
        self.seconds += seconds
        self.events += events
        self.client_cpu += client_cpu
        self.server_cpu = None if server_cpu is None or self.server_cpu is None else self.server_cpu + server_cpu

    def numbers(self) -> dict[str, float | None]:
        """Events/s, and CPU microseconds per event on each side of the connection."""
        per_event = 1e6 / self.events
        return {
            "per_s": self.events / self.seconds,
            "client_cpu_us_per_event": self.client_cpu * per_event,
            "server_cpu_us_per_event": None if self.server_cpu is None else self.server_cpu * per_event,
        }


async def interleaved(
    sides: list[Side], rounds: int, phase: Callable[[Side], Awaitable[int]]
) -> dict[str, Tally]:
    """Each side's tally over ``rounds`` rounds of ``phase``, the sides' order rotating each round."""
    tallies = {side.label: Tally() for side in sides}
    for r in range(rounds):
        for side in sides[r % len(sides) :] + sides[: r % len(sides)]:
            server_before = await backend_cpu_seconds(side.name)
            client_before, start = time.process_time(), time.perf_counter()
            count = await phase(side)
            seconds, client = time.perf_counter() - start, time.process_time() - client_before
            server_after = await backend_cpu_seconds(side.name)
            server = None if server_before is None or server_after is None else server_after - server_before
            tallies[side.label].add(seconds, count, client, server)
    return tallies


async def run(singles: int, batches: int, read_total: int, rounds: int) -> dict[str, dict[str, Any]]:
    sides: list[Side] = [Ours(), Peer(db_functions=False), Peer(db_functions=True)]
    for side in sides:
        await side.open()
    try:
        results: dict[str, dict[str, Any]] = {side.label: {} for side in sides}

        async def single_phase(side: Side) -> int:
            await side.singles(singles)
            return singles

        async def batch_phase(side: Side) -> int:
            await side.batches(batches)
            return batches * BATCH

        async def read_phase(side: Side) -> int:
            return await side.read_all()

        phases = (("single_appends", single_phase), ("batched_events", batch_phase), ("read_events", read_phase))
        for name, phase in phases:
            if name == "read_events":
                for side in sides:
                    await side.fill(read_total)
            for label, tally in (await interleaved(sides, rounds, phase)).items():
                numbers = tally.numbers()
                results[label][f"{name}_per_s"] = numbers["per_s"]
                results[label][f"{name}_cpu_us"] = {
                    "client": numbers["client_cpu_us_per_event"],
                    "server": numbers["server_cpu_us_per_event"],
                }
            progress(f"{name}/s: " + ", ".join(f"{s.label} {results[s.label][f'{name}_per_s']:,.0f}" for s in sides))
        return results
    finally:
        for side in sides:
            await side.close()


def _cpu(numbers: dict[str, float | None]) -> str:
    server = numbers["server"]
    return f"cpu/event client {numbers['client']:6.1f} us, server " + ("  n/a" if server is None else f"{server:6.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--singles", type=int, default=1000, help="single appends per side and round")
    parser.add_argument("--batches", type=int, default=100, help="batches of 100 per side and round")
    parser.add_argument("--read-total", type=int, default=200_000, help="events in each log when reading")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    progress("event log benchmark: ours vs eventsourcing's PostgreSQL recorder, same server, interleaved rounds")
    load_before = os.getloadavg()
    # Our side runs on the event loop our services run on (EVENT_LOOP); the peer is synchronous.
    results = run_event_loop(run(args.singles, args.batches, args.read_total, args.rounds))
    load_after = os.getloadavg()
    mine = results["ours"]
    peers = {label: numbers for label, numbers in results.items() if label != "ours"}
    best = {k: max(peers.values(), key=lambda p: p[k]) for k in METRICS}
    ratios = {k: mine[k] / best[k][k] for k in METRICS}
    targets = {"single_appends_per_s": 1.0, "batched_events_per_s": 2.0}
    for key in METRICS:
        note = f" (target >= {targets[key]:.1f}x)" if key in targets else ""
        print(f"  {key:24} ours {mine[key]:>10,.0f}  peer {best[key][key]:>10,.0f}  ratio {ratios[key]:5.2f}x{note}")
        cpu_key = key.replace("_per_s", "_cpu_us")
        print(f"  {'':24} ours {_cpu(mine[cpu_key])};  that peer {_cpu(best[key][cpu_key])}")
    print(f"  read-all target >= 100,000 events/s: ours {mine['read_events_per_s']:,.0f}")
    print(f"  load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    write_results(
        "events",
        {
            "ours": mine,
            "peer_eventsourcing_best": {k: best[k][k] for k in METRICS},
            "peer_runs": peers,
            "ratios_ours_over_peer": ratios,
            "targets": {**{k: f">= {v}x peer" for k, v in targets.items()}, "read_events_per_s": ">= 100000"},
            "settings": vars(args),
            "load_average_1m": {"before": load_before[0], "after": load_after[0]},
        },
    )


if __name__ == "__main__":
    main()
