"""Operations benchmark: replay throughput and audit latency on a large event log.

Builds a log of ``--events`` events (default 1,000,000) shaped like a busy
connection: ``--events / 10`` Kleer records (a third clients, the rest
invoices), each polled five times (``Kleer…Changed`` with a full snapshot) and
pushed five times (``HubSpot…Upserted`` caused by the change), with poll-wide
correlation ids, plus the pusher's id map. Then measures:

- replay: a dry run of every change of the connection into a no-op sink
  (selection scan, latest change per record, loading and decoding the
  snapshots), in selected events/s and log events/s, against a plain
  ``read_all`` of the whole log in pages of 1,000 measured in the same run;
- audit: ``load_audit`` of random records (both sides, causation followed),
  median / p95 / max milliseconds, against one ``read_stream`` of the record.

Prints the numbers and writes ``bench/results/operations.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import drop_database_async, fresh_database, progress, write_results
from libs.events.migrate import migrate
from libs.events.store import PostgresEventStore, create_pool
from libs.records import RecordRef
from services.operations.audit import load_audit
from services.operations.replay import ReplaySelector, Selected, dry_run

DATABASE = "kleer_bench_operations"
CONNECTION = "bench"
ROUNDS = 10  # events per record: 5 polls, 5 pushes
REPLAY_TARGET = 50_000  # events/s
AUDIT_TARGET_MS = 100.0

# One INSERT … SELECT writes the whole log: position p belongs to record r = (p-1) % R + 1 in round
# (p-1) / R; even rounds are poll changes, odd rounds the pushes they caused.
_FILL = """
WITH g AS (
    SELECT p, ((p - 1) % $2) + 1 AS r, (p - 1) / $2 AS round FROM generate_series($3::bigint, $4::bigint) AS p
), k AS (
    SELECT p, r, round, CASE WHEN r % 3 = 0 THEN 'client' ELSE 'invoice' END AS kind FROM g
)
INSERT INTO events (position, event_id, stream, version, type, data, metadata, recorded_at)
SELECT
    p,
    md5('event-' || p)::uuid,
    $1 || '/kleer-' || kind || '/' || r,
    round + 1,
    CASE WHEN round % 2 = 0
         THEN CASE WHEN kind = 'client' THEN 'KleerClientChanged' ELSE 'KleerInvoiceChanged' END
         ELSE CASE WHEN kind = 'client' THEN 'HubSpotCompanyUpserted' ELSE 'HubSpotInvoiceUpserted' END
    END,
    jsonb_build_object(
        'kleer_id', r::text, 'kind', kind,
        'hubspot_object', CASE WHEN kind = 'client' THEN 'companies' ELSE 'invoices' END,
        'hubspot_id', (900000 + r)::text, 'created', round = 1,
        'fingerprint', md5('fp-' || r || '-' || (round / 2)),
        'parents', CASE WHEN kind = 'invoice' THEN jsonb_build_array(jsonb_build_object('kind', 'client',
                        'kleer_id', (3 * (r / 3 + 1))::text)) ELSE '[]'::jsonb END,
        'properties', jsonb_build_object(
            'kleer_id', r::text,
            'name', 'Record ' || r || ' version ' || (round / 2),
            'phone', '+46 8 ' || (100000 + r),
            'city', 'Göteborg', 'zip', '411 0' || (r % 10), 'country', 'Sweden',
            'kleer_currency', 'SEK', 'kleer_payment_days', '30',
            'invoice_email', 'billing' || r || '@example.se', 'orgno', '556' || lpad(r::text, 7, '0'),
            'description', 'Synced from Kleer, poll ' || (round / 2))),
    CASE WHEN round % 2 = 0
         THEN jsonb_build_object('actor', 'poller', 'source', 'kleer',
                                 'correlation_id', md5('poll-' || round)::uuid::text)
         ELSE jsonb_build_object('actor', 'outbound-pusher', 'source', 'hubspot',
                                 'correlation_id', md5('poll-' || (round - 1))::uuid::text,
                                 'causation_id', md5('event-' || (p - $2))::uuid::text)
    END,
    now() - make_interval(secs => ($5 - p) / 1000.0)
FROM k
"""

_ID_MAP = """
INSERT INTO hubspot_ids (connection, kind, kleer_id, hubspot_object, hubspot_id, pushed_fingerprint)
SELECT $1, CASE WHEN r % 3 = 0 THEN 'client' ELSE 'invoice' END, r::text,
       CASE WHEN r % 3 = 0 THEN 'companies' ELSE 'invoices' END, (900000 + r)::text, md5('fp-' || r)
FROM generate_series(1, $2) AS r
"""


async def build_log(dsn: str, events: int) -> None:
    records = max(1, events // ROUNDS)
    conn_pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        started = time.perf_counter()
        step = 100_000
        for first in range(1, events + 1, step):
            last = min(events, first + step - 1)
            await conn_pool.execute(_FILL, CONNECTION, records, first, last, events)
            progress(f"log: {last:,} / {events:,} events ({last / (time.perf_counter() - started):,.0f}/s)")
        await conn_pool.execute(_ID_MAP, CONNECTION, records)
        await conn_pool.execute("ANALYZE events")
        await conn_pool.execute("ANALYZE hubspot_ids")
        progress(f"log of {events:,} events ({records:,} records) built in {time.perf_counter() - started:.1f}s")
    finally:
        await conn_pool.close()


async def measure(dsn: str, events: int, audits: int) -> dict[str, Any]:
    pool = await create_pool(dsn, min_size=2, max_size=4)
    store = PostgresEventStore(pool)
    records = max(1, events // ROUNDS)
    try:
        # Baseline: read the whole log in pages of 1,000.
        started = time.perf_counter()
        after, read = 0, 0
        while page := await store.read_all(after, 1000):
            after, read = page[-1].position, read + len(page)
        read_all_per_s = read / (time.perf_counter() - started)
        progress(f"baseline read_all: {read_all_per_s:,.0f} events/s over {read:,} events")

        # Replay: dry run of every change of the connection into a no-op sink.
        loaded = 0

        async def sink(batch: list[Selected] | Any) -> None:
            nonlocal loaded
            loaded += len(batch)

        started = time.perf_counter()
        report = await dry_run(pool, ReplaySelector(CONNECTION), None, sink=sink, batch_size=2000)
        replay_seconds = time.perf_counter() - started
        assert report.records == loaded == records, (report.records, loaded, records)
        selected_per_s = report.events_scanned / replay_seconds
        log_per_s = events / replay_seconds
        progress(
            f"replay dry run: {report.events_scanned:,} change events → {report.records:,} records in "
            f"{replay_seconds:.2f}s = {selected_per_s:,.0f} selected events/s, {log_per_s:,.0f} log events/s "
            f"(target ≥ {REPLAY_TARGET:,}/s; {log_per_s / read_all_per_s:.2f}× read_all)"
        )

        # Audit: random records, both sides and causation followed; baseline one read_stream.
        rng = random.Random(7)
        chosen = [rng.randint(1, records) for _ in range(audits)]
        refs = [RecordRef("kleer", "client" if r % 3 == 0 else "invoice", str(r)) for r in chosen]
        await load_audit(pool, refs[0], CONNECTION)  # warm the connection and plans
        audit_ms: list[float] = []
        entries = 0
        for ref in refs:
            started = time.perf_counter()
            audit = await load_audit(pool, ref, CONNECTION)
            audit_ms.append((time.perf_counter() - started) * 1000)
            entries += len(audit.entries)
        stream_ms: list[float] = []
        for ref in refs:
            started = time.perf_counter()
            await store.read_stream(ref.stream(CONNECTION))
            stream_ms.append((time.perf_counter() - started) * 1000)
        audit_ms.sort()
        median = statistics.median(audit_ms)
        p95 = audit_ms[max(0, int(len(audit_ms) * 0.95) - 1)]
        progress(
            f"audit of one record: median {median:.1f} ms, p95 {p95:.1f} ms, max {audit_ms[-1]:.1f} ms over "
            f"{audits} records ({entries / audits:.0f} entries each; target < {AUDIT_TARGET_MS:.0f} ms; "
            f"one read_stream: median {statistics.median(stream_ms):.1f} ms)"
        )
        return {
            "events": events,
            "records": records,
            "read_all_events_per_s": round(read_all_per_s),
            "replay_dry_run": {
                "seconds": round(replay_seconds, 3),
                "selected_events": report.events_scanned,
                "records": report.records,
                "selected_events_per_s": round(selected_per_s),
                "log_events_per_s": round(log_per_s),
                "target_events_per_s": REPLAY_TARGET,
                "ratio_to_read_all": round(log_per_s / read_all_per_s, 3),
            },
            "audit_ms": {
                "median": round(median, 2),
                "p95": round(p95, 2),
                "max": round(audit_ms[-1], 2),
                "samples": audits,
                "entries_per_audit": round(entries / audits, 1),
                "target_ms": AUDIT_TARGET_MS,
                "read_stream_median": round(statistics.median(stream_ms), 2),
            },
        }
    finally:
        await pool.close()


async def main_async(events: int, audits: int, keep: bool) -> dict[str, Any]:
    dsn = await fresh_database(DATABASE)
    try:
        await migrate(dsn, log=None)
        await build_log(dsn, events)
        return await measure(dsn, events, audits)
    finally:
        if not keep:
            await drop_database_async(DATABASE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="log size (default %(default)s)")
    parser.add_argument("--audits", type=int, default=50, help="records to audit (default %(default)s)")
    parser.add_argument("--keep", action="store_true", help=f"keep the database {DATABASE} afterwards")
    args = parser.parse_args()
    if args.events < ROUNDS:
        parser.error(f"--events must be at least {ROUNDS}")
    results = asyncio.run(main_async(args.events, args.audits, args.keep))
    write_results("operations", results)
    replay_ok = results["replay_dry_run"]["log_events_per_s"] >= REPLAY_TARGET
    audit_ok = results["audit_ms"]["p95"] < AUDIT_TARGET_MS
    print(
        f"replay {'meets' if replay_ok else 'MISSES'} {REPLAY_TARGET:,} events/s; "
        f"audit p95 {'meets' if audit_ok else 'MISSES'} < {AUDIT_TARGET_MS:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
