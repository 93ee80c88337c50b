"""The outbound poller: Kleer lists in, ``Kleer{Kind}Changed`` / ``Kleer{Kind}Removed`` events out.

Per connection and object type, on a schedule (``POLL_INTERVAL_*``), the poller
lists every record from Kleer (all pages), maps it with ``libs.mapping``,
fingerprints the mapped properties and compares them with the fingerprints it
stored last time (one query per type). Each changed record becomes a
``Kleer{Kind}Changed`` event carrying the full snapshot
(``services.outbound.snapshots``), appended to ``{connection}/kleer-{kind}/{id}``
**in the same transaction** as its new fingerprint; a record Kleer no longer
lists becomes ``Kleer{Kind}Removed``.

Others write fingerprints while a pass runs (a workflow action's push-back, the
inbound handlers after a Kleer write). A pass therefore loads the fingerprints
*before* it lists Kleer, and records a change or removal only where the stored
row is still the one it loaded (``fingerprints.save_unmoved`` /
``forget_unmoved``): a record created meanwhile is not in what the pass
remembers, so a list read before it existed cannot make it a removal, and a
fingerprint written meanwhile (newer than the list, or a row forgotten and
written again) is never replaced by an older list's view. Such records are
left to the next pass, which reads a newer list.

Large polls commit in transactions of ``commit_batch`` records, so the event
log's append lock is never held for long; each record's event and fingerprint
are always committed together, and a crash half-way leaves the rest for the
next poll.

Rules: only certified invoices sync; credit invoices only with
``SYNC_CREDIT_INVOICES``; with ``INVOICE_HISTORY_DAYS`` only invoices dated in
the window (Kleer's ``from-date`` filter; older records are not removals).
Line items come from invoice rows (synced invoices only) and agreement rows,
with the stable ids of ``libs.mapping.objects.line_item_id``. Records that
cannot be mapped are parked in the DLQ (source ``outbound-poller``) once per
version of the record, and the rest of the poll goes on.

One active poller per connection: it holds a Postgres session advisory lock;
another replica waits as a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from libs.events.dlq import DeadLetter, DeadLetterQueue
from libs.events.envelope import NewEvent
from libs.events.store import AppendRequest, PostgresEventStore
from libs.kleer import AGREEMENT as AGREEMENT_RESOURCE
from libs.kleer import CLIENT as CLIENT_RESOURCE
from libs.kleer import INVOICE as INVOICE_RESOURCE
from libs.kleer import PRODUCT as PRODUCT_RESOURCE
from libs.kleer import PROJECT as PROJECT_RESOURCE
from libs.kleer import KleerClient, KleerNotFound, Resource
from libs.kleer.resources import INVOICE_FROM_DATE_PARAM
from libs.mapping.invoices import should_sync_invoice
from libs.mapping.loader import resolve
from libs.mapping.model import Mappings
from libs.mapping.objects import (
    AGREEMENT,
    CLIENT,
    FIRST,
    INVOICE,
    LINE_ITEM,
    PRODUCT,
    PROJECT,
    RECURRING,
    ROW,
)
from libs.observability import metrics
from libs.observability.logging import bind_correlation_id, get_logger
from libs.records import RecordRef
from services.outbound import fingerprints
from services.outbound.detection import (
    Detection,
    Failure,
    Source,
    detect,
    detect_changes,
    implausible_removals,
    mapping_version,
    removals,
    source_hash,
)
from services.outbound.settings import DEFAULT_INTERVALS
from services.outbound.snapshots import (
    KINDS,
    Snapshot,
    changed_type,
    line_item_ids,
    line_item_snapshots,
    record_snapshot,
    removal_event_data,
    removed_type,
)

log = get_logger(__name__)

POLLER_SOURCE = "outbound-poller"
POLLER_LOCK_CLASS = 4242003  # pg_try_advisory_lock(4242003, hashtext(connection))
FRESHNESS_TICK = 5.0
RETRY_FAILED_POLL = 60.0  # seconds until a failed poll of a kind is tried again

_RESOURCE_OF: Mapping[str, Resource] = {
    CLIENT: CLIENT_RESOURCE,
    PRODUCT: PRODUCT_RESOURCE,
    PROJECT: PROJECT_RESOURCE,
    AGREEMENT: AGREEMENT_RESOURCE,
    INVOICE: INVOICE_RESOURCE,
}
# Which Kleer lists a kind needs (line items come from invoice and agreement rows).
_NEEDS: Mapping[str, tuple[str, ...]] = {
    CLIENT: (CLIENT,),
    PRODUCT: (PRODUCT,),
    PROJECT: (PROJECT,),
    AGREEMENT: (AGREEMENT,),
    INVOICE: (INVOICE,),
    LINE_ITEM: (INVOICE, AGREEMENT),
}


class PollerBusy(Exception):
    """Another poller holds this connection's lock."""


class RemovalGuard(Exception):
    """A poll would remove an implausible share of the records it knows: nothing is recorded."""


@dataclass(frozen=True)
class PollerConfig:
    connection: str = "default"
    intervals: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_INTERVALS))
    include_credit_invoices: bool = False
    invoice_history_days: int | None = None
    mappings: Mappings | None = None
    commit_batch: int = 5_000
    # A poll that would remove more than this share of what it remembers (of at least
    # ``removal_guard_minimum`` records) removes nothing and fails instead: an empty or
    # truncated Kleer list must not flag a whole book as deleted.
    removal_guard_share: float = 0.5
    removal_guard_minimum: int = 20
    today: Callable[[], dt.date] = dt.date.today

    def window_start(self) -> dt.date | None:
        if self.invoice_history_days is None:
            return None
        return self.today() - dt.timedelta(days=self.invoice_history_days)


@dataclass(frozen=True)
class KindReport:
    kind: str
    seen: int
    changed: int
    removed: int
    failed: int
    seconds: float
    error: str | None = None


@dataclass
class PollReport:
    kinds: dict[str, KindReport] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(r.changed + r.removed for r in self.kinds.values())

    @property
    def ok(self) -> bool:
        return all(r.error is None for r in self.kinds.values())


class Poller:
    """Polls one Kleer company for one connection. ``run()``/``stop()``; ``poll(kinds)`` for one pass."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        store: PostgresEventStore,
        kleer: KleerClient,
        config: PollerConfig,
        kinds: Sequence[str] = KINDS,
    ) -> None:
        self.pool = pool
        self.store = store
        self.kleer = kleer
        self.config = config
        self.kinds = tuple(k for k in KINDS if k in kinds)
        self.dlq = DeadLetterQueue(store)
        self.mappings = resolve(config.mappings)
        version = mapping_version(self.mappings).encode()
        self._salts = {kind: version + kind.encode() for kind in KINDS}
        self._stopping = asyncio.Event()
        self._last_success: dict[str, float] = {}

    # --- lifecycle ---------------------------------------------------------------------------

    async def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Poll on schedule until ``stop``; stands by while another poller holds the connection's lock."""
        while not self._stopping.is_set():
            try:
                async with self.pool.acquire() as lock_conn:
                    if not await self._try_lock(lock_conn):
                        log.info(
                            "poller standby: another poller holds the lock", connection=self.config.connection
                        )
                        await self._wait(FRESHNESS_TICK)
                        continue
                    try:
                        await self._schedule(lock_conn)
                    finally:
                        with contextlib.suppress(Exception):
                            await self._unlock(lock_conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("poller lost its database connection; retrying", error=str(exc))
                await self._wait(FRESHNESS_TICK)

    async def poll_once(self, kinds: Sequence[str] | None = None) -> PollReport:
        """One pass over ``kinds`` (default: all this poller's kinds) under the lock; ``PollerBusy`` if held."""
        async with self.pool.acquire() as lock_conn:
            if not await self._try_lock(lock_conn):
                raise PollerBusy(
                    f"another poller holds the lock of connection {self.config.connection!r}; "
                    "stop it or wait for its poll to finish"
                )
            try:
                return await self.poll(kinds or self.kinds)
            finally:
                await self._unlock(lock_conn)

    async def _try_lock(self, conn: asyncpg.Connection) -> bool:
        return bool(
            await conn.fetchval(
                "SELECT pg_try_advisory_lock($1, hashtext($2))", POLLER_LOCK_CLASS, self.config.connection
            )
        )

    async def _unlock(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            "SELECT pg_advisory_unlock($1, hashtext($2))", POLLER_LOCK_CLASS, self.config.connection
        )

    async def _wait(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), max(0.0, seconds))
        return self._stopping.is_set()

    async def _schedule(self, lock_conn: asyncpg.Connection) -> None:
        due_at = {kind: 0.0 for kind in self.kinds}  # poll everything once at start
        while not self._stopping.is_set():
            await lock_conn.fetchval("SELECT 1")  # the lock lives as long as this connection
            now = time.monotonic()
            due = [kind for kind, at in due_at.items() if at <= now]
            if due:
                report = await self.poll(due)
                finished = time.monotonic()
                for kind in due:
                    interval = self.config.intervals.get(kind, DEFAULT_INTERVALS[kind])
                    line = report.kinds.get(kind)
                    if line is not None and line.error is not None:
                        interval = min(interval, RETRY_FAILED_POLL)  # Kleer down: try again soon
                    due_at[kind] = finished + interval
            self._update_freshness()
            next_due = min(due_at.values()) - time.monotonic()
            await self._wait(min(FRESHNESS_TICK, max(0.0, next_due)))

    def _update_freshness(self) -> None:
        now = time.time()
        for kind, at in self._last_success.items():
            metrics.POLL_FRESHNESS_SECONDS.labels(connection=self.config.connection, object_type=kind).set(
                now - at
            )

    # --- one pass ------------------------------------------------------------------------------

    async def poll(self, kinds: Sequence[str]) -> PollReport:
        """Poll these kinds now. Each Kleer list is read once per pass, even when several kinds need it."""
        wanted = [k for k in KINDS if k in kinds]
        correlation = str(uuid.uuid4())  # one chain per pass: its events, log lines and Kleer requests
        bind_correlation_id(correlation)
        lists = sorted({name for kind in wanted for name in _NEEDS[kind]})
        # What the poller remembers, read before Kleer is (see the module docstring).
        connection = self.config.connection
        remembered = {kind: await fingerprints.load(self.pool, connection, kind) for kind in wanted}
        fetched = await asyncio.gather(*(self._list(name) for name in lists), return_exceptions=True)
        listings: dict[str, list[dict[str, Any]] | BaseException] = dict(zip(lists, fetched, strict=True))
        report = PollReport()
        for kind in wanted:
            if self._stopping.is_set():
                break  # SIGTERM: what is committed stays; the rest waits for the next poller
            started = time.perf_counter()
            labels = {"connection": self.config.connection, "object_type": kind}
            failed_list = next((v for n in _NEEDS[kind] if isinstance(v := listings[n], BaseException)), None)
            try:
                if failed_list is not None:
                    raise failed_list
                records = {n: v for n in _NEEDS[kind] if not isinstance(v := listings[n], BaseException)}
                detection = await self._poll_kind(kind, records, remembered.pop(kind), correlation)
            except Exception as exc:
                metrics.POLL_ERRORS.labels(**labels).inc()
                log.error("poll failed", kind=kind, connection=self.config.connection, error=str(exc))
                report.kinds[kind] = KindReport(kind, 0, 0, 0, 0, time.perf_counter() - started, str(exc))
                continue
            seconds = time.perf_counter() - started
            metrics.POLL_DURATION_SECONDS.labels(**labels).observe(seconds)
            metrics.POLL_RECORDS_SEEN.labels(**labels).inc(detection.seen)
            metrics.POLL_RECORDS_CHANGED.labels(**labels).inc(len(detection.changed) + len(detection.removed))
            self._last_success[kind] = time.time()
            metrics.POLL_LAST_SUCCESS.labels(**labels).set(self._last_success[kind])
            metrics.POLL_FRESHNESS_SECONDS.labels(**labels).set(0)
            report.kinds[kind] = KindReport(
                kind,
                detection.seen,
                len(detection.changed),
                len(detection.removed),
                len(detection.failures),
                seconds,
            )
            log.info(
                "polled",
                kind=kind,
                connection=self.config.connection,
                seen=detection.seen,
                changed=len(detection.changed),
                removed=len(detection.removed),
                unmappable=len(detection.failures),
                seconds=round(seconds, 3),
            )
        await self._record_runs(report)
        return report

    async def _record_runs(self, report: PollReport) -> None:
        """Upsert the pass into ``poll_runs`` (every process's view of freshness: the admin overview).

        Bookkeeping only: the pass's events are committed already, so a database that fails here is logged
        and the next pass records again.
        """
        if not report.kinds:
            return
        rows = [(k.kind, k.error, k.seen, k.changed, k.removed, k.seconds) for k in report.kinds.values()]
        try:
            await self.pool.executemany(
                """
                INSERT INTO poll_runs AS p (connection, kind, last_attempt_at, last_success_at, seen, changed,
                                            removed, seconds, last_error)
                VALUES ($1, $2, now(), CASE WHEN $3::text IS NULL THEN now() END, $4, $5, $6, $7, $3)
                ON CONFLICT (connection, kind) DO UPDATE SET
                    last_attempt_at = now(),
                    last_error = EXCLUDED.last_error,
                    last_success_at = COALESCE(EXCLUDED.last_success_at, p.last_success_at),
                    seen = CASE WHEN EXCLUDED.last_error IS NULL THEN EXCLUDED.seen ELSE p.seen END,
                    changed = CASE WHEN EXCLUDED.last_error IS NULL THEN EXCLUDED.changed ELSE p.changed END,
                    removed = CASE WHEN EXCLUDED.last_error IS NULL THEN EXCLUDED.removed ELSE p.removed END,
                    seconds = CASE WHEN EXCLUDED.last_error IS NULL THEN EXCLUDED.seconds ELSE p.seconds END
                """,
                [(self.config.connection, *row) for row in rows],
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("could not record the poll in poll_runs; the next pass will", error=str(exc))

    async def _list(self, kind: str) -> list[dict[str, Any]]:
        params: dict[str, str] = {}
        window = self.config.window_start()
        if kind == INVOICE and window is not None:
            params[INVOICE_FROM_DATE_PARAM] = window.isoformat()
        return await self.kleer.list_all(_RESOURCE_OF[kind], params=params or None)

    # --- detection -------------------------------------------------------------------------------

    def _syncs_invoice(self, invoice: Mapping[str, Any]) -> bool:
        return should_sync_invoice(
            invoice,
            include_credit=self.config.include_credit_invoices,
            history_from=self.config.window_start(),
        )

    async def _poll_kind(
        self,
        kind: str,
        lists: Mapping[str, list[dict[str, Any]]],
        remembered: Mapping[str, fingerprints.Seen],
        correlation: str,
    ) -> Detection:
        """Detect and record one kind, ``commit_batch`` Kleer records at a time; returns what was recorded.

        ``remembered`` was loaded before ``lists`` were read. Committing as it goes lets
        the pusher start on the first records while the rest are still being mapped.
        Removals are recorded last, once every record has been seen, and only if they
        are plausible.
        """
        # Hashing and mapping 100,000 records is seconds of CPU: off the event loop (health, relay).
        sources, listed = await asyncio.to_thread(self._sources, kind, lists)
        removed = removals(remembered, listed, self.config.window_start())
        problem = implausible_removals(
            len(removed), len(remembered), self.config.removal_guard_share, self.config.removal_guard_minimum
        )
        if problem:
            raise RemovalGuard(
                f"{kind}: {problem}; nothing was recorded. If the book really shrank that much, delete those "
                "records' rows from outbound_fingerprints (or raise PollerConfig.removal_guard_share) and poll again"
            )
        total = Detection(remembered=len(remembered))
        step = max(1, self.config.commit_batch)
        committing: asyncio.Task[Detection] | None = None
        try:
            for start in range(0, len(sources), step):
                # Slice k+1 is mapped (a thread) while slice k commits (mostly waiting on Postgres).
                part = await asyncio.to_thread(detect_changes, sources[start : start + step], remembered)
                if committing is not None:
                    total.add(await committing)
                committing = asyncio.create_task(self._commit(kind, part, remembered, correlation))
                total.seen += part.seen
                if self._stopping.is_set() and start + step < len(sources):
                    log.info("poll stopped early", kind=kind, connection=self.config.connection)
                    return total  # the rest, and any removals, wait for the next poll
        finally:
            if committing is not None:
                total.add(await committing)
        removed = await self._confirmed_removals(kind, removed, lists)
        total.add(await self._commit(kind, Detection(removed=removed), remembered, correlation))
        return total

    async def _confirmed_removals(
        self, kind: str, removed: Sequence[str], lists: Mapping[str, list[dict[str, Any]]]
    ) -> list[str]:
        """Of the records the lists no longer hold, those Kleer confirms gone: a GET answers 404.

        A list can miss a record that still exists (offset paging over a book that changes while it is
        read, a Kleer answer cut short); taken as removed, a live record would be flagged or archived in
        HubSpot. A line item is gone when its invoice or agreement was listed without that row, or is
        itself gone. An unconfirmed removal is left to the next poll (logged); a Kleer failure here fails
        the pass before anything of the removals is recorded.
        """
        if not removed:
            return []
        parents: dict[str, tuple[str, str]] = {}  # record -> (resource kind, id) whose 404 confirms it
        confirmed: list[str] = []
        if kind == LINE_ITEM:
            listed = {(k, str(r.get("id"))) for k in (INVOICE, AGREEMENT) for r in lists[k]}
            for kleer_id in removed:
                parent = _line_item_parent(kleer_id)
                if parent is None or parent in listed:
                    confirmed.append(kleer_id)  # its parent was listed without it: the row is gone
                else:
                    parents[kleer_id] = parent
        else:
            parents = {kleer_id: (kind, kleer_id) for kleer_id in removed}
        checks = {parent for parent in parents.values() if parent[1].isdigit()}
        confirmed.extend(k for k, parent in parents.items() if parent not in checks)  # no id to look up

        async def gone(parent: tuple[str, str]) -> bool:
            try:
                await self.kleer.get(_RESOURCE_OF[parent[0]], int(parent[1]))
            except KleerNotFound:
                return True
            return False

        ordered = sorted(checks)
        answers = dict(zip(ordered, await asyncio.gather(*(gone(p) for p in ordered)), strict=True))
        confirmed.extend(k for k, parent in parents.items() if answers.get(parent))
        kept = len(removed) - len(confirmed)
        if kept:
            log.warning("records missing from a Kleer list still exist: not removed; the next poll looks again",
                        kind=kind, connection=self.config.connection, records=kept,
                        examples=sorted(set(removed) - set(confirmed))[:5])
        return confirmed

    def _sources(
        self, kind: str, lists: Mapping[str, list[dict[str, Any]]]
    ) -> tuple[list[Source], list[str]]:
        mappings = self.mappings
        salt = self._salts[kind]
        sources: list[Source] = []
        listed: list[str] = []
        if kind != LINE_ITEM:
            for record in lists[kind]:
                kleer_id = str(record.get("id"))
                listed.append(kleer_id)
                if kind == INVOICE and not self._syncs_invoice(record):
                    continue
                sources.append(
                    Source(
                        ids=(kleer_id,),
                        source_hash=source_hash(salt, record),
                        record_date=fingerprints.record_date(kind, record),
                        build=_record_builder(kind, record, mappings),
                        record=str(RecordRef("kleer", kind, kleer_id)),
                        raw=record,
                    )
                )
            return sources, listed
        for parent_kind in (INVOICE, AGREEMENT):
            for record in lists[parent_kind]:
                ids = line_item_ids(parent_kind, record)
                listed.extend(ids)
                if parent_kind == INVOICE and not self._syncs_invoice(record):
                    continue
                sources.append(
                    Source(
                        ids=ids,
                        source_hash=source_hash(salt, record),
                        record_date=fingerprints.record_date(parent_kind, record),
                        build=_line_item_builder(parent_kind, record, mappings),
                        record=str(RecordRef("kleer", parent_kind, str(record.get("id")))),
                        raw=record,
                    )
                )
        return sources, listed

    # --- redrive ---------------------------------------------------------------------------------

    async def redrive(self, entry: DeadLetter) -> None:
        """Map a parked record again from Kleer's current data; record it if it maps now, else raise."""
        ref = RecordRef.parse(entry.record)
        kind = str(entry.payload.get("kind") or ref.kind)
        if ref.kind not in _RESOURCE_OF or kind not in _NEEDS:
            raise ValueError(f"{entry.record}: not a record the poller reads")
        # Before Kleer is read, as in a pass.
        remembered = await fingerprints.load(self.pool, self.config.connection, kind)
        record = await self.kleer.get(_RESOURCE_OF[ref.kind], int(ref.id))
        lists: dict[str, list[dict[str, Any]]] = {name: [] for name in _NEEDS[kind]}
        lists[ref.kind] = [record]
        sources, listed = self._sources(kind, lists)
        ids = {i for source in sources for i in source.ids}
        # Forget the stored input hash so the record is mapped again even though Kleer did not change it.
        stale = {i: dataclasses.replace(remembered[i], source_hash="") for i in ids if i in remembered}
        detection = detect(sources, stale, listed)
        if detection.failures:
            raise RuntimeError(f"{entry.record} still cannot be mapped: {detection.failures[0].error}")
        detection.removed.clear()
        await self._commit(kind, detection, stale, str(uuid.uuid4()))

    # --- commit ------------------------------------------------------------------------------------

    async def _commit(
        self, kind: str, detection: Detection, remembered: Mapping[str, fingerprints.Seen], correlation: str
    ) -> Detection:
        """Events with their fingerprints, in transactions of ``commit_batch`` records; returns what was recorded.

        A record is recorded (fingerprint, event, dead letter) only if its stored row is
        still as in ``remembered``; one written or forgotten by another writer since then
        is left to the next poll.
        """
        connection = self.config.connection
        metadata = {"actor": "poller", "source": "kleer", "correlation_id": correlation}
        changed_ids = {s.kleer_id for s in detection.changed}
        # Rows whose fingerprint did not change (only the source hash did) need no event.
        quiet_rows = [r for r in detection.rows if r.kleer_id not in changed_ids]
        rows_by_id = {r.kleer_id: r for r in detection.rows}
        recorded = Detection()
        step = max(1, self.config.commit_batch)
        for start in range(0, max(len(detection.changed), 1), step):
            part = detection.changed[start : start + step]
            removed = detection.removed if start == 0 else []
            failures = detection.failures if start == 0 else []
            quiet = quiet_rows if start == 0 else []
            if not (part or removed or failures or quiet):
                continue
            async with self.pool.acquire() as conn, conn.transaction():
                stored = await fingerprints.save_unmoved(
                    conn, connection, kind, [rows_by_id[s.kleer_id] for s in part] + quiet, remembered
                )
                forgotten = await fingerprints.forget_unmoved(conn, connection, kind, removed, remembered)
                part = [s for s in part if s.kleer_id in stored]
                removed = [kleer_id for kleer_id in removed if kleer_id in forgotten]
                failures = [f for f in failures if any(i in stored for i in f.source.ids)]
                await self._record(conn, kind, part, removed, failures, metadata)
            recorded.changed.extend(part)
            recorded.removed.extend(removed)
            recorded.failures.extend(failures)
        left = len(detection.changed) + len(detection.removed) - len(recorded.changed) - len(recorded.removed)
        if left:
            log.info(
                "records written by another writer during the poll: left to the next poll",
                kind=kind,
                connection=connection,
                count=left,
            )
        return recorded

    async def _record(
        self,
        conn: asyncpg.Connection,
        kind: str,
        part: Sequence[Snapshot],
        removed: Sequence[str],
        failures: Sequence[Failure],
        metadata: dict[str, Any],
    ) -> None:
        """The events and dead letters of records whose fingerprints this transaction has just written."""
        connection = self.config.connection
        appends = [
            AppendRequest(s.stream(connection), [NewEvent(changed_type(kind), s.to_event_data(), metadata)])
            for s in part
        ] + [
            AppendRequest(
                RecordRef("kleer", kind, kleer_id).stream(connection),
                [NewEvent(removed_type(kind), removal_event_data(kind, kleer_id), metadata)],
            )
            for kleer_id in removed
        ]
        for failure in failures:
            await self.dlq.park(
                conn,
                source=POLLER_SOURCE,
                connection=connection,
                record=failure.source.record,
                reason=f"cannot map for HubSpot: {failure.error}",
                detail={
                    "kind": kind,
                    "field": failure.error.field,
                    "value": repr(failure.error.value)[:200],
                },
                payload={"kind": kind, "kleer_record": failure.source.raw},
            )
        # Appends last: they hold the log's append lock until this transaction commits.
        if appends:
            await self.store.append_batch(appends, conn=conn)


def _line_item_parent(kleer_id: str) -> tuple[str, str] | None:
    """The (kind, id) of the invoice or agreement a line item id belongs to; None for an id of no known form."""
    for marker, parent_kind in ((f"-{ROW}-", INVOICE), (f"-{RECURRING}-", AGREEMENT), (f"-{FIRST}-", AGREEMENT)):
        head, found, _ = kleer_id.rpartition(marker)
        if found:
            return parent_kind, head
    return None


def _record_builder(kind: str, record: Mapping[str, Any], mappings: Mappings) -> Callable[[], list[Any]]:
    return lambda: [record_snapshot(kind, record, mappings=mappings)]


def _line_item_builder(
    parent_kind: str, record: Mapping[str, Any], mappings: Mappings
) -> Callable[[], list[Any]]:
    return lambda: line_item_snapshots(parent_kind, record, mappings=mappings)
