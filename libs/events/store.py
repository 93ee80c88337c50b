"""The event store contract, and its Postgres implementation.

Guarantees every implementation gives (checked by one shared test suite,
``tests/integration/events/test_store_contract.py``):

1. **Atomic batches.** ``append_batch`` stores all of its new events or none.
2. **Idempotent by event_id.** Appending an event whose ``event_id`` is stored
   already is a no-op; its stored position is returned with ``inserted=False``.
   Expected-version checks ignore such events, so a retried append succeeds.
3. **Optimistic concurrency.** With ``expected_version`` set, the append fails
   with ``ConcurrencyError`` unless the stream is at exactly that version
   (``NO_STREAM`` = 0: the stream must not exist). ``ANY`` skips the check.
4. **Per-stream versions** are 1, 2, 3, ... with no holes.
5. **Commit-ordered positions.** Positions grow in commit order: once a reader
   has seen position p, no event with a position <= p can appear later. (They
   are gap-free in this implementation, but readers must tolerate holes.)
6. **Read-your-writes.** Once ``append`` returns, every reader sees the events.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, NamedTuple, Protocol

import asyncpg
import orjson

from libs.events.envelope import (
    EventDataError,
    NewEvent,
    RecordedEvent,
    encode_json_object,
    recorded_event,
    wire_json,
)
from libs.observability import metrics

ANY = -1
NO_STREAM = 0

CONCURRENCY_SQLSTATE = "KS409"


class EventStoreError(Exception):
    """Base class of event store errors."""


class ConcurrencyError(EventStoreError):
    """The stream was not at the expected version: someone else appended first."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        self.stream, self.expected, self.actual = stream, expected, actual
        super().__init__(
            f"stream {stream!r} is at version {actual}, expected {expected}: "
            "another writer appended first; re-read the stream and decide again"
        )


@dataclass(frozen=True, slots=True)
class AppendRequest:
    stream: str
    events: Sequence[NewEvent]
    expected_version: int = ANY


class AppendResult(NamedTuple):
    """Where an event of an append is (a tuple: made by the thousand per batch, cheaper than a dataclass)."""

    event_id: uuid.UUID
    position: int
    version: int
    inserted: bool


class EventStore(Protocol):
    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: int = ANY, *, conn: Any = None
    ) -> list[AppendResult]: ...

    async def append_batch(
        self, requests: Sequence[AppendRequest], *, conn: Any = None
    ) -> list[AppendResult]: ...

    async def read_stream(
        self, stream: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]: ...

    async def read_all(
        self, after: int = 0, limit: int = 1000, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]: ...

    async def head(self) -> int: ...


_Row = tuple[uuid.UUID, str, str, dict[str, Any], dict[str, Any], int]


def _batch_rows(requests: Sequence[AppendRequest]) -> list[_Row]:
    """The batch as the append function's rows, each event once, checked (see migration 011)."""
    rows: list[_Row] = []
    seen: set[uuid.UUID] = set()
    for request in requests:
        stream = request.stream
        if not stream:
            raise EventDataError("an event stream name must not be empty")
        for i, event in enumerate(request.events):
            event_id = event.event_id
            known = len(seen)
            seen.add(event_id)
            if len(seen) == known:  # twice in this batch: stored once
                continue
            event_type = event.type
            if not event_type:
                raise EventDataError(f"an event in stream {stream!r} has no type")
            data, metadata = event.data, event.metadata
            if not isinstance(data, dict):
                encode_json_object(data, "data", event_type)  # raises, naming the event type
            if not isinstance(metadata, dict):
                encode_json_object(metadata, "metadata", event_type)
            rows.append((event_id, stream, event_type, data, metadata, request.expected_version if i == 0 else ANY))
    return rows


def _batch_document(rows: Sequence[_Row]) -> str:
    """One JSON document for the whole batch (one orjson call, not two per event)."""
    try:
        return orjson.dumps(rows).decode()
    except TypeError as exc:
        raise _unserialisable(rows, exc) from exc


def _unserialisable(rows: Sequence[_Row], exc: TypeError) -> EventDataError:
    """The error naming the event of ``rows`` whose data or metadata orjson refused with ``exc``."""
    for _, _, event_type, data, metadata, _ in rows:
        encode_json_object(data, "data", event_type)  # raises, naming the event type
        encode_json_object(metadata, "metadata", event_type)
    return EventDataError(f"an event of the batch is not JSON-serialisable: {exc}")


# The last argument, skip stored: true looks stored event ids up first; false leaves them to the unique index.
_APPEND_SQL = "SELECT event_id, position, version, inserted FROM kleer_sync_append($1::jsonb, $2::boolean)"
_APPEND_ONE_SQL = (
    "SELECT event_id, position, version, inserted "
    "FROM kleer_sync_append_one($1::uuid, $2::text, $3::text, $4::jsonb, $5::jsonb, $6::integer, $7::boolean)"
)


def _one_event_arguments(row: _Row) -> tuple[uuid.UUID, str, str, str, str, int]:
    """``kleer_sync_append_one``'s arguments before skip-stored (data and metadata as JSON text)."""
    event_id, stream, event_type, data, metadata, expected = row
    try:
        return (event_id, stream, event_type, orjson.dumps(data).decode(),
                "{}" if not metadata else orjson.dumps(metadata).decode(), expected)
    except TypeError as exc:
        raise _unserialisable([row], exc) from exc


# Batches of at least this many events appended in a caller's transaction go in by COPY (``_copy_append``):
# cheaper for the server per event than the append function, but two more round trips, which a small batch
# does not earn back, and more client CPU per event (each event's JSON encoded apart, then COPY's encoding).
# So the store's own transactions (the group commit of the webhook intake, one process whose CPU bounds it)
# keep the function: there COPY made bench_inbound's 100-event requests 26-28k events/s against 30-35k.
COPY_FROM_EVENTS = 500

# The ids and streams as JSON arrays: asyncpg checks each element of an array parameter in Python.
_BEGIN_SQL = (
    "SELECT event_id, stream, position, version FROM kleer_sync_append_begin("
    "ARRAY(SELECT jsonb_array_elements_text($1::jsonb)::uuid), ARRAY(SELECT jsonb_array_elements_text($2::jsonb)))"
)
_COPY_COLUMNS = ("position", "event_id", "stream", "version", "type", "data", "metadata")


async def _copy_append(conn: Any, batch: Sequence[_Row]) -> list[AppendResult]:
    """Append ``batch`` by COPY in ``conn``'s open transaction (see migration 016).

    A first attempt, in a savepoint, does not look the batch's event ids up among the stored ones: new
    ids (all of them, but for a retried command's) are what appenders of batches this large record, and
    the look-up was two fifths of the append lock's statement. A stored id shows as the unique violation
    of ``events_event_id_key`` (or, in a stream with an expectation, as a version conflict); then the
    savepoint is rolled back and the batch appended again with the look-up, as ``kleer_sync_append``
    does it.
    """
    try:
        async with conn.transaction():
            return await _copy_attempt(conn, batch, look_up_ids=False)
    except (asyncpg.PostgresError, ConcurrencyError) as exc:
        if isinstance(exc, asyncpg.PostgresError) and not _first_attempt_needs_the_lookup(exc):
            raise
    return await _copy_attempt(conn, batch, look_up_ids=True)


async def _copy_attempt(conn: Any, batch: Sequence[_Row], *, look_up_ids: bool) -> list[AppendResult]:
    """The append lock, the stored ids (``look_up_ids``) and the heads first, then the events numbered here,
    checked as ``kleer_sync_append`` checks them (a stored id is skipped, an expectation is the first new
    event's of its stream)."""
    streams = list(dict.fromkeys(row[1] for row in batch))
    ids = orjson.dumps([row[0] for row in batch]).decode() if look_up_ids else "[]"
    rows = await conn.fetch(_BEGIN_SQL, ids, orjson.dumps(streams).decode())
    stored: dict[uuid.UUID, AppendResult] = {}
    versions: dict[str, int] = {}
    head = 0
    for event_id, stream, position, version in rows:
        if event_id is not None:
            stored[event_id] = AppendResult(event_id, position, version, False)
        elif stream is not None:
            versions[stream] = version
        else:
            head = position
    results: list[AppendResult] = []
    records: list[tuple[int, uuid.UUID, str, int, str, str, str]] = []
    started: set[str] = set()  # streams whose first new event is numbered (it carries the expectation)
    dumps = orjson.dumps
    try:
        for row in batch:
            event_id, stream, event_type, data, metadata, expected = row
            if (hit := stored.get(event_id)) is not None:
                results.append(hit)
                continue
            version = versions.get(stream, 0)
            if stream not in started:
                started.add(stream)
                if expected >= 0 and version != expected:
                    raise ConcurrencyError(stream, expected, version)
            head += 1
            version += 1
            versions[stream] = version
            records.append((head, event_id, stream, version, event_type, dumps(data).decode(),
                            dumps(metadata).decode() if metadata else "{}"))
            results.append(AppendResult(event_id, head, version, True))
    except TypeError as exc:
        raise _unserialisable(batch, exc) from exc
    if records:
        await conn.copy_records_to_table("events", records=records, columns=_COPY_COLUMNS)
    return results


_EVENT_ID_KEY = "events_event_id_key"
_POSITION = attrgetter("position")


def _first_attempt_needs_the_lookup(exc: asyncpg.PostgresError) -> bool:
    """A first attempt (stored ids not looked up) failed in a way a stored id can cause."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return getattr(exc, "constraint_name", None) == _EVENT_ID_KEY
    return getattr(exc, "sqlstate", None) == CONCURRENCY_SQLSTATE


_FIELDS = ("position", "event_id", "stream", "version", "type", "data", "metadata", "recorded_at")
_COLUMNS = ", ".join(_FIELDS)
# A page of the log in which the events of the types in $3 carry only their position and type.
_READ_OF_TYPES_SQL = "SELECT {} FROM events WHERE position > $1 ORDER BY position LIMIT $2".format(
    ", ".join(f if f in ("position", "type") else f"CASE WHEN type = ANY($3::text[]) THEN NULL ELSE {f} END AS {f}"
              for f in _FIELDS)
)


class WireEvent(NamedTuple):
    """A stored event as a publisher sends it: ``wire`` is its ``RecordedEvent.to_json()``."""

    position: int
    stream: str
    type: str
    metadata: dict[str, Any]
    wire: bytes


class TypeFilter:
    """Which event types a reader wants, asked once per type; the types it refused so far are ``refused``."""

    def __init__(self, wanted: Callable[[str], bool]) -> None:
        self._wanted = wanted
        self._known: dict[str, bool] = {}
        self.refused: list[str] = []

    def __call__(self, event_type: str) -> bool:
        known = self._known.get(event_type)
        if known is None:
            known = self._known[event_type] = bool(self._wanted(event_type))
            if not known:
                self.refused.append(event_type)
        return known


def event_from_row(row: Sequence[Any]) -> RecordedEvent:
    """A row of ``_COLUMNS`` (jsonb as text) as a RecordedEvent."""
    position, event_id, stream, version, event_type, data, metadata, recorded_at = row
    return recorded_event(position, event_id, stream, version, event_type, orjson.loads(data),
                          {} if metadata == "{}" else orjson.loads(metadata), recorded_at)


class _PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection that knows when its release needs no session reset.

    asyncpg resets every connection it takes back (one more round trip: unlock
    advisory locks, close cursors, unlisten, reset settings). The store's own
    statements change none of that, so after one of them succeeds on a
    connection the store acquired, the store marks it and the reset is skipped;
    any other use of the pool gets the full reset.
    """

    __slots__ = ("_needs_no_reset",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._needs_no_reset = False

    def mark_session_untouched(self) -> None:
        self._needs_no_reset = True

    def take_session_untouched(self) -> bool:
        untouched, self._needs_no_reset = self._needs_no_reset, False
        return untouched


@asynccontextmanager
async def untouched_session(pool: Any) -> AsyncIterator[Any]:
    """A connection of ``pool`` (made by ``create_pool``) for statements that leave no session state behind (no
    SET, LISTEN, session advisory lock, open cursor or temporary table): once they succeed it goes back
    without the pool's session reset, a round trip and four commands less. After an error it gets the reset.
    """
    conn = await pool.acquire()
    try:
        yield conn
    except BaseException:
        await pool.release(conn)
        raise
    _mark_untouched(conn)
    await pool.release(conn)


def _mark_untouched(conn: Any) -> None:
    """The connection's release skips the session reset (a connection of another pool is left as it is)."""
    mark = getattr(conn, "mark_session_untouched", None)
    if mark is not None:
        mark()


async def _reset_session(conn: asyncpg.Connection) -> None:
    """The pool's reset (its open transaction, if any, was rolled back before)."""
    if isinstance(conn, _PooledConnection) and conn.take_session_untouched():
        return
    await conn.execute(conn.get_reset_query())


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    """An asyncpg pool set up for the event store. Raises a clear error when Postgres is unreachable.

    json and jsonb travel as str (asyncpg's built-in binary codecs); the store
    encodes and decodes them with orjson.
    """
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            connection_class=_PooledConnection,
            reset=_reset_session,
            **kwargs,
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise EventStoreError(
            f"cannot connect to PostgreSQL at {_safe_dsn(dsn)}: {exc}. "
            "Check DATABASE_URL and that the server is running (make test starts it on a dev machine)."
        ) from exc
    return pool


def _safe_dsn(dsn: str) -> str:
    """The DSN without its password, for error messages."""
    from urllib.parse import urlparse

    parsed = urlparse(dsn)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":****@")
        return parsed._replace(netloc=netloc).geturl()
    return dsn


# How long the store keeps an idle pooled connection back for its next statement (see _connection).
KEEP_CONNECTION_SECONDS = 0.02


def _usable(conn: Any) -> bool:
    """The pooled connection is still open and still ours."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:  # the pool took it back itself when the server closed it
        return False


class PostgresEventStore:
    """The event log in PostgreSQL (see the module docstring for the guarantees)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        keep_connection_seconds: float = KEEP_CONNECTION_SECONDS,
        copy_from_events: int = COPY_FROM_EVENTS,
    ) -> None:
        self.pool = pool
        self._keep_for = keep_connection_seconds
        self._copy_from = max(2, copy_from_events)
        self._kept: Any = None  # a pooled connection kept back after a statement, idle
        self._kept_timer: asyncio.TimerHandle | None = None
        self._releases: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection for one of the store's own statements.

        The store's statements leave no session state, so the connection goes back
        without a session reset. And a connection is kept back, idle, for up to
        ``keep_connection_seconds`` after a statement, for the store's next one:
        the pool's acquire and release take event loop turns and a task, about a
        quarter of a single-event append's CPU time on the client. It is kept only
        while the pool still has an idle connection or room for a new one, so
        another user of the pool waits for it at most that long, and only when
        the pool filled up meanwhile; ``pool.close()`` waits for it as long.
        """
        conn, self._kept = self._kept, None
        if conn is not None:
            self._kept_timer.cancel()  # type: ignore[union-attr]
            if not _usable(conn):  # the server went away meanwhile: the pool cleans it up
                await self.pool.release(conn)
                conn = None
        if conn is None:
            conn = await self.pool.acquire()
        try:
            yield conn
        except BaseException:
            await self.pool.release(conn)  # with the pool's session reset: the statement may not have ended
            raise
        _mark_untouched(conn)
        if self._kept is None and self._keep_for > 0 and _usable(conn) and self._pool_has_room():
            self._kept = conn
            self._kept_timer = asyncio.get_running_loop().call_later(self._keep_for, self._release_kept)
        else:
            await self.pool.release(conn)

    def _pool_has_room(self) -> bool:
        """Another acquire would not wait: an idle connection, or room for one more."""
        pool = self.pool
        return bool(pool.get_idle_size() > 0 or pool.get_size() < pool.get_max_size())

    def _release_kept(self) -> None:
        conn, self._kept = self._kept, None
        if conn is not None:
            task = asyncio.get_running_loop().create_task(self.pool.release(conn))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: int = ANY, *, conn: Any = None
    ) -> list[AppendResult]:
        return await self.append_batch([AppendRequest(stream, events, expected_version)], conn=conn)

    async def append_batch(
        self, requests: Sequence[AppendRequest], *, conn: Any = None
    ) -> list[AppendResult]:
        """Append every request's events in one transaction (``conn``'s, if given)."""
        batch = _batch_rows(requests)
        if not batch:
            return []
        if conn is not None and len(batch) >= self._copy_from:
            results = await self._append_by_copy(batch, conn)
        else:
            results = await self._append_by_function(batch, conn)
        results.sort(key=_POSITION)
        _count_appended(batch, results)
        return results

    async def _append_by_function(self, batch: Sequence[_Row], conn: Any) -> list[AppendResult]:
        """The batch through the append function (migrations 011 and 014), in ``conn``'s transaction or one
        of the store's own."""
        args: tuple[Any, ...]
        if len(batch) == 1:  # one event: the lighter function of migration 014, same guarantees
            sql, args = _APPEND_ONE_SQL, _one_event_arguments(batch[0])
        else:
            sql, args = _APPEND_SQL, (_batch_document(batch),)
        with metrics.EVENT_APPEND_SECONDS.time():
            try:
                if conn is not None:
                    # The caller's transaction: one attempt, stored ids looked up first.
                    rows = await conn.fetch(sql, *args, True)
                else:
                    async with self._connection() as own:
                        try:
                            rows = await own.fetch(sql, *args, False)
                        except asyncpg.PostgresError as exc:
                            if not _first_attempt_needs_the_lookup(exc):
                                raise
                            # Nothing was written (the attempt was its own transaction): a retry
                            # after a lost answer, or a real conflict. Looking stored ids up tells.
                            rows = await own.fetch(sql, *args, True)
            except asyncpg.PostgresError as exc:
                if getattr(exc, "sqlstate", None) == CONCURRENCY_SQLSTATE:
                    detail = orjson.loads(exc.detail or "{}")
                    raise ConcurrencyError(detail["stream"], detail["expected"], detail["actual"]) from None
                raise
        return [AppendResult(r[0], r[1], r[2], r[3]) for r in rows]

    async def _append_by_copy(self, batch: Sequence[_Row], conn: Any) -> list[AppendResult]:
        """A large batch in the caller's transaction (one is opened if it has none), by COPY
        (``_copy_append``), stored ids looked up first."""
        with metrics.EVENT_APPEND_SECONDS.time():
            if conn.is_in_transaction():
                return await _copy_append(conn, batch)
            async with conn.transaction():
                return await _copy_append(conn, batch)

    async def read_stream(
        self, stream: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        sql = f"SELECT {_COLUMNS} FROM events WHERE stream = $1 AND version >= $2 ORDER BY version"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        async with self._connection() as conn:
            rows = await conn.fetch(sql, stream, from_version)
        return [event_from_row(r) for r in rows]

    async def read_all(
        self, after: int = 0, limit: int = 1000, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        """Events with position > ``after`` in position order, at most ``limit``."""
        async with self._connection() as conn:
            if types:
                rows = await conn.fetch(
                    f"SELECT {_COLUMNS} FROM events WHERE position > $1 AND type = ANY($3::text[]) "
                    "ORDER BY position LIMIT $2",
                    after,
                    limit,
                    list(types),
                )
            else:
                rows = await conn.fetch(
                    f"SELECT {_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2",
                    after,
                    limit,
                )
        return [event_from_row(r) for r in rows]

    async def read_wire_of_types(self, after: int, limit: int, types: TypeFilter) -> tuple[list[WireEvent], int]:
        """For a publisher, like ``read_all(after, limit)`` but only the events whose type ``types`` accepts,
        as their wire form (``RecordedEvent.to_json()``) with what routing them takes; with them, the last
        position read (``after`` if none), so a reader moves past the rest.

        The relay does not publish HubSpot…Upserted facts, half the log: decoding their data was most of its
        cost of reading, and turning their documents into text most of the server's. The types ``types``
        refused before come back as their position and type alone; the documents of the others are
        published as Postgres returns them, never decoded and encoded again.
        """
        async with self._connection() as conn:
            rows = await conn.fetch(_READ_OF_TYPES_SQL, after, limit, types.refused)
        if not rows:
            return [], after
        loads = orjson.loads
        return [
            WireEvent(position, stream, event_type, {} if metadata == "{}" else loads(metadata),
                      wire_json(position, event_id, stream, version, event_type, data, metadata, recorded_at))
            for position, event_id, stream, version, event_type, data, metadata, recorded_at in rows
            if types(event_type)
        ], rows[-1]["position"]

    async def get(self, event_id: uuid.UUID) -> RecordedEvent | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM events WHERE event_id = $1", event_id)
        return event_from_row(row) if row else None

    async def stream_version(self, stream: str) -> int:
        async with self._connection() as conn:
            version = await conn.fetchval(
                "SELECT COALESCE(max(version), 0) FROM events WHERE stream = $1", stream
            )
        return int(version)

    async def head(self) -> int:
        async with self._connection() as conn:
            head = await conn.fetchval("SELECT COALESCE(max(position), 0) FROM events")
        metrics.LOG_HEAD_POSITION.set(head)
        return int(head)


def _count_appended(batch: Sequence[_Row], results: Sequence[AppendResult]) -> None:
    if len(batch) == 1:  # the common single event: no tally to build
        if results and results[0].inserted:
            metrics.EVENTS_APPENDED.labels(type=batch[0][2]).inc()
        return
    if len(results) == len(batch) and all(r.inserted for r in results):
        types = Counter(row[2] for row in batch)
    else:
        inserted = {r.event_id for r in results if r.inserted}
        types = Counter(row[2] for row in batch if row[0] in inserted)
    for event_type, count in types.items():
        metrics.EVENTS_APPENDED.labels(type=event_type).inc(count)
