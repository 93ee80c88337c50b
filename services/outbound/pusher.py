"""The outbound pusher: Kleer change events in, HubSpot batch upserts and associations out.

``Pusher.handle`` is the batch handler of the ``outbound-pusher`` consumer
(topic ``outbound.changes``). For each batch it

1. coalesces the events to the latest snapshot per record
   (``planning.coalesce``);
2. skips every snapshot whose fingerprint equals what HubSpot last got from us
   (``hubspot_ids.pushed_fingerprint``), so a replay or a duplicate makes no
   HubSpot write; ``Kleer…PushRequested`` forces the write;
3. batch-upserts the rest by ``kleer_id`` (``idProperty``), at most 100 per
   request, several requests in flight (the HubSpot client's shared rate
   budget paces them). A new record gets every mapped property; a record
   HubSpot already has from us gets only the properties that changed since our
   last push (the previous values are those of its last ``…Upserted`` event), so
   an edit someone made in HubSpot to another property is not reverted; and a
   trigger property someone edited in HubSpot since our last push (an edit the
   inbound sync has yet to bring to Kleer) is *held back*, not overwritten: the
   inbound handlers merge it into Kleer (a conflict there is decided by the
   conflict policy and recorded), and the next poll converges HubSpot;
4. writes the associations with v4 batch create (≤ 2,000 per request): invoice
   → company, subscription → company, project → company, line item → invoice
   or subscription, and deals where a workflow action named one. A parent not
   yet in HubSpot is *waited for* (``pending_associations``) and the link is
   written as soon as the parent lands. ``handle`` returns once the records
   are written and leaves this step to run while the consumer starts the next
   batch (its commit waits for it: ``HandlerResult.pending``);
5. handles removals: archive, or flag with ``kleer_deleted=true`` (see
   ``planning.RemovalPolicy``);
6. returns, for the consumer's single commit transaction, the
   ``HubSpot{Object}Upserted`` / ``…Archived`` events (caused by the change
   event, on the Kleer record's stream; an upsert holds what HubSpot now has
   from us, ``properties``, or names the change event whose snapshot that is,
   ``properties_from``: ``idmap.upserted_properties`` reads either), the id map, the own-write log (for
   objects HubSpot can sync back: companies and projects) and DLQ entries.

Failures: a transient HubSpot failure the client could not overcome raises, so
the consumer retries the batch (every write here is an idempotent upsert or
association put). A per-input failure (a 207 error, a validation error) parks
that record in the DLQ with HubSpot's message (source ``outbound-pusher``)
while the rest of the batch lands. A whole request refused as invalid is split
in halves until the inputs at fault are found.

``Pusher.push_now(connection, snapshots)`` does the same at once, outside the
consumer, for workflow actions; ``Pusher.redrive(entry)`` re-pushes the latest
snapshot of a dead-lettered record.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, NamedTuple, TypeAlias

import asyncpg
import orjson

from libs.events.consumer import HandlerResult
from libs.events.dlq import DeadLetter, DeadLetterQueue
from libs.events.envelope import NewEvent, RecordedEvent, causation
from libs.events.outage import database_unavailable
from libs.events.store import AppendRequest, PostgresEventStore
from libs.hubspot.client import HubSpotClient
from libs.hubspot.models import AssociationInput, RecordInput
from libs.hubspot.objects import ObjectType
from libs.mapping.loader import resolve
from libs.mapping.model import Mappings
from libs.mapping.objects import INBOUND_OBJECT_TYPES, KLEER_ID, PROJECT
from libs.observability import metrics
from libs.observability.logging import get_logger
from libs.records import RecordRef
from services.outbound import idmap
from services.outbound.consumer import COMMITS_BEHIND
from services.outbound.idmap import IdRow
from services.outbound.planning import (
    UPSERT_BATCH,
    Action,
    Change,
    Child,
    Link,
    Malformed,
    Pushed,
    RecordKey,
    RemovalPolicy,
    Waiting,
    association_batches,
    coalesce,
    decide,
    group_by,
    plan_links,
)
from services.outbound.snapshots import (
    CHANGED,
    PROPERTIES_FROM,
    PUSH_REQUESTED,
    ParentRef,
    Snapshot,
    archived_type,
    parse_event_type,
    upserted_type,
)
from services.own_writes import record_own_writes

log = get_logger(__name__)

PUSHER_SOURCE = "outbound-pusher"
REMOVED_FLAG = "kleer_deleted"  # the property a removal sets under RemovalPolicy.FLAG
# Per stream ($1), the latest inbound sync's HubSpot properties and log position.
_INBOUND_SYNCED_SQL = (
    "SELECT s.stream, b.props, b.position FROM unnest($1::text[]) AS s(stream) "
    "JOIN LATERAL (SELECT e.data->'hubspot_properties' AS props, e.position FROM events e "
    f"  WHERE e.stream = s.stream AND {idmap.INBOUND_SYNC_EVENT} ORDER BY e.version DESC LIMIT 1) b ON true"
)
# Records planned at a time (a multiple of UPSERT_BATCH): the next chunk's look-ups run while this one's
# upserts are out. A whole 5,000-event batch planned at once left each pusher 0.3 s a batch with no request out,
# and two pushers sharing the window finished their batches together (bench_outbound (b), 2026-12-07).
PLAN_CHUNK = 1_000
HELD_PREFIX = "held:"  # a pushed fingerprint with properties held back (never equal to a snapshot's)
LINK_ATTEMPTS = 5  # attempts at a batch's associations before its commit fails (as the consumer's for a batch)
LINK_RETRY_BASE_S = 0.2  # back-off between those attempts: up to this times 2 ** attempt, jittered


def echoing_properties(mappings: Mappings | None = None) -> dict[str, frozenset[str]]:
    """Per HubSpot object that syncs back to Kleer, the properties whose echo could start an inbound sync.

    Companies: the trigger properties (a change to any other property starts nothing, so its echo
    needs no suppression). Projects: every mapped property (the inbound side may configure any
    project property as a trigger). Other objects never sync back: their writes are not logged.
    """
    resolved = resolve(mappings)
    found: dict[str, frozenset[str]] = {}
    for kind in INBOUND_OBJECT_TYPES:
        mapping = resolved.object(kind)
        names = mapping.mapped_properties if kind == PROJECT else mapping.triggers
        found[mapping.hubspot_object.name] = frozenset(names)
    return found


def inbound_triggers(mappings: Mappings | None = None) -> dict[str, frozenset[str]]:
    """Per HubSpot object that syncs back to Kleer, the properties whose HubSpot edits reach Kleer."""
    resolved = resolve(mappings)
    return {
        (mapping := resolved.object(kind)).hubspot_object.name: frozenset(mapping.triggers)
        for kind in INBOUND_OBJECT_TYPES
    }


# One push's look-ups of inbound syncs (``Pusher._inbound_synced``): per record, HubSpot's properties as the
# inbound handlers last synced them and that sync's log position, or None: no inbound sync.
_SyncedMemo: TypeAlias = dict[RecordKey, tuple[Mapping[str, Any], int] | None]


class PushResult(NamedTuple):
    """The outcome for one record: ``created``, ``updated``, ``unchanged``, ``archived``, ``flagged``,
    ``forgotten`` (removed before it reached HubSpot) or ``failed`` (with ``error``).

    A tuple: one is made for every record pushed, 5,000 a batch (a frozen dataclass cost 5x more to build).
    """

    kind: str
    kleer_id: str
    hubspot_object: str
    outcome: str
    hubspot_id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class _Refused:
    """HubSpot refused one input: its category (``VALIDATION_ERROR``, ``CONFLICT``...) and message."""

    category: str
    message: str


@dataclass(frozen=True)
class _Park:
    connection: str
    record: str
    reason: str
    detail: Mapping[str, Any]
    payload: Mapping[str, Any]
    cause: RecordedEvent | None


@dataclass
class _Outcome:
    """Everything one push decided, to be committed in one transaction."""

    results: list[PushResult] = field(default_factory=list)
    id_rows: list[IdRow] = field(default_factory=list)
    new_ids: set[RecordKey] = field(default_factory=set)  # records hubspot_ids had no row of when the push began
    associated: list[tuple[RecordKey, str]] = field(default_factory=list)
    add_waiting: list[Waiting] = field(default_factory=list)
    resolved_waiting: list[Waiting] = field(default_factory=list)
    removed: list[RecordKey] = field(default_factory=list)  # their waiting associations are dropped
    appends: list[AppendRequest] = field(default_factory=list)
    own_writes: dict[tuple[str, str], list[tuple[str, Mapping[str, str]]]] = field(default_factory=dict)
    parks: list[_Park] = field(default_factory=list)

    @cached_property
    def folded(self) -> tuple[list[IdRow], list[tuple[RecordKey, str]]]:
        """The id rows with the new links of their records folded in, and the links of other records
        (``_with_links``); made once, when the push and its associations are done, for the commit and the
        overlay alike."""
        return _with_links(self.id_rows, self.associated)

    def link_mark(self) -> tuple[int, int, int, int]:
        """Where the association step's entries begin (``undo_links``)."""
        return len(self.associated), len(self.add_waiting), len(self.resolved_waiting), len(self.parks)

    def undo_links(self, mark: tuple[int, int, int, int]) -> None:
        """Forget what a failed association step recorded after ``mark``."""
        del self.associated[mark[0]:], self.add_waiting[mark[1]:], self.resolved_waiting[mark[2]:]
        del self.parks[mark[3]:]


@dataclass
class _Overlay:
    """What one consumer batch wrote, kept in memory until that batch's commit is surely done.

    The consumer commits batches N-1 and N while the pusher already works on
    batch N+1 (``services.outbound.consumer.COMMITS_BEHIND``), so N+1 must see
    their HubSpot ids, fingerprints and waiting associations here rather than in
    Postgres. N+1's own overlay joins them when its records are written, before
    its associations (which still need N-1's: the consumer waits for N-1's
    commit only after that): the pusher keeps the overlays of its last three
    batches.
    """

    rows: dict[RecordKey, IdRow]  # the hubspot_ids rows it writes, new associations folded in
    linked: dict[RecordKey, set[str]]  # associations written for records this batch did not upsert
    waiting: set[Waiting]
    resolved: set[Waiting]
    # Its commit is done: Postgres holds its rows, or newer ones (another pusher's, after a rebalance moved the
    # partition away and back). A look-up that starts after that reads Postgres alone.
    committed: bool = False

    def commit(self) -> None:
        self.committed = True

    @classmethod
    def of(cls, outcome: _Outcome) -> _Overlay:
        """A batch's records as written, before its associations (``link`` adds them)."""
        return cls({row.key: row for row in outcome.id_rows}, {}, set(), set())

    def link(self, outcome: _Outcome) -> None:
        """The batch's associations are written: its rows with their new links, and the links and waiting
        associations of other records."""
        rows, others = outcome.folded
        linked: dict[RecordKey, set[str]] = {}
        for key, parent in others:
            linked.setdefault(key, set()).add(parent)
        self.rows = {row.key: row for row in rows}
        self.linked, self.waiting, self.resolved = linked, set(outcome.add_waiting), set(outcome.resolved_waiting)

    def pushed(self, key: RecordKey) -> Pushed:
        """What this batch pushed of a record it wrote (made when asked: the next batch rarely asks)."""
        row = self.rows[key]
        return Pushed(row.hubspot_id, row.fingerprint, frozenset(row.associated), row.removed, row.properties)


class Pusher:
    """Writes Kleer snapshots to HubSpot. See the module docstring.

    ``portals`` maps each connection to the started ``HubSpotClient`` of its
    portal (the client carries the portal's shared rate budget).
    """

    def __init__(
        self,
        store: PostgresEventStore,
        portals: Mapping[str, HubSpotClient],
        *,
        removal: RemovalPolicy = RemovalPolicy.FLAG,
        actor: str = PUSHER_SOURCE,
        source: str = "hubspot",  # metadata ``source`` of the events it records (``replay`` for replays)
        mappings: Mappings | None = None,
    ) -> None:
        self.store = store
        self.pool: asyncpg.Pool = store.pool
        self.portals = dict(portals)
        self.removal = removal
        self.dlq = DeadLetterQueue(store)
        self.actor = actor
        self.source = source
        self._echoing = echoing_properties(mappings)
        self._triggers = inbound_triggers(mappings)
        # The last batches, newest last: as many as may be uncommitted while the next one is handled, and that one.
        self._overlays: deque[_Overlay] = deque(maxlen=COMMITS_BEHIND + 1)
        self._prepared: tuple[list[uuid.UUID], tuple[list[Change], list[Malformed]]] | None = None

    # --- entry points ---------------------------------------------------------------------------

    async def handle(self, events: Sequence[RecordedEvent]) -> HandlerResult:
        """The consumer's batch handler: HubSpot I/O here, bookkeeping returned for the commit.

        It returns once the records are written; their associations are written after that, while the
        consumer already starts the next batch (``HandlerResult.pending``: its commit waits for them).
        Writing a batch's associations took a pusher 0.2-0.4 s with few requests in flight (a line-item
        batch: 3 requests of 2,000 links, and the look-ups around them); two pushers doing that at once
        left HubSpot's rate window unused.
        """
        changes, malformed = self._coalesced(events)
        outcome, written, pushed = await self._push_records(changes)
        outcome.parks.extend(self._park_malformed(bad) for bad in malformed)
        overlay = _Overlay.of(outcome)
        self._overlays.append(overlay)
        linking = asyncio.ensure_future(self._link(written, pushed, outcome, overlay))
        return HandlerResult(
            appends=outcome.appends, writes=[self._writer(outcome)], pending=[linking], on_commit=[overlay.commit]
        )

    def prepare(self, events: Sequence[RecordedEvent]) -> None:
        """Coalesce the consumer's next batch ahead (its prefetch), while this one waits for HubSpot: ``handle``
        takes the result if it gets the very same events (a batch's 5,000 took 40-160 ms on a busy machine,
        with no request out)."""
        self._prepared = ([e.event_id for e in events], coalesce(events))

    def _coalesced(self, events: Sequence[RecordedEvent]) -> tuple[list[Change], list[Malformed]]:
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0] == [e.event_id for e in events]:
            return prepared[1]
        return coalesce(events)

    def forget_recent(self) -> None:
        """Drop what the last batches wrote from memory: they will not be committed (the consumer redoes them)."""
        self._overlays.clear()

    async def push_now(
        self,
        connection: str,
        snapshots: Sequence[Snapshot],
        *,
        cause: RecordedEvent | None = None,
        force: bool = False,
    ) -> list[PushResult]:
        """Upsert these snapshots and their associations now; record the same events as the pusher.

        For workflow actions ("push back at once"): build the snapshots with
        ``snapshots_for_push(kind, kleer_record, deal_id=...)``. ``cause`` (the
        command event, if any) becomes the events' causation. A snapshot HubSpot
        already has is not written again unless ``force``. Returns one
        ``PushResult`` per snapshot; failures are also parked in the DLQ. Raises
        when HubSpot stays unavailable (nothing is recorded then).
        """
        action = PUSH_REQUESTED if force else CHANGED
        changes = [Change(connection, s.kind, s.kleer_id, action, cause, s, force) for s in snapshots]
        outcome = await self._push(changes, sweep=False)
        await self._commit(outcome)
        return outcome.results

    async def redrive(self, entry: DeadLetter) -> None:
        """Re-push the latest snapshot (or removal) of a dead-lettered record; raises if it fails again."""
        ref = RecordRef.parse(entry.record)
        latest = await self._latest_change(entry.connection, ref)
        if latest is None:
            raise LookupError(f"no outbound change event on {ref.stream(entry.connection)} to re-push")
        changes, malformed = coalesce([latest])
        if malformed:
            raise ValueError(malformed[0].reason)
        forced = [replace(c, force=True) for c in changes]
        outcome = await self._push(forced, sweep=False)
        failed = [r for r in outcome.results if r.outcome == "failed"]
        if failed:
            raise RuntimeError(f"{entry.record} still fails: {failed[0].error}")
        await self._commit(outcome)

    async def sweep(self) -> int:
        """Write waiting associations whose parent has reached HubSpot meanwhile; returns how many."""
        outcome = _Outcome()
        await self._write_ready(await self._ready_links({}, sweep=True), outcome)
        if outcome.resolved_waiting or outcome.parks:
            await self._commit(outcome)
        return len(outcome.resolved_waiting)

    async def _commit(self, outcome: _Outcome) -> None:
        await HandlerResult(appends=outcome.appends, writes=[self._writer(outcome)]).commit(self.store)

    async def _latest_change(self, connection: str, ref: RecordRef) -> RecordedEvent | None:
        for event in reversed(await self.store.read_stream(ref.stream(connection))):
            if parse_event_type(event.type) is not None:
                return event
        return None

    # --- the push ---------------------------------------------------------------------------------

    async def _push(self, changes: Sequence[Change], *, sweep: bool) -> _Outcome:
        outcome, written, pushed = await self._push_records(changes)
        await self._associate(written, pushed, outcome, sweep=sweep)
        return outcome

    async def _link(
        self, written: Sequence[tuple[Change, str]], pushed: Mapping[RecordKey, Pushed], outcome: _Outcome,
        overlay: _Overlay,
    ) -> None:
        """A batch's associations (and the sweep of waiting ones), after its records; retried as a batch is.

        A failed attempt's links are forgotten before the next (writing a link again is harmless). A
        database outage, or HubSpot still failing after the last attempt, fails the batch's commit: nothing
        of it is committed, and the consumer takes it again (a restarted pusher, from its checkpoints).
        """
        for attempt in range(1, LINK_ATTEMPTS + 1):
            mark = outcome.link_mark()
            try:
                await self._associate(written, pushed, outcome, sweep=True)
            except Exception as exc:
                if database_unavailable(exc) or attempt == LINK_ATTEMPTS:
                    raise
                outcome.undo_links(mark)
                log.warning("writing associations failed; retrying", attempt=attempt, error=repr(exc))
                await asyncio.sleep(random.uniform(0, LINK_RETRY_BASE_S * 2**attempt))
                continue
            overlay.link(outcome)
            return

    async def _push_records(
        self, changes: Sequence[Change]
    ) -> tuple[_Outcome, list[tuple[Change, str]], dict[RecordKey, Pushed]]:
        """Upsert, archive or flag the records (associations not yet): the outcome so far, the records
        written with their HubSpot ids, and what HubSpot had from us before.

        Planned ``PLAN_CHUNK`` records at a time, per HubSpot object: each chunk's upserts go out (in
        hundreds, a request's worth; the rest waits for the next chunk of that object) while the next
        chunk is looked up, so a batch's first request leaves after a chunk's look-ups, not the batch's.
        """
        outcome = _Outcome()
        known = []
        for change in changes:
            if change.connection in self.portals:
                known.append(change)
            else:
                self._fail(
                    outcome, change, f"no HubSpot portal is configured for connection {change.connection!r}"
                )
        pushed: dict[RecordKey, Pushed] = {}
        synced: _SyncedMemo = {}
        removals: dict[Action, list[Change]] = {Action.ARCHIVE: [], Action.FLAG: []}
        running: list[asyncio.Future[Any]] = []  # the chunks' upserts, then the removals
        try:
            for group in group_by(known, lambda c: (c.connection, c.hubspot_object)).values():
                carried: list[Change] = []  # planned upserts short of a full request, for the next chunk
                for start in range(0, len(group), PLAN_CHUNK):
                    plan = await self._plan(group[start : start + PLAN_CHUNK], pushed, outcome, synced)
                    for action in removals:
                        removals[action].extend(plan[action])
                    ready = carried + plan[Action.UPSERT]
                    last = start + PLAN_CHUNK >= len(group)
                    cut = len(ready) if last else len(ready) // UPSERT_BATCH * UPSERT_BATCH
                    carried = ready[cut:]
                    if cut:
                        running.append(asyncio.ensure_future(self._upsert_all(ready[:cut], pushed, outcome, synced)))
            upserts = len(running)
            running.append(asyncio.ensure_future(self._archive_all(removals[Action.ARCHIVE], pushed, outcome)))
            running.append(asyncio.ensure_future(self._flag_all(removals[Action.FLAG], pushed, outcome)))
            answers = await asyncio.gather(*running)
        except BaseException:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
        return outcome, [item for answer in answers[:upserts] for item in answer], pushed

    async def _plan(
        self, changes: Sequence[Change], pushed: dict[RecordKey, Pushed], outcome: _Outcome, synced: _SyncedMemo
    ) -> dict[Action, list[Change]]:
        """What to do with each change (of one HubSpot object), by what HubSpot last got from us (added to
        ``pushed``); the skipped and forgotten ones are recorded in ``outcome`` here. For an object HubSpot
        syncs back, the inbound syncs of the records are looked up at the same time (into ``synced``): the
        upsert needs them for most records, and its look-up was one more round trip before a chunk's first
        request."""
        keys = [c.key for c in changes]
        if changes and self._triggers.get(changes[0].hubspot_object):
            found, _ = await asyncio.gather(self._pushed_state(keys), self._inbound_synced(changes, synced))
        else:
            found = await self._pushed_state(keys)
        pushed.update(found)
        plan: dict[Action, list[Change]] = {action: [] for action in Action}
        for change in changes:
            plan[decide(change, found.get(change.key), self.removal)].append(change)
        stale = await self._pushed_before_an_inbound_sync(plan[Action.UPSERT], found, synced)
        if stale:
            plan[Action.UPSERT] = [c for c in plan[Action.UPSERT] if c.key not in stale]
            plan[Action.SKIP].extend(c for c in changes if c.key in stale)
        for change in plan[Action.SKIP]:
            outcome.results.append(
                PushResult(change.kind, change.kleer_id, change.hubspot_object, "unchanged",
                           found[change.key].hubspot_id)
            )
        for change in plan[Action.FORGET]:
            outcome.results.append(PushResult(change.kind, change.kleer_id, change.hubspot_object, "forgotten"))
        return plan

    async def _pushed_before_an_inbound_sync(
        self, changes: Sequence[Change], pushed: Mapping[RecordKey, Pushed], synced: _SyncedMemo
    ) -> set[RecordKey]:
        """The records whose snapshot is the one we last pushed, recorded before an inbound sync since: stale.

        An inbound write marks our last push as no longer what HubSpot holds (``HUBSPOT_AHEAD_PREFIX``),
        so that Kleer going back to the values we pushed is pushed again. A change event with those very
        values recorded *before* that sync is no such change: it is the one we pushed, still queued (a
        workflow action pushes its record at once, before this consumer reaches the event). Written now,
        it would put Kleer's older values over the HubSpot edit the handlers have just synced.
        """
        candidates = [
            c for c in changes
            if not c.force and c.snapshot is not None
            and (before := pushed.get(c.key)) is not None
            and before.fingerprint == idmap.HUBSPOT_AHEAD_PREFIX + c.snapshot.fingerprint
        ]
        if not candidates:
            return set()
        _, synced_at = await self._inbound_synced(candidates, synced)
        stale = {c.key for c in candidates if _recorded_before(c, synced_at.get(c.key))}
        if stale:
            log.info("queued snapshots already pushed before an inbound sync left alone", records=len(stale))
        return stale

    async def _upsert_all(
        self, changes: Sequence[Change], pushed: Mapping[RecordKey, Pushed], outcome: _Outcome, synced: _SyncedMemo
    ) -> list[tuple[Change, str]]:
        """Upsert every change, one batch call per (portal, object); (change, HubSpot id) of those that landed.

        A record HubSpot has from us gets only the properties that changed since that push: a
        full snapshot would revert what someone edited in HubSpot meanwhile (another property).
        A new record, a forced push (replay, redrive) or one whose last push is unknown gets all.
        """
        previous = await self._previous_properties(changes, pushed)
        sending = {c.key: _changed_properties(_snapshot(c).properties, previous.get(c.key)) for c in changes}
        for change in changes:
            before = pushed.get(change.key)
            if before is not None and before.removed and REMOVED_FLAG not in sending[change.key]:
                # Back in Kleer after a removal (or a removal Kleer did not confirm): the flag goes.
                sending[change.key] = {**sending[change.key], REMOVED_FLAG: "false"}
        first = {c.key for c in changes if pushed.get(c.key) is None and not c.force}
        held = await self._hold_hubspot_edits(changes, previous, sending, first, synced)
        results = await self._upsert_groups(changes, sending)
        # A partial update that created the record (someone deleted it in HubSpot): send it whole.
        recreated = [c for c, r in results if isinstance(r, tuple) and r[1] and c.key in previous]
        if recreated:
            for c in recreated:
                sending[c.key] = _snapshot(c).properties
            again = {c.key: r for c, r in await self._upsert_groups(recreated, sending)}
            results = [(c, again.get(c.key, r)) for c, r in results]
        written: list[tuple[Change, str]] = []
        for change, result in results:
            if isinstance(result, _Refused):
                self._fail(outcome, change, result.message, category=result.category)
                continue
            hubspot_id, created = result
            written.append((change, hubspot_id))
            self._record_upsert(
                outcome, change, hubspot_id, created, pushed.get(change.key), sending[change.key],
                held.get(change.key),
            )
        for hubspot_object, count in Counter(c.hubspot_object for c, _ in written).items():
            metrics.HUBSPOT_RECORDS_UPSERTED.labels(object_type=hubspot_object).inc(count)
        return written

    async def _previous_properties(
        self, changes: Sequence[Change], pushed: Mapping[RecordKey, Pushed]
    ) -> dict[RecordKey, Mapping[str, str]]:
        """What HubSpot holds of each record it has from us (updates only): the properties of our last push
        (in memory if this process made it, else from the log), with the values an inbound sync recorded
        after that push laid over them (HubSpot's edits that reached Kleer since)."""
        updates = [c.key for c in changes
                   if not c.force and (before := pushed.get(c.key)) is not None and not before.removed]
        logged = await idmap.last_pushed_properties(self.pool, updates)
        found: dict[RecordKey, Mapping[str, str]] = {}
        for key in updates:
            in_memory = pushed[key].properties
            from_log, synced = logged.get(key, (None, None))
            base = in_memory if in_memory is not None else from_log
            if base is None:
                continue
            if synced:
                base = {**base, **{name: value for name, value in synced.items() if name in base}}
            found[key] = base
        return found

    async def _hold_hubspot_edits(
        self,
        changes: Sequence[Change],
        previous: Mapping[RecordKey, Mapping[str, str]],
        sending: dict[RecordKey, Mapping[str, str]],
        first: Set[RecordKey],
        synced_memo: _SyncedMemo,
    ) -> dict[RecordKey, dict[str, str]]:
        """Take out of ``sending`` the trigger properties HubSpot holds an unsynced edit of; returns them.

        A trigger property whose HubSpot value is neither what we last pushed nor what we would
        send now was edited in HubSpot after our last push, and that edit is on its way to Kleer
        (the inbound handlers merge it, deciding a conflict by the configured policy). Writing the
        older Kleer value over it would lose the edit without a trace, so it is held back: the
        record's pushed properties keep the value we last sent for it (the merge base), and the
        next poll of the Kleer record, after the inbound write, sends what Kleer then holds.

        The first push of a record (``first``) has no last push; if the inbound handlers created
        or updated the Kleer record from HubSpot, HubSpot's values as they synced them are the
        base instead: a company created in HubSpot and edited there again before the first push
        of its new Kleer client keeps that edit. Without an inbound sync there is no base and
        nothing is held. Returns, per record, the held properties with their base value.
        """
        candidates: dict[RecordKey, tuple[Change, list[str]]] = {}
        for change in changes:
            triggers = self._triggers.get(change.hubspot_object)
            if not triggers or (change.key not in previous and change.key not in first):
                continue
            names = [name for name in sending[change.key] if name in triggers]
            if names:
                candidates[change.key] = (change, names)
        synced, synced_at = await self._inbound_synced([c for c, _ in candidates.values()], synced_memo)
        asking: dict[tuple[str, str], list[tuple[Change, list[str]]]] = {}
        bases: dict[RecordKey, Mapping[str, str]] = {}
        for key, (change, names) in candidates.items():
            base = previous.get(key)
            if base is None:
                if key not in synced:
                    continue  # never synced from HubSpot: no edit there to keep
                base = {name: _text(value) for name, value in synced[key].items()}
            bases[key] = base
            asking.setdefault((change.connection, change.hubspot_object), []).append((change, names))
        held: dict[RecordKey, dict[str, str]] = {}
        for (connection, hubspot_object), wanted in asking.items():
            properties = sorted({name for _, names in wanted for name in names})
            result = await self.portals[connection].batch_read(
                ObjectType(hubspot_object), [c.kleer_id for c, _ in wanted], properties=properties,
                id_property=KLEER_ID)
            for read in result.succeeded:  # a record HubSpot no longer has is not held: the upsert recreates it
                change, names = wanted[read.index]
                before, now = bases[change.key], read.record.properties
                known = [before, sending[change.key], synced.get(change.key, {})]  # values Kleer has or had
                # A snapshot recorded before the latest inbound sync is older than the Kleer record that sync
                # merged (it read Kleer live): where HubSpot still holds what the sync brought to Kleer, the
                # snapshot's value is stale (a merge Kleer won queues its own snapshot after the sync).
                stale = _recorded_before(change, synced_at.get(change.key))
                keep = {name: before.get(name, "") for name in names
                        if _text(now.get(name)) not in {_text(k.get(name)) for k in known}
                        or (stale and _text(now.get(name)) == _text(synced[change.key].get(name)))}
                if keep:
                    held[change.key] = keep
                    sending[change.key] = {k: v for k, v in sending[change.key].items() if k not in keep} or {
                        KLEER_ID: change.kleer_id}
        if held:
            metrics.HUBSPOT_EDITS_HELD.inc(sum(len(v) for v in held.values()))
            log.info("HubSpot edits not yet in Kleer held back from the push", records=len(held),
                     properties=sorted({name for v in held.values() for name in v})[:20])
        return held

    async def _inbound_synced(
        self, changes: Sequence[Change], memo: _SyncedMemo
    ) -> tuple[dict[RecordKey, Mapping[str, Any]], dict[RecordKey, int]]:
        """Per record, HubSpot's properties as the inbound handlers last synced them into Kleer, and the log
        position of that sync. ``memo``: what this push looked up already (records without a sync too); only
        the others are looked up, and added to it."""
        streams = {idmap.record_stream(c.key): c.key for c in changes if c.key not in memo}
        if streams:
            rows = await self.pool.fetch(_INBOUND_SYNCED_SQL, list(streams))
            memo.update(dict.fromkeys(streams.values()))
            for row in rows:
                props = row["props"]
                props = orjson.loads(props) if isinstance(props, str | bytes) else props
                if isinstance(props, Mapping):
                    memo[streams[row["stream"]]] = (props, int(row["position"]))
        found: dict[RecordKey, Mapping[str, Any]] = {}
        positions: dict[RecordKey, int] = {}
        for change in changes:
            if (hit := memo[change.key]) is not None:
                found[change.key], positions[change.key] = hit
        return found, positions

    async def _upsert_groups(
        self, changes: Sequence[Change], sending: Mapping[RecordKey, Mapping[str, str]]
    ) -> list[tuple[Change, tuple[str, bool] | _Refused]]:
        groups = group_by(changes, lambda c: (c.connection, c.hubspot_object))
        answers = await asyncio.gather(
            *(self._upsert(self.portals[key[0]], key[1], group, sending) for key, group in groups.items())
        )
        return [item for answer in answers for item in answer]

    async def _upsert(
        self,
        client: HubSpotClient,
        hubspot_object: str,
        changes: Sequence[Change],
        sending: Mapping[RecordKey, Mapping[str, str]],
    ) -> list[tuple[Change, tuple[str, bool] | _Refused]]:
        """Batch upsert by ``kleer_id``; a request refused as a whole is split until the culprits are found."""
        inputs = [RecordInput(sending[c.key], id=c.kleer_id) for c in changes]
        result = await client.batch_upsert(ObjectType(hubspot_object), inputs, id_property=KLEER_ID)
        outcomes: list[tuple[Change, tuple[str, bool] | _Refused]] = [
            (changes[s.index], (s.id, bool(s.new))) for s in result.succeeded
        ]
        refused: list[Change] = []
        for failure in result.failed:
            if failure.whole_chunk and len(changes) > 1:
                refused.append(changes[failure.index])
            else:
                outcomes.append((changes[failure.index], _Refused(failure.category, failure.message)))
        if refused:
            # Each half is one request; halving a refused chunk of 100 finds one bad input in ~14 requests.
            middle = (min(len(refused), UPSERT_BATCH) + 1) // 2
            halves = [refused[i : i + middle] for i in range(0, len(refused), middle)]
            for answer in await asyncio.gather(
                *(self._upsert(client, hubspot_object, h, sending) for h in halves)
            ):
                outcomes.extend(answer)
        return outcomes

    def _record_upsert(
        self,
        outcome: _Outcome,
        change: Change,
        hubspot_id: str,
        created: bool,
        before: Pushed | None,
        sent: Mapping[str, str],
        held: Mapping[str, str] | None = None,
    ) -> None:
        snapshot = change.snapshot
        assert snapshot is not None
        # What HubSpot holds from us: the snapshot, but the value we last sent for a held-back property
        # (and a fingerprint no snapshot has, so the next snapshot of the record is pushed again).
        properties = {**snapshot.properties, **held} if held else snapshot.properties
        fingerprint = f"{HELD_PREFIX}{snapshot.fingerprint}" if held else snapshot.fingerprint
        if before is None:
            outcome.new_ids.add(change.key)
        outcome.id_rows.append(
            _id_row(
                change,
                hubspot_id,
                fingerprint,
                sorted(_associated(before, hubspot_id)),
                properties=properties,
            )
        )
        hubspot_object = change.hubspot_object
        data: dict[str, Any] = {
            "kleer_id": change.kleer_id,
            "kind": change.kind,
            "hubspot_object": hubspot_object,
            "hubspot_id": hubspot_id,
            "created": created,
            "fingerprint": fingerprint,
        }
        cause = change.event
        cause_id = str(cause.event_id) if cause is not None else None  # made once: a microsecond each time
        if cause is not None and cause.data.get("properties") is properties:
            # What HubSpot holds from us is the snapshot the change event (our cause) carries: named, not
            # repeated (the properties were half of every event the pusher records, and most of its COPY).
            data[PROPERTIES_FROM] = cause_id
        else:
            data["properties"] = properties  # what HubSpot holds from us now
        if sent is not properties:  # the properties this write sent (the rest were unchanged or held); absent
            data["written"] = sorted(sent)  # when it sent them all (a first push: a third of the event's size)
        if held:
            data["held"] = sorted(held)
        self._append(outcome, change, upserted_type(hubspot_object), data, cause_id)
        self._own_write(outcome, change, hubspot_id, sent, created=created)
        outcome.results.append(
            PushResult(change.kind, change.kleer_id, hubspot_object, "created" if created else "updated", hubspot_id)
        )

    def _append(
        self, outcome: _Outcome, change: Change, event_type: str, data: dict[str, Any], cause_id: str | None = None
    ) -> None:
        """Record ``event_type`` on the Kleer record's stream, caused by the change's event (if any; its id as
        text in ``cause_id``, if the caller has it already)."""
        cause = change.event
        metadata = {"actor": self.actor, "source": self.source}
        if cause is not None:
            metadata.update(causation(cause, cause_id))
        outcome.appends.append(AppendRequest(idmap.record_stream(change.key), [NewEvent(event_type, data, metadata)]))

    def _own_write(
        self,
        outcome: _Outcome,
        change: Change,
        hubspot_id: str,
        properties: Mapping[str, str],
        *,
        created: bool = False,
    ) -> None:
        """Log what HubSpot could echo back as a webhook: properties inbound sync reads, on objects it syncs.

        A record we just created echoes only the values we set (HubSpot reports no change for an empty one).
        """
        echoing = self._echoing.get(change.hubspot_object)
        if echoing is None:
            return
        logged = {p: v for p in echoing if p in properties and ((v := properties[p]) or not created)}
        if logged:
            outcome.own_writes.setdefault((change.connection, change.hubspot_object), []).append(
                (hubspot_id, logged)
            )

    # --- removals -----------------------------------------------------------------------------------

    async def _archive_all(
        self, changes: Sequence[Change], pushed: Mapping[RecordKey, Pushed], outcome: _Outcome
    ) -> None:
        for (connection, hubspot_object), group in group_by(
            changes, lambda c: (c.connection, c.hubspot_object)
        ).items():
            ids = [pushed[c.key].hubspot_id for c in group]
            await self.portals[connection].batch_archive(ObjectType(hubspot_object), ids)
            for change, hubspot_id in zip(group, ids, strict=True):
                self._record_removal(outcome, change, hubspot_id, pushed[change.key], "archived")

    async def _flag_all(
        self, changes: Sequence[Change], pushed: Mapping[RecordKey, Pushed], outcome: _Outcome
    ) -> None:
        flag = {REMOVED_FLAG: "true"}
        for (connection, hubspot_object), group in group_by(
            changes, lambda c: (c.connection, c.hubspot_object)
        ).items():
            inputs = [RecordInput(flag, id=pushed[c.key].hubspot_id) for c in group]
            result = await self.portals[connection].batch_update(ObjectType(hubspot_object), inputs)
            failures = {f.index: f for f in result.failed}
            for index, change in enumerate(group):
                hubspot_id = pushed[change.key].hubspot_id
                failure = failures.get(index)
                if failure is not None and failure.category != "OBJECT_NOT_FOUND":
                    self._fail(outcome, change, failure.message, category=failure.category)
                    continue
                # Already gone from HubSpot (someone deleted it there) counts as done.
                self._record_removal(outcome, change, hubspot_id, pushed[change.key], "flagged")
                if failure is None:
                    self._own_write(outcome, change, hubspot_id, flag)

    def _record_removal(
        self, outcome: _Outcome, change: Change, hubspot_id: str, before: Pushed, how: str
    ) -> None:
        flagged = how == "flagged"
        outcome.removed.append(change.key)
        outcome.id_rows.append(
            _id_row(change, hubspot_id, None, sorted(before.associated) if flagged else [], removed=True)
        )
        data: dict[str, Any] = {
            "kleer_id": change.kleer_id,
            "kind": change.kind,
            "hubspot_object": change.hubspot_object,
            "hubspot_id": hubspot_id,
        }
        if flagged:
            data["properties"] = {REMOVED_FLAG: "true"}
        event_type = upserted_type(change.hubspot_object) if flagged else archived_type(change.hubspot_object)
        self._append(outcome, change, event_type, data)
        outcome.results.append(
            PushResult(change.kind, change.kleer_id, change.hubspot_object, how, hubspot_id)
        )

    # --- associations ---------------------------------------------------------------------------------

    async def _associate(
        self,
        written: Sequence[tuple[Change, str]],
        pushed: Mapping[RecordKey, Pushed],
        outcome: _Outcome,
        *,
        sweep: bool,
    ) -> None:
        here: dict[RecordKey, str] = {change.key: hubspot_id for change, hubspot_id in written}
        children = []
        for change, hubspot_id in written:
            assert change.snapshot is not None
            children.append(
                Child(
                    change.connection,
                    change.kind,
                    change.kleer_id,
                    hubspot_id,
                    change.snapshot.parents,
                    # A forced push (replay) puts its associations again too: they are idempotent.
                    frozenset() if change.force else _associated(pushed.get(change.key), hubspot_id),
                )
            )
        parent_keys = [
            (c.connection, p.kind, p.kleer_id) for c in children for p in c.parents if p.kleer_id is not None
        ]
        known = {**await self._hubspot_ids([k for k in parent_keys if k not in here]), **here}
        links, waiting, unsupported = plan_links(
            children, lambda connection, parent: known.get((connection, parent.kind, parent.kleer_id or ""))
        )
        for pair in unsupported:
            log.warning("association type unknown; link skipped", pair=pair)
        outcome.add_waiting.extend(waiting)
        failed = await self._write_links(links, outcome)
        outcome.associated.extend(
            (link.child_key, link.parent.key) for link in links if _pair(link) not in failed
        )
        # Children that waited for a parent written now, and (sweep) any others whose parent has landed.
        await self._write_ready(await self._ready_links(here, sweep=sweep), outcome)

    async def _ready_links(self, here: Mapping[RecordKey, str], *, sweep: bool) -> list[tuple[Link, Waiting]]:
        ready: dict[Waiting, tuple[str, str]] = {}
        overlays = self._uncommitted()  # before Postgres is read
        resolved = {row for overlay in overlays for row in overlay.resolved}
        waiting = [
            row
            for row in dict.fromkeys(
                [*await idmap.waiting_for(self.pool, list(here)), *_waiting_in_memory(overlays, here)]
            )
            if row not in resolved
        ]
        child_ids = await self._hubspot_ids([(w.connection, w.child_kind, w.child_kleer_id) for w in waiting])
        for row in waiting:
            child = child_ids.get((row.connection, row.child_kind, row.child_kleer_id))
            parent = here.get((row.connection, row.parent.kind, row.parent.kleer_id or ""))
            if child is not None and parent is not None:
                ready[row] = (child, parent)
        if sweep:
            for found in await idmap.ready_waiting(self.pool):
                if found.waiting not in resolved:
                    ready.setdefault(found.waiting, (found.child_hubspot_id, found.parent_hubspot_id))
        links: list[tuple[Link, Waiting]] = []
        for row, (child_id, parent_id) in ready.items():
            orphan = Child(
                row.connection, row.child_kind, row.child_kleer_id, child_id, (row.parent,), frozenset()
            )
            planned, _, _ = plan_links([orphan], _fixed(parent_id))
            links.extend((link, row) for link in planned)
        return links

    def _uncommitted(self) -> list[_Overlay]:
        """The overlays of the batches whose commit is not done (asked before Postgres is read: a commit done
        meanwhile is in what it reads, or not; its overlay is laid over it either way)."""
        return [overlay for overlay in self._overlays if not overlay.committed]

    async def _pushed_state(self, keys: Sequence[RecordKey]) -> dict[RecordKey, Pushed]:
        """What HubSpot last got from us: Postgres, overlaid with the batches not yet surely committed."""
        overlays = self._uncommitted()
        pushed = await idmap.load_pushed(self.pool, keys)
        wanted = set(keys)
        for overlay in overlays:
            # dict.keys() & set walks the smaller side; set.intersection(dict) walked the overlay's every row
            # (5,000 a batch) at each of a batch's look-ups (one per chunk planned, and the links').
            for key in overlay.linked.keys() & wanted:
                if key in pushed:
                    p = pushed[key]
                    pushed[key] = Pushed(
                        p.hubspot_id, p.fingerprint, p.associated | overlay.linked[key], p.removed
                    )
            for key in overlay.rows.keys() & wanted:
                logged = pushed.get(key)
                if logged is not None and (logged.fingerprint or "").startswith(idmap.HUBSPOT_AHEAD_PREFIX):
                    continue  # an inbound sync since: HubSpot holds more than the push this batch remembers
                pushed[key] = overlay.pushed(key)
        return pushed

    async def _hubspot_ids(self, keys: Sequence[RecordKey]) -> dict[RecordKey, str]:
        return {key: p.hubspot_id for key, p in (await self._pushed_state(keys)).items() if not p.removed}

    async def _write_ready(self, ready: Sequence[tuple[Link, Waiting]], outcome: _Outcome) -> None:
        failed = await self._write_links([link for link, _ in ready], outcome)
        for link, row in ready:
            if _pair(link) not in failed:
                outcome.associated.append((link.child_key, link.parent.key))
                outcome.resolved_waiting.append(row)

    async def _write_links(self, links: Sequence[Link], outcome: _Outcome) -> set[tuple[str, str, str, str]]:
        """Write links, one batch call per (portal, from object, to object); returns the failed pairs."""
        failed: set[tuple[str, str, str, str]] = set()

        async def write(key: tuple[str, str, str], part: Sequence[Link]) -> None:
            connection, from_object, to_object = key
            inputs = [AssociationInput(link.from_id, link.to_id, link.type_id) for link in part]
            result = await self.portals[connection].associate_batch(
                ObjectType(from_object), ObjectType(to_object), inputs
            )
            for failure in result.failed:
                link = part[failure.index]
                failed.add(_pair(link))
                outcome.parks.append(
                    _Park(
                        connection,
                        str(RecordRef("kleer", link.child_kind, link.child_kleer_id)),
                        f"HubSpot refused the association {from_object} {link.from_id} -> {to_object} "
                        f"{link.to_id}: {failure.message}",
                        {"category": failure.category, "parent": link.parent.key},
                        {"association": {"from": link.from_id, "to": link.to_id, "type_id": link.type_id}},
                        None,
                    )
                )
            if result.written:
                metrics.HUBSPOT_ASSOCIATIONS_WRITTEN.labels(from_type=from_object, to_type=to_object).inc(
                    result.written
                )

        await asyncio.gather(*(write(key, part) for key, part in association_batches(links)))
        return failed

    # --- failures ---------------------------------------------------------------------------------------

    def _fail(self, outcome: _Outcome, change: Change, message: str, *, category: str = "") -> None:
        outcome.results.append(
            PushResult(change.kind, change.kleer_id, change.hubspot_object, "failed", error=message)
        )
        data = (
            change.snapshot.to_event_data()
            if change.snapshot is not None
            else {"kleer_id": change.kleer_id, "kind": change.kind}
        )
        outcome.parks.append(
            _Park(
                change.connection,
                change.record,
                f"HubSpot refused {change.hubspot_object} {change.kleer_id}: {message}",
                {"category": category, "hubspot_object": change.hubspot_object, "action": change.action},
                {"type": change.event.type if change.event is not None else change.action, "data": data},
                change.event,
            )
        )

    @staticmethod
    def _park_malformed(bad: Malformed) -> _Park:
        try:
            connection, ref = RecordRef.from_stream(bad.event.stream)
            record = str(ref)
        except ValueError:
            connection, record = bad.event.stream.partition("/")[0], bad.event.stream
        return _Park(
            connection, record, bad.reason, {}, {"type": bad.event.type, "data": bad.event.data}, bad.event
        )

    # --- commit -----------------------------------------------------------------------------------------

    def _writer(self, outcome: _Outcome) -> Callable[[asyncpg.Connection], Awaitable[None]]:
        async def write(conn: asyncpg.Connection) -> None:
            id_rows, others = outcome.folded  # once the associations are written
            await idmap.save_ids(conn, id_rows, new=outcome.new_ids)
            await idmap.add_associated(conn, others)
            await idmap.remove_waiting(conn, outcome.resolved_waiting)
            await idmap.add_waiting(conn, outcome.add_waiting)
            await idmap.forget_waiting(conn, outcome.removed)
            for (connection, hubspot_object), writes in outcome.own_writes.items():
                await record_own_writes(conn, connection, hubspot_object, writes)
            for park in outcome.parks:
                await self.dlq.park(
                    conn,
                    source=PUSHER_SOURCE,
                    connection=park.connection,
                    record=park.record,
                    reason=park.reason,
                    detail=park.detail,
                    payload=park.payload,
                    cause=park.cause,
                )

        return write


def _waiting_in_memory(overlays: Sequence[_Overlay], parents: Mapping[RecordKey, str]) -> list[Waiting]:
    return [
        row
        for overlay in overlays
        for row in overlay.waiting
        if (row.connection, row.parent.kind, row.parent.kleer_id or "") in parents
    ]


def _with_links(
    rows: Sequence[IdRow], links: Sequence[tuple[RecordKey, str]]
) -> tuple[list[IdRow], list[tuple[RecordKey, str]]]:
    """Fold new links into the id rows written anyway; the rest (records not written now) stay separate."""
    by_key: dict[RecordKey, list[str]] = {}
    for key, parent in links:
        by_key.setdefault(key, []).append(parent)
    folded = []
    for row in rows:
        parents = by_key.pop(row.key, None)
        if parents:  # a new row, as replace() would make, at a fifth of its cost (94,000 a full sync)
            row = IdRow(row.connection, row.kind, row.kleer_id, row.hubspot_object, row.hubspot_id,
                        row.fingerprint, [*row.associated, *parents], row.removed, row.properties)
        folded.append(row)
    return folded, [(key, parent) for key, parents in by_key.items() for parent in parents]


def _id_row(
    change: Change,
    hubspot_id: str,
    fingerprint: str | None,
    associated: Sequence[str],
    *,
    removed: bool = False,
    properties: Mapping[str, str] | None = None,
) -> IdRow:
    """The ``hubspot_ids`` row of a record this push wrote (or removed)."""
    return IdRow(
        change.connection,
        change.kind,
        change.kleer_id,
        change.hubspot_object,
        hubspot_id,
        fingerprint,
        associated,
        removed=removed,
        properties=properties,
    )


def _recorded_before(change: Change, position: int | None) -> bool:
    """``change`` is a Kleer change event recorded in the log before ``position``."""
    event = change.event
    return (position is not None and event is not None and event.position < position
            and parse_event_type(event.type) == (change.kind, CHANGED))


def _text(value: Any) -> str:
    """A property value as HubSpot returns it: a string, empty for none."""
    return str(value) if value is not None else ""


def _changed_properties(current: Mapping[str, str], previous: Mapping[str, str] | None) -> Mapping[str, str]:
    """What to send: everything without a previous push; else the properties whose value changed."""
    if previous is None:
        return current
    changed = {name: value for name, value in current.items() if previous.get(name) != value}
    return changed or {KLEER_ID: current[KLEER_ID]}  # nothing differs after all: a no-op write


def _snapshot(change: Change) -> Snapshot:
    assert change.snapshot is not None
    return change.snapshot


def _associated(before: Pushed | None, hubspot_id: str) -> frozenset[str]:
    """Parents the HubSpot record is already associated with (none if it is a new HubSpot record)."""
    if before is None or before.removed or before.hubspot_id != hubspot_id:
        return frozenset()
    return before.associated


def _fixed(hubspot_id: str) -> Callable[[str, ParentRef], str | None]:
    return lambda _connection, _parent: hubspot_id


def _pair(link: Link) -> tuple[str, str, str, str]:
    return (link.connection, link.from_object, link.from_id, link.to_id)
