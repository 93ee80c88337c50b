"""Event log benchmark: kleer-sync's Postgres store vs the eventsourcing library's PostgreSQL recorder.

Side by side in one run, on the same server: single-event appends/s, batched
appends (100 per call) events/s, read-all events/s. The peer runs in its
fastest set-up (psycopg[binary]; with and without its database functions, the
better of the two is the baseline). Ratios are ours / peer.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import drop_database, drop_database_async, fresh_database, progress, write_results
from libs.events.envelope import NewEvent
from libs.events.migrate import migrate
from libs.events.store import AppendRequest, PostgresEventStore, create_pool

PAYLOAD = {"name": "Nordic Timber AB", "orgno": "556677-8899", "amount": "129.50", "city": "Göteborg"}


async def ours(singles: int, batches: int, read_total: int) -> dict[str, float]:
    dsn = await fresh_database("kleer_bench_events_ours")
    await migrate(dsn, log=None)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    store = PostgresEventStore(pool)
    try:
        start = time.perf_counter()
        for i in range(singles):
            await store.append(f"bench/kleer-client/{i}", [NewEvent("KleerClientChanged", PAYLOAD)])
        single = singles / (time.perf_counter() - start)
        progress(f"ours: {single:,.0f} single appends/s")
        start = time.perf_counter()
        for b in range(batches):
            await store.append_batch(
                [
                    AppendRequest(f"bench/kleer-invoice/{b}-{i}", [NewEvent("KleerInvoiceChanged", PAYLOAD)])
                    for i in range(100)
                ]
            )
        batched = batches * 100 / (time.perf_counter() - start)
        progress(f"ours: {batched:,.0f} batched events/s")
        while await store.head() < read_total:
            await store.append_batch(
                [
                    AppendRequest(f"bench/fill/{uuid.uuid4().hex}", [NewEvent("Fill", PAYLOAD)])
                    for _ in range(1000)
                ]
            )
        start = time.perf_counter()
        after, count = 0, 0
        while True:
            page = await store.read_all(after, 1000)
            if not page:
                break
            after = page[-1].position
            count += len(page)
        read = count / (time.perf_counter() - start)
        progress(f"ours: {read:,.0f} read events/s over {count:,} events")
        return {"single_appends_per_s": single, "batched_events_per_s": batched, "read_events_per_s": read}
    finally:
        await pool.close()
        await drop_database_async("kleer_bench_events_ours")


def peer(singles: int, batches: int, read_total: int, db_functions: bool) -> dict[str, float]:
    import orjson
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

    name = f"kleer_bench_events_peer_{int(db_functions)}"
    asyncio.run(fresh_database(name))
    datastore = PostgresDatastore(
        dbname=name,
        host="127.0.0.1",
        port=5432,
        user="postgres",
        password="",
        enable_db_functions=db_functions,
    )
    recorder = PostgresApplicationRecorder(datastore)
    recorder.create_table()
    state = orjson.dumps(PAYLOAD)
    try:
        start = time.perf_counter()
        for _ in range(singles):
            recorder.insert_events([StoredEvent(uuid.uuid4(), 1, "KleerClientChanged", state)])
        single = singles / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(batches):
            recorder.insert_events(
                [StoredEvent(uuid.uuid4(), 1, "KleerInvoiceChanged", state) for _ in range(100)]
            )
        batched = batches * 100 / (time.perf_counter() - start)
        total = singles + batches * 100
        while total < read_total:
            recorder.insert_events([StoredEvent(uuid.uuid4(), 1, "Fill", state) for _ in range(1000)])
            total += 1000
        start = time.perf_counter()
        cursor, count = 1, 0
        while True:
            page = recorder.select_notifications(cursor, 1000)
            if not page:
                break
            cursor = page[-1].id + 1
            count += len(page)
        read = count / (time.perf_counter() - start)
        label = "with db functions" if db_functions else "plain"
        progress(
            f"peer ({label}): {single:,.0f} single/s, {batched:,.0f} batched ev/s, {read:,.0f} read ev/s"
        )
        return {"single_appends_per_s": single, "batched_events_per_s": batched, "read_events_per_s": read}
    finally:
        datastore.close()
        drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--singles", type=int, default=3000)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--read-total", type=int, default=200_000)
    args = parser.parse_args()
    progress("event log benchmark: ours vs eventsourcing's PostgreSQL recorder, same server, one run")
    mine = asyncio.run(ours(args.singles, args.batches, args.read_total))
    peers = [peer(args.singles, args.batches, args.read_total, f) for f in (False, True)]
    best = {k: max(p[k] for p in peers) for k in mine}
    ratios = {k: mine[k] / best[k] for k in mine}
    targets = {"single_appends_per_s": 1.0, "batched_events_per_s": 2.0}
    for key, ratio in ratios.items():
        note = f" (target >= {targets[key]:.1f}x)" if key in targets else ""
        print(f"  {key:24} ours {mine[key]:>10,.0f}  peer {best[key]:>10,.0f}  ratio {ratio:5.2f}x{note}")
    print(f"  read-all target >= 100,000 events/s: ours {mine['read_events_per_s']:,.0f}")
    write_results(
        "events",
        {
            "ours": mine,
            "peer_eventsourcing_best": best,
            "peer_runs": peers,
            "ratios_ours_over_peer": ratios,
            "targets": {**{k: f">= {v}x peer" for k, v in targets.items()}, "read_events_per_s": ">= 100000"},
        },
    )


if __name__ == "__main__":
    main()
