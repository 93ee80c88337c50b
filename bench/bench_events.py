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
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    SERVER_DSN,
    drop_database,
    drop_database_async,
    fresh_database,
    progress,
    write_results,
)
from libs.events.envelope import NewEvent
from libs.events.migrate import migrate
from libs.events.store import AppendRequest, PostgresEventStore, create_pool

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


async def timed(run: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = await run()
    return time.perf_counter() - start, result


async def interleaved(
    sides: list[Side], rounds: int, phase: Callable[[Side], Awaitable[int]]
) -> dict[str, float]:
    """Events/s per side over ``rounds`` rounds of ``phase``, the sides' order rotating each round."""
    spent = {side.label: 0.0 for side in sides}
    events = {side.label: 0 for side in sides}
    for r in range(rounds):
        for side in sides[r % len(sides):] + sides[: r % len(sides)]:
            seconds, count = await timed(lambda side=side: phase(side))  # type: ignore[misc]
            spent[side.label] += seconds
            events[side.label] += count
    return {label: events[label] / spent[label] for label in spent}


async def run(singles: int, batches: int, read_total: int, rounds: int) -> dict[str, dict[str, float]]:
    sides: list[Side] = [Ours(), Peer(db_functions=False), Peer(db_functions=True)]
    for side in sides:
        await side.open()
    try:
        results: dict[str, dict[str, float]] = {side.label: {} for side in sides}

        async def single_phase(side: Side) -> int:
            await side.singles(singles)
            return singles

        async def batch_phase(side: Side) -> int:
            await side.batches(batches)
            return batches * BATCH

        for key, phase in (("single_appends_per_s", single_phase), ("batched_events_per_s", batch_phase)):
            for label, rate in (await interleaved(sides, rounds, phase)).items():
                results[label][key] = rate
            progress(f"{key}: " + ", ".join(f"{s.label} {results[s.label][key]:,.0f}" for s in sides))
        for side in sides:
            await side.fill(read_total)
        for label, rate in (await interleaved(sides, rounds, lambda side: side.read_all())).items():
            results[label]["read_events_per_s"] = rate
        progress("read_events_per_s: " + ", ".join(f"{s.label} {results[s.label]['read_events_per_s']:,.0f}" for s in sides))
        return results
    finally:
        for side in sides:
            await side.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--singles", type=int, default=1000, help="single appends per side and round")
    parser.add_argument("--batches", type=int, default=100, help="batches of 100 per side and round")
    parser.add_argument("--read-total", type=int, default=200_000, help="events in each log when reading")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    progress("event log benchmark: ours vs eventsourcing's PostgreSQL recorder, same server, interleaved rounds")
    load_before = os.getloadavg()
    results = asyncio.run(run(args.singles, args.batches, args.read_total, args.rounds))
    load_after = os.getloadavg()
    mine = results["ours"]
    peers = {label: numbers for label, numbers in results.items() if label != "ours"}
    best = {k: max(p[k] for p in peers.values()) for k in METRICS}
    ratios = {k: mine[k] / best[k] for k in METRICS}
    targets = {"single_appends_per_s": 1.0, "batched_events_per_s": 2.0}
    for key in METRICS:
        note = f" (target >= {targets[key]:.1f}x)" if key in targets else ""
        print(f"  {key:24} ours {mine[key]:>10,.0f}  peer {best[key]:>10,.0f}  ratio {ratios[key]:5.2f}x{note}")
    print(f"  read-all target >= 100,000 events/s: ours {mine['read_events_per_s']:,.0f}")
    print(f"  load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    write_results(
        "events",
        {
            "ours": mine,
            "peer_eventsourcing_best": best,
            "peer_runs": peers,
            "ratios_ours_over_peer": ratios,
            "targets": {**{k: f">= {v}x peer" for k, v in targets.items()}, "read_events_per_s": ">= 100000"},
            "settings": vars(args),
            "load_average_1m": {"before": load_before[0], "after": load_after[0]},
        },
    )


if __name__ == "__main__":
    main()
