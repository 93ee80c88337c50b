"""Replay: re-read selected outbound changes from the log and drive them through the normal pusher path.

Selection (``ReplaySelector``): a connection and any of object types, records,
event types, a time window and a position range. Only outbound change events
count (``Kleer{Kind}Changed`` / ``…Removed`` / ``…PushRequested``), up to the
log head when the replay starts. Per record the *latest* selected event wins:
replaying a window re-drives the state each record had at the end of it.

The scan is two passes, so a log of millions of events costs little memory and
decoding: first (position, stream, type) of every selected event, keeping the
latest position per record; then the full events of those positions only, in
batches, in position order.

Two ways to use a selection:

- ``dry_run``: for each record, what replay would write against what HubSpot
  holds now (one batch read by ``kleer_id`` per 100 records); writes nothing.
- ``run_replay``: forced pushes through ``Pusher.push_now`` (the pusher's own
  batching, associations, DLQ and outcome events; the HubSpot client's shared
  rate budget), removals through ``Pusher.handle``. The run is recorded
  (``ReplayStarted`` / ``ReplayCompleted`` in ``{connection}/sync-replay/{id}``;
  every push it causes is caused by ``ReplayStarted``, carries its correlation
  id and ``source=replay``). Progress lives in ``replay_runs`` (migration 007):
  a killed run is resumed by running the same selection again, and records it
  had already pushed are not pushed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
import orjson

from libs.config import Settings
from libs.events.envelope import NewEvent, RecordedEvent
from libs.events.store import AppendRequest, PostgresEventStore
from libs.mapping.objects import KLEER_ID, KLEER_OBJECT_TYPES, resolve_object_type
from libs.records import RecordRef
from services.operations.rows import EVENT_COLUMNS, connection_streams, recorded
from services.operations.timeline import FieldChange, field_changes
from services.outbound.snapshots import (
    REMOVED,
    Snapshot,
    changed_type,
    hubspot_object_of,
    parse_event_type,
    push_requested_type,
    removed_type,
)

REPLAY_STARTED = "ReplayStarted"
REPLAY_COMPLETED = "ReplayCompleted"
REPLAY_SOURCE = "replay"
SCAN_WINDOW = 250_000  # log positions per selection query
BATCH = 100  # records per push (HubSpot's batch size)
_NAMESPACE = uuid.UUID("0b7f3c55-8d1e-4f4e-9a0e-7d3c2a1b9e42")

#: Plural names people type (``--type clients``) -> Kleer kind.
_PLURALS = {f"{kind}s": kind for kind in KLEER_OBJECT_TYPES}


class ReplayError(Exception):
    """A replay cannot start or go on; the message says why and what to do."""


def object_kind(name: str) -> str:
    """``client``, ``clients``, ``companies``, ``company`` -> ``client``; ``ReplayError`` for other names."""
    name = name.strip()
    try:
        return _PLURALS.get(name) or resolve_object_type(name)
    except ValueError as exc:
        raise ReplayError(str(exc)) from None


_DURATION = re.compile(r"^(\d+)\s*([smhd])$")


def parse_moment(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO 8601 time (UTC when no zone is given) or an age like ``30m``, ``2h``, ``7d`` (that long ago)."""
    text = text.strip()
    now = now or dt.datetime.now(dt.UTC)
    match = _DURATION.match(text)
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match[2]]
        return now - dt.timedelta(**{unit: int(match[1])})
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReplayError(f"not a time: {text!r}; write 2025-03-01T12:00:00Z or an age like 2h") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class Selecting(Protocol):
    """What the scan and the run bookkeeping need of a selection (``ReplaySelector``, ``InboundSelector``)."""

    @property
    def connection(self) -> str: ...

    @property
    def records(self) -> tuple[str, ...]: ...

    @property
    def since(self) -> dt.datetime | None: ...

    @property
    def until(self) -> dt.datetime | None: ...

    @property
    def from_position(self) -> int | None: ...

    @property
    def to_position(self) -> int | None: ...

    def types(self) -> list[str]: ...

    def streams(self) -> list[str]: ...

    def stream_patterns(self) -> list[str]: ...

    def to_json(self) -> dict[str, Any]: ...

    def key(self) -> str: ...

    def describe(self) -> str: ...


class Window:
    """What both selections (outbound ``ReplaySelector``, inbound ``InboundSelector``) share: a connection,
    object types and records, a time window and a position range; their checks, JSON and description, and
    the selection's key."""

    connection: str
    kinds: tuple[str, ...]
    records: tuple[str, ...]
    since: dt.datetime | None
    until: dt.datetime | None
    from_position: int | None
    to_position: int | None

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def check_window(self) -> None:
        if self.since and self.until and self.since >= self.until:
            raise ReplayError("the time window is empty: --since must be before --until")
        if self.from_position is not None and self.to_position is not None and self.from_position > self.to_position:
            raise ReplayError("the position range is empty: --from-position must not exceed --to-position")

    def window_json(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "kinds": sorted(self.kinds),
            "records": sorted(self.records),
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "from_position": self.from_position,
            "to_position": self.to_position,
        }

    @staticmethod
    def window_from_json(body: Mapping[str, Any]) -> dict[str, Any]:
        """The window's constructor arguments from ``window_json``."""

        def moment(value: object) -> dt.datetime | None:
            return dt.datetime.fromisoformat(str(value)) if value else None

        return {"connection": str(body["connection"]), "kinds": tuple(body.get("kinds") or ()),
                "records": tuple(body.get("records") or ()), "since": moment(body.get("since")),
                "until": moment(body.get("until")), "from_position": body.get("from_position"),
                "to_position": body.get("to_position")}

    def selection_parts(self) -> list[str]:
        parts = []
        if self.kinds:
            parts.append("types " + ", ".join(sorted(self.kinds)))
        if self.records:
            parts.append("records " + ", ".join(sorted(self.records)))
        return parts

    def window_parts(self) -> list[str]:
        parts = []
        if self.since or self.until:
            parts.append(f"from {self.since.isoformat() if self.since else 'the start'} "
                         f"to {self.until.isoformat() if self.until else 'now'}")
        if self.from_position is not None or self.to_position is not None:
            parts.append(f"positions {self.from_position or 1}..{self.to_position or 'head'}")
        return parts

    def key(self) -> str:
        """A digest of the selection: the same command run again finds its unfinished run."""
        return hashlib.sha256(orjson.dumps(self.to_json(), option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


@dataclass(frozen=True)
class ReplaySelector(Window):
    """Which outbound changes to replay. Empty filters select everything of the connection."""

    connection: str
    kinds: tuple[str, ...] = ()
    records: tuple[str, ...] = ()  # kleer record ids as ``kleer:client:123``
    event_types: tuple[str, ...] = ()
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    from_position: int | None = None
    to_position: int | None = None

    def __post_init__(self) -> None:
        for record in self.records:
            ref = RecordRef.parse(record)
            if ref.system != "kleer" or ref.kind not in KLEER_OBJECT_TYPES:
                raise ReplayError(f"replay selects Kleer records (kleer:client:123), not {record!r}")
        for event_type in self.event_types:
            if parse_event_type(event_type) is None:
                raise ReplayError(
                    f"{event_type!r} is not an outbound change event; use Kleer<Kind>Changed, "
                    "Kleer<Kind>Removed or Kleer<Kind>PushRequested (e.g. KleerClientChanged)"
                )
        self.check_window()

    def types(self) -> list[str]:
        """The event types the scan reads."""
        kinds = set(self.kinds) | {RecordRef.parse(r).kind for r in self.records}
        chosen = [k for k in KLEER_OBJECT_TYPES if not kinds or k in kinds]
        types = [t for kind in chosen for t in (changed_type(kind), removed_type(kind), push_requested_type(kind))]
        if self.event_types:
            types = [t for t in types if t in self.event_types]
        return types

    def streams(self) -> list[str]:
        return [RecordRef.parse(r).stream(self.connection) for r in self.records]

    def stream_patterns(self) -> list[str]:
        """LIKE patterns the streams must match besides the connection (none: the types select the kinds)."""
        return []

    def to_json(self) -> dict[str, Any]:
        return {
            "event_types": sorted(self.event_types),
            **self.window_json(),
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ReplaySelector:
        """The selector ``to_json`` wrote (a run's, to resume it)."""
        return cls(event_types=tuple(body.get("event_types") or ()), **cls.window_from_json(body))

    def describe(self) -> str:
        parts = [f"connection {self.connection}", *self.selection_parts()]
        if self.event_types:
            parts.append("events " + ", ".join(sorted(self.event_types)))
        return "; ".join([*parts, *self.window_parts()])


# --- selection --------------------------------------------------------------------------------------------


@dataclass
class Selection:
    """The latest selected event position per record, in position order."""

    up_to: int
    events_scanned: int = 0
    positions: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.positions)


async def select(pool: asyncpg.Pool, selector: Selecting, up_to: int | None = None) -> Selection:
    """Scan the log for ``selector``'s events up to ``up_to`` (default: the head now); latest per record."""
    clauses = ["position > $1", "position <= $2", "type = ANY($3::text[])"]
    args: list[Any] = [list(selector.types())]
    if selector.records:
        args.append(selector.streams())
        clauses.append(f"stream = ANY(${len(args) + 2}::text[])")
    else:
        args.append(connection_streams(selector.connection))
        clauses.append(f"stream LIKE ${len(args) + 2}")
        if patterns := selector.stream_patterns():
            args.append(patterns)
            clauses.append(f"stream LIKE ANY(${len(args) + 2}::text[])")
    if selector.since:
        args.append(selector.since)
        clauses.append(f"recorded_at >= ${len(args) + 2}")
    if selector.until:
        args.append(selector.until)
        clauses.append(f"recorded_at < ${len(args) + 2}")
    # Postgres keeps the latest position per record of each window of the log, so only one row per
    # record and window travels (a record changed five times in a window costs one row, not five).
    sql = f"SELECT stream, max(position), count(*) FROM events WHERE {' AND '.join(clauses)} GROUP BY stream"
    latest: dict[str, int] = {}
    async with pool.acquire() as conn:
        head = up_to if up_to is not None else int(await conn.fetchval("SELECT COALESCE(max(position), 0) FROM events"))
        selection = Selection(head)
        after = max(0, (selector.from_position or 1) - 1)
        last = min(head, selector.to_position) if selector.to_position is not None else head
        # A time window narrows the position range first, so a recent window of a long log is not a full scan.
        if selector.since is not None:
            after = max(after, await _first_position_at(conn, selector.since, after + 1, last) - 1)
        if selector.until is not None:
            last = min(last, await _first_position_at(conn, selector.until, after + 1, last) - 1)
        window = last - after if selector.records else SCAN_WINDOW  # a few streams: their index, in one go
        while after < last:
            upper = min(last, after + window)
            for stream, position, count in await conn.fetch(sql, after, upper, *args):
                latest[stream] = max(position, latest.get(stream, 0))
                selection.events_scanned += count
            after = upper
    selection.positions = sorted(latest.values())
    return selection


async def _first_position_at(conn: asyncpg.Connection, moment: dt.datetime, low: int, high: int) -> int:
    """The first position in ``low..high`` recorded at or after ``moment`` (``high + 1`` if none).

    Binary search: ``recorded_at`` grows with ``position`` (both are set under
    the log's append lock), so this costs about log2(range) index look-ups.
    """
    high += 1
    while low < high:
        middle = (low + high) // 2
        at = await conn.fetchval(
            "SELECT recorded_at FROM events WHERE position >= $1 ORDER BY position LIMIT 1", middle
        )
        if at is None or at >= moment:
            high = middle
        else:
            low = middle + 1
    return low


@dataclass(frozen=True)
class Selected:
    """One record to replay: its latest selected event and the snapshot it carries (None: a removal)."""

    connection: str
    kind: str
    kleer_id: str
    position: int
    stream: str
    type: str
    snapshot: Snapshot | None
    problem: str | None = None  # the event could not be read

    @property
    def record(self) -> str:
        return str(RecordRef("kleer", self.kind, self.kleer_id))

    @property
    def hubspot_object(self) -> str:
        return hubspot_object_of(self.kind)

    @property
    def removal(self) -> bool:
        return self.snapshot is None and self.problem is None


def selected_of(position: int, stream: str, event_type: str, data: str | None) -> Selected:
    """A selected row (``data``: the event's JSON text, None for removals, which need none)."""
    parsed = parse_event_type(event_type)
    assert parsed is not None, f"{event_type} is not an outbound change"
    kind, action = parsed
    connection, _, rest = stream.partition("/")
    kleer_id = rest.rpartition("/")[2]
    if action == REMOVED:
        return Selected(connection, kind, kleer_id, position, stream, event_type, None)
    try:
        snapshot = Snapshot.from_event_data(orjson.loads(data or "null"))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        problem = f"unreadable {event_type} event: {exc!r}"
        return Selected(connection, kind, kleer_id, position, stream, event_type, None, problem)
    return Selected(connection, kind, kleer_id, position, stream, event_type, snapshot)


async def load(pool: asyncpg.Pool, positions: Sequence[int]) -> list[Selected]:
    """The selected events at ``positions``, in position order: only what replay needs of them (the
    snapshot), so a large replay decodes no metadata, ids or times."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT position, stream, type, CASE WHEN type LIKE '%Removed' THEN NULL ELSE data::text END "
            "FROM events WHERE position = ANY($1::bigint[]) ORDER BY position",
            list(positions),
        )
    return [selected_of(r[0], r[1], r[2], r[3]) for r in rows]


async def events_at(pool: asyncpg.Pool, positions: Sequence[int]) -> list[RecordedEvent]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE position = ANY($1::bigint[]) ORDER BY position", list(positions)
        )
    return [recorded(r) for r in rows]


def batches(positions: Sequence[int], size: int = BATCH) -> Iterable[Sequence[int]]:
    for start in range(0, len(positions), size):
        yield positions[start : start + size]


async def loaded_batches(
    pool: asyncpg.Pool, positions: Sequence[int], size: int = BATCH
) -> AsyncIterator[tuple[Sequence[int], list[Selected]]]:
    """(positions, selected events) per batch; the next batch is read while the caller works on this one."""
    parts = list(batches(positions, size))
    if not parts:
        return
    ahead = asyncio.ensure_future(load(pool, parts[0]))
    try:
        for index, part in enumerate(parts):
            items = await ahead
            if index + 1 < len(parts):
                ahead = asyncio.ensure_future(load(pool, parts[index + 1]))
            yield part, items
    finally:
        if not ahead.done():
            ahead.cancel()
            with contextlib.suppress(BaseException):
                await ahead


Progress = Callable[[int, int], None]
"""Called with (records done, records selected) after each batch."""


def _no_progress(done: int, total: int) -> None:
    return None


# --- dry run ----------------------------------------------------------------------------------------------


class HubSpotReader(Protocol):
    async def by_kleer_id(
        self, hubspot_object: str, kleer_ids: Sequence[str], properties: Sequence[str]
    ) -> dict[str, dict[str, str | None]]:
        """Current properties of the records with these ``kleer_id`` values; absent ids are not in HubSpot."""
        ...


class ClientReader:
    """``HubSpotReader`` over a started ``libs.hubspot.client.HubSpotClient`` (batch read by ``kleer_id``)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def by_kleer_id(
        self, hubspot_object: str, kleer_ids: Sequence[str], properties: Sequence[str]
    ) -> dict[str, dict[str, str | None]]:
        from libs.hubspot.objects import ObjectType

        result = await self.client.batch_read(
            ObjectType(hubspot_object), list(kleer_ids), properties=list(properties), id_property=KLEER_ID
        )
        for failed in result.failed:
            if failed.category != "OBJECT_NOT_FOUND" and failed.status != 404:
                raise ReplayError(f"HubSpot refused to read {hubspot_object}: {failed.category}: {failed.message}")
        found: dict[str, dict[str, str | None]] = {}
        for ok in result.succeeded:
            if not ok.record.archived:
                found[str(ok.record.properties.get(KLEER_ID))] = dict(ok.record.properties)
        return found


@dataclass(frozen=True)
class RecordDiff:
    """What replay would do to one record: ``create``, ``update``, ``same``, ``remove`` or ``skip``."""

    record: str
    hubspot_object: str
    action: str
    hubspot_id: str | None = None
    changes: tuple[FieldChange, ...] = ()
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "record": self.record,
            "hubspot_object": self.hubspot_object,
            "action": self.action,
            "hubspot_id": self.hubspot_id,
            "changes": [c.to_json() for c in self.changes],
            "note": self.note,
        }


def diff_record(item: Selected, current: Mapping[str, str | None] | None) -> RecordDiff:
    """Replay's write for ``item`` against HubSpot's ``current`` properties (None: not in HubSpot)."""
    hubspot_id = str(current.get("hs_object_id")) if current and current.get("hs_object_id") else None
    if item.problem:
        return RecordDiff(item.record, item.hubspot_object, "skip", hubspot_id, note=item.problem)
    if item.snapshot is None:
        if current is None:
            return RecordDiff(item.record, item.hubspot_object, "same", note="removed, and not in HubSpot")
        return RecordDiff(item.record, item.hubspot_object, "remove", hubspot_id, note="removed from Kleer")
    wanted = dict(item.snapshot.properties)
    if current is None:
        return RecordDiff(item.record, item.hubspot_object, "create", None, field_changes(None, wanted))
    now = {k: ("" if current.get(k) is None else current.get(k)) for k in wanted}
    changes = field_changes(now, wanted)
    return RecordDiff(item.record, item.hubspot_object, "update" if changes else "same", hubspot_id, changes)


@dataclass
class DryRunReport:
    selector: Selecting
    up_to: int
    events_scanned: int
    diffs: list[RecordDiff] = field(default_factory=list)
    records: int = 0
    compared: int = 0  # records compared with HubSpot (all, unless a preview was capped)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.diffs:
            counts[d.action] = counts.get(d.action, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": True,
            "selector": self.selector.to_json(),
            "up_to_position": self.up_to,
            "events_scanned": self.events_scanned,
            "records": self.records,
            "compared": self.compared,
            "counts": self.counts(),
            "diffs": [d.to_json() for d in self.diffs],
        }


Sink = Callable[[Sequence[Selected]], Awaitable[None]]
"""Receives each batch of a dry run (``diff_sink`` compares with HubSpot; the benchmark passes a no-op)."""


async def dry_run(
    pool: asyncpg.Pool,
    selector: ReplaySelector,
    reader: HubSpotReader | None,
    *,
    progress: Progress = _no_progress,
    sink: Sink | None = None,
    batch_size: int = BATCH,
    max_records: int | None = None,
) -> DryRunReport:
    """What a replay of ``selector`` would write, against HubSpot now (``reader``); writes nothing.

    ``max_records`` compares only the first records of the selection (a preview);
    ``records`` still counts them all.
    """
    selection = await select(pool, selector)
    report = DryRunReport(selector, selection.up_to, selection.events_scanned, records=len(selection))
    positions = selection.positions if max_records is None else selection.positions[:max_records]
    done = 0
    async for part, items in loaded_batches(pool, positions, batch_size):
        if sink is not None:
            await sink(items)
        if reader is not None:
            report.diffs.extend(await _diff_batch(reader, items))
        done += len(part)
        progress(done, len(positions))
    report.compared = len(positions)
    return report


async def _diff_batch(reader: HubSpotReader, items: Sequence[Selected]) -> list[RecordDiff]:
    by_object: dict[str, list[Selected]] = {}
    for item in items:
        by_object.setdefault(item.hubspot_object, []).append(item)
    current: dict[tuple[str, str], dict[str, str | None]] = {}
    for hubspot_object, group in by_object.items():
        properties = sorted({p for i in group if i.snapshot for p in i.snapshot.properties} | {KLEER_ID})
        found = await reader.by_kleer_id(hubspot_object, [i.kleer_id for i in group], properties)
        current.update(((hubspot_object, k), v) for k, v in found.items())
    return [diff_record(i, current.get((i.hubspot_object, i.kleer_id))) for i in items]


# --- the real run -----------------------------------------------------------------------------------------


class ReplayPusher(Protocol):
    """What replay needs of ``services.outbound.pusher.Pusher``."""

    async def push_now(
        self, connection: str, snapshots: Sequence[Snapshot], *, cause: RecordedEvent | None = None, force: bool = False
    ) -> Sequence[Any]: ...

    async def handle(self, events: Sequence[RecordedEvent]) -> Any: ...


@dataclass
class RunReport:
    run_id: str
    selector: Selecting
    up_to: int
    records: int = 0
    pushed: int = 0
    unchanged: int = 0
    failed: int = 0
    skipped_already_pushed: int = 0
    events_scanned: int = 0
    resumed: bool = False
    status: str = "running"
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "selector": self.selector.to_json(),
            "up_to_position": self.up_to,
            "records": self.records,
            "pushed": self.pushed,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "skipped_already_pushed": self.skipped_already_pushed,
            "events_scanned": self.events_scanned,
            "resumed": self.resumed,
            "status": self.status,
            "failures": self.failures[:100],
        }


@dataclass(frozen=True)
class ReplayRun:
    """A row of ``replay_runs``."""

    id: str
    connection: str
    selector: dict[str, Any]
    up_to_position: int
    correlation_id: str
    status: str
    total: int
    pushed: int
    unchanged: int
    failed: int
    events_scanned: int
    cursor_position: int
    actor: str
    last_error: str | None
    started_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ReplayRun:
        return cls(
            id=row["id"],
            connection=row["connection"],
            selector=orjson.loads(row["selector"]),
            up_to_position=row["up_to_position"],
            correlation_id=row["correlation_id"],
            status=row["status"],
            total=row["total"],
            pushed=row["pushed"],
            unchanged=row["unchanged"],
            failed=row["failed"],
            events_scanned=row["events_scanned"],
            cursor_position=row["cursor_position"],
            actor=row["actor"],
            last_error=row["last_error"],
            started_at=row["started_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
        )

    @property
    def done(self) -> int:
        return self.pushed + self.unchanged + self.failed


_RUN_COLUMNS = (
    "id, connection, selector::text AS selector, up_to_position, correlation_id, status, total, pushed, unchanged, "
    "failed, events_scanned, cursor_position, actor, last_error, started_at, updated_at, finished_at"
)


async def get_run(pool: asyncpg.Pool, run_id: str) -> ReplayRun | None:
    row = await pool.fetchrow(f"SELECT {_RUN_COLUMNS} FROM replay_runs WHERE id = $1", run_id)
    return ReplayRun.from_row(row) if row else None


async def recent_runs(pool: asyncpg.Pool, limit: int = 20) -> list[ReplayRun]:
    rows = await pool.fetch(f"SELECT {_RUN_COLUMNS} FROM replay_runs ORDER BY started_at DESC LIMIT $1", limit)
    return [ReplayRun.from_row(r) for r in rows]


def started_event_id(run_id: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{run_id}:started")


def replay_stream(connection: str, run_id: str) -> str:
    return RecordRef("sync", "replay", run_id).stream(connection)


_LOCK_CLASS = 4242007


class ReplayBusy(ReplayError):
    """Another process is running this replay right now."""


async def _open_run(
    conn: asyncpg.Connection, store: PostgresEventStore, selector: Selecting, actor: str, head: int
) -> tuple[str, bool]:
    """The running run of this selection (resumed) or a new one with its ``ReplayStarted`` event."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, selector.key())
        existing = await conn.fetchval(
            "SELECT id FROM replay_runs WHERE selector_key = $1 AND status = 'running' ORDER BY started_at LIMIT 1",
            selector.key(),
        )
        if existing is not None:
            return str(existing), True
        run_id = uuid.uuid4().hex[:12]
        event_id = started_event_id(run_id)
        await conn.execute(
            "INSERT INTO replay_runs (id, connection, selector, selector_key, up_to_position, correlation_id, actor) "
            "VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7)",
            run_id,
            selector.connection,
            orjson.dumps(selector.to_json()).decode(),
            selector.key(),
            head,
            str(event_id),
            actor,
        )
        started = NewEvent(
            REPLAY_STARTED,
            {"run_id": run_id, "selector": selector.to_json(), "up_to_position": head},
            {"actor": actor, "source": REPLAY_SOURCE, "correlation_id": str(event_id)},
            event_id,
        )
        await store.append_batch([AppendRequest(replay_stream(selector.connection, run_id), [started])], conn=conn)
    return run_id, False


async def _already_pushed(pool: asyncpg.Pool, correlation_id: str, replay_stream_name: str) -> set[str]:
    """Streams that have an event caused by this run (pushed before a kill, maybe after the last checkpoint)."""
    rows = await pool.fetch(
        "SELECT DISTINCT stream FROM events WHERE metadata ? 'correlation_id' AND metadata->>'correlation_id' = $1",
        correlation_id,
    )
    return {r[0] for r in rows} - {replay_stream_name}


def _tally(report: RunReport, results: Iterable[Any]) -> None:
    for result in results:
        outcome = getattr(result, "outcome", "")
        if outcome in ("created", "updated", "archived", "flagged"):
            report.pushed += 1
        elif outcome == "failed":
            report.failed += 1
            report.failures.append(f"kleer:{result.kind}:{result.kleer_id}: {result.error}")
        else:
            report.unchanged += 1


async def run_replay(
    store: PostgresEventStore,
    selector: ReplaySelector,
    pusher: ReplayPusher,
    *,
    actor: str,
    progress: Progress = _no_progress,
    batch_size: int = BATCH,
    on_start: Callable[[str, bool], None] | None = None,
) -> RunReport:
    """Replay ``selector`` through ``pusher`` (see the module docstring); resumes an unfinished run of it.

    ``on_start(run_id, resumed)`` is called once the run is open. Raises
    ``ReplayBusy`` when another process runs it now; any other error leaves the
    run resumable (running) with the error recorded.
    """
    async def drive(run_id: str, resumed: bool) -> RunReport:
        return await _drive(store, selector, pusher, run_id, resumed, progress, batch_size)

    return await run_locked(store, selector, actor, drive, on_start)


async def run_locked(
    store: PostgresEventStore,
    selector: Selecting,
    actor: str,
    drive: Callable[[str, bool], Awaitable[RunReport]],
    on_start: Callable[[str, bool], None] | None = None,
) -> RunReport:
    """Open (or resume) the run of ``selector``, hold its lock and ``drive(run_id, resumed)`` it.

    ``ReplayBusy`` when another process runs it now; any error leaves the run resumable, its error recorded.
    """
    pool = store.pool
    async with pool.acquire() as lock_conn:
        head = int(await lock_conn.fetchval("SELECT COALESCE(max(position), 0) FROM events"))
        run_id, resumed = await _open_run(lock_conn, store, selector, actor, head)
        if not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", _LOCK_CLASS, run_id):
            raise ReplayBusy(f"replay {run_id} is running in another process; wait for it or stop it first")
        if on_start is not None:
            on_start(run_id, resumed)
        try:
            return await drive(run_id, resumed)
        except BaseException as exc:
            await pool.execute(
                "UPDATE replay_runs SET last_error = $2, updated_at = now() WHERE id = $1",
                run_id,
                f"{type(exc).__name__}: {exc}"[:1000],
            )
            raise
        finally:
            await lock_conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", _LOCK_CLASS, run_id)


async def _drive(
    store: PostgresEventStore,
    selector: ReplaySelector,
    pusher: ReplayPusher,
    run_id: str,
    resumed: bool,
    progress: Progress,
    batch_size: int,
) -> RunReport:
    pool = store.pool
    start = await begin_run(store, selector, run_id, resumed, progress)
    run, cause, report, pending = start.run, start.cause, start.report, start.pending
    pushed_streams = await _already_pushed(pool, run.correlation_id, replay_stream(selector.connection, run_id)) if resumed else set()
    done = report.records - len(pending)
    async for part, items in loaded_batches(pool, pending, batch_size):
        todo = [i for i in items if i.stream not in pushed_streams]
        report.skipped_already_pushed += len(items) - len(todo)
        report.pushed += len(items) - len(todo)  # they were pushed by this run before it stopped
        await _push_batch(pusher, store, selector.connection, todo, cause, report)
        done += len(part)
        await save_progress(pool, report, part[-1])
        progress(done, report.records)
    report.status = "completed"
    completed = NewEvent(
        REPLAY_COMPLETED,
        {"run_id": run_id, "records": report.records, "pushed": report.pushed, "unchanged": report.unchanged,
         "failed": report.failed, "events_scanned": report.events_scanned},
        {"actor": run.actor, "source": REPLAY_SOURCE},
        uuid.uuid5(_NAMESPACE, f"{run_id}:completed"),
    ).caused_by(cause)
    await complete_run(store, selector.connection, run_id, completed)
    return report


@dataclass(frozen=True)
class RunStart:
    """A run about to be driven: its row, its ``ReplayStarted`` event, the report so far, positions to do."""

    run: ReplayRun
    cause: RecordedEvent
    report: RunReport
    pending: list[int]


async def begin_run(
    store: PostgresEventStore, selector: Selecting, run_id: str, resumed: bool, progress: Progress
) -> RunStart:
    """Select the run's records (up to its frozen head), restore its counts and record its total."""
    pool = store.pool
    run = await get_run(pool, run_id)
    assert run is not None
    cause = await store.get(started_event_id(run_id))
    if cause is None:
        raise ReplayError(f"the ReplayStarted event of run {run_id} is missing from the log")
    selection = await select(pool, selector, run.up_to_position)
    report = RunReport(run_id, selector, run.up_to_position, records=len(selection), resumed=resumed)
    report.events_scanned = selection.events_scanned
    report.pushed, report.unchanged, report.failed = run.pushed, run.unchanged, run.failed
    pending = [p for p in selection.positions if p > run.cursor_position]
    await pool.execute(
        "UPDATE replay_runs SET total = $2, events_scanned = $3, updated_at = now() WHERE id = $1",
        run_id,
        len(selection),
        selection.events_scanned,
    )
    progress(len(selection) - len(pending), len(selection))
    return RunStart(run, cause, report, pending)


async def save_progress(pool: asyncpg.Pool, report: RunReport, cursor: int) -> None:
    """The run's cursor (records up to this position are done) and counts, after each batch."""
    await pool.execute(
        "UPDATE replay_runs SET cursor_position = $2, pushed = $3, unchanged = $4, failed = $5, "
        "updated_at = now() WHERE id = $1",
        report.run_id,
        cursor,
        report.pushed,
        report.unchanged,
        report.failed,
    )


async def complete_run(store: PostgresEventStore, connection: str, run_id: str, completed: NewEvent) -> None:
    """Mark the run completed and record ``completed`` (its ``ReplayCompleted``) in one transaction."""
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE replay_runs SET status = 'completed', finished_at = now(), updated_at = now(), "
            "last_error = NULL WHERE id = $1",
            run_id,
        )
        await store.append_batch([AppendRequest(replay_stream(connection, run_id), [completed])], conn=conn)


async def _push_batch(
    pusher: ReplayPusher, store: PostgresEventStore, connection: str, items: Sequence[Selected],
    cause: RecordedEvent, report: RunReport,
) -> None:
    for item in items:
        if item.problem:
            report.failed += 1
            report.failures.append(f"{item.record}: {item.problem}")
    snapshots = [i.snapshot for i in items if i.snapshot is not None]
    if snapshots:
        _tally(report, await pusher.push_now(connection, snapshots, cause=cause, force=True))
    removals = [i.position for i in items if i.removal]
    if removals:
        # Through the pusher's batch handler, committed as its consumer would (one transaction).
        await (await pusher.handle(await events_at(store.pool, removals))).commit(store)
        report.pushed += len(removals)


# --- wiring -----------------------------------------------------------------------------------------------


@dataclass
class ReplayTools:
    """What a replay needs in a process: a HubSpot reader (dry run) and pushers (real run) for a connection."""

    connection: str
    reader: HubSpotReader
    make_pusher: Callable[[str], ReplayPusher]  # actor -> a pusher recording source=replay

    def check(self, selector: ReplaySelector) -> None:
        if selector.connection != self.connection:
            raise ReplayError(
                f"this process pushes for connection {self.connection!r} (CONNECTION_ID), "
                f"not {selector.connection!r}; run it with that connection's settings"
            )


@contextlib.asynccontextmanager
async def replay_tools(settings: Settings) -> AsyncIterator[ReplayTools]:
    """The outbound runtime's HubSpot client (with the portal's shared rate budget) as replay tools."""
    from services.outbound.app import outbound_runtime
    from services.outbound.pusher import Pusher

    async with outbound_runtime(settings, kleer=False, hubspot=True) as runtime:
        client = runtime.hubspot
        assert client is not None
        connection = runtime.outbound.connection

        def make_pusher(actor: str) -> ReplayPusher:
            return Pusher(
                runtime.store, {connection: client}, removal=runtime.outbound.removal, actor=actor, source=REPLAY_SOURCE
            )

        yield ReplayTools(connection, ClientReader(client), make_pusher)
