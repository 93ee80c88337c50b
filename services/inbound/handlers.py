"""The inbound handlers: recorded HubSpot webhooks -> current HubSpot record -> Kleer.

One ``EventConsumer`` (group ``inbound-handlers``) on ``inbound.webhooks``
hands a batch of ``WebhookReceived`` events to ``InboundHandlers.handle``:

1. plan (pure, ``services.inbound.planning``): keep companies and projects,
   coalesce per record, drop echoes the metadata reveals, decide per record;
2. drop echoes the own-write log knows (values we wrote, metadata or not);
3. read every record to sync from HubSpot in batches, with every mapped
   property, so a late or reordered webhook can never write stale data;
4. per record, concurrently: update the linked Kleer client/project with all
   mapped fields (only if something differs: duplicates cost no write),
   create a client for a new company (policy; exactly once, also across workers and
   lost answers: ``services.inbound.client_creation``), handle deletions and merges;
   the values written are a three-way merge (``services.inbound.kleer_write``)
   of HubSpot's record, Kleer's record and what HubSpot held after the last
   sync (from the log), so a Kleer change the pusher has not delivered yet is
   kept, and a field both sides changed differently is a conflict (policy);
   when Kleer then holds values HubSpot lacks, or a stale snapshot still waits
   for the pusher, a fresh ``Kleer{Kind}Changed`` snapshot of the merged record
   is recorded for the pusher, so both systems end equal;
5. return a ``HandlerResult``: outcome events (each caused by the record's
   latest webhook event), fingerprints, links, own writes, DLQ entries - all
   committed by the consumer base with its checkpoint in one transaction.

Failures: Kleer's 429/5xx/timeouts are retried by the client and, when it
gives up, raised so the consumer retries the batch (writes are idempotent).
Kleer's refusals (validation, a linked record that no longer exists) and
unmappable HubSpot values are parked in the DLQ with Kleer's message and the
HubSpot object id; the other records of the batch go on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from libs.events.consumer import HandlerResult
from libs.events.dlq import DeadLetterQueue
from libs.events.envelope import EventDataError, NewEvent, RecordedEvent
from libs.events.store import AppendRequest
from libs.kleer import KleerNotFound, KleerValidationError
from libs.kleer.errors import KleerError, KleerUnavailable
from libs.mapping.convert import to_kleer
from libs.mapping.errors import MappingError
from libs.mapping.model import Mappings
from libs.mapping.objects import CLIENT, KLEER_ID
from libs.mapping.triggers import hubspot_properties_to_read, trigger_properties
from libs.observability import metrics
from libs.observability.logging import get_logger
from libs.records import RecordRef
from services import own_writes
from services.inbound import bookkeeping
from services.inbound.client_creation import CreationTiming, create_client_once, foreign_id_of
from services.inbound.deps import InboundDeps
from services.inbound.hubspot_port import HubSpotPort, HubSpotPortError, Properties
from services.inbound.kleer_write import SyncBase, WritePlan, event_json, plan_write
from services.inbound.options import DeletePolicy, InboundOptions
from services.inbound.planning import (
    COMPANIES,
    PROJECTS,
    Action,
    Decision,
    RecordWork,
    decide,
    drop_echoes,
    group_batch,
    merge_survivor,
    merged_away,
)
from services.inbound.webhook_events import WEBHOOK_RECEIVED, MalformedWebhook, WebhookEvent
from services.outbound.snapshots import (
    Snapshot,
    archived_type,
    changed_type,
    push_requested_type,
    record_snapshot,
    upserted_type,
)

log = get_logger(__name__)

CONSUMER_NAME = "inbound-handlers"
SqlWrite = Callable[[asyncpg.Connection], Awaitable[None]]

# Outcome facts (past tense). Kleer-side facts live in the Kleer record's stream, the rest in the HubSpot one's.
UPDATED = {CLIENT: "KleerClientUpdated", "project": "KleerProjectUpdated"}
DEACTIVATED = {CLIENT: "KleerClientDeactivated", "project": "KleerProjectDeactivated"}
CLIENT_CREATED = "KleerClientCreated"
SYNC_CONFLICT = "SyncConflict"
ECHO_IGNORED = "InboundEchoIgnored"
SYNC_SKIPPED = "InboundSyncSkipped"
DELETED_IN_HUBSPOT = {COMPANIES: "HubSpotCompanyDeleted", PROJECTS: "HubSpotProjectDeleted"}
COMPANIES_MERGED = "HubSpotCompaniesMerged"


class PermanentFailure(Exception):
    """This record cannot be applied as it is: park it (do not retry the batch)."""

    def __init__(self, reason: str, detail: Mapping[str, Any]) -> None:
        self.reason = reason
        self.detail = dict(detail)
        super().__init__(reason)


@dataclass
class Outcome:
    appends: list[AppendRequest] = field(default_factory=list)
    writes: list[SqlWrite] = field(default_factory=list)


class InboundHandlers:
    """The batch handler of the ``inbound-handlers`` consumer."""

    def __init__(
        self,
        *,
        options: InboundOptions,
        mappings: Mappings,
        pool: asyncpg.Pool,
        dlq: DeadLetterQueue,
        kleer: Any,
        hubspot: HubSpotPort,
        concurrency: int = 8,
        creation: CreationTiming | None = None,
    ) -> None:
        self.options = options
        self.mappings = mappings
        self.pool = pool
        self.dlq = dlq
        self.kleer = kleer
        self.hubspot = hubspot
        self.creation = creation or CreationTiming()
        self._slots = asyncio.Semaphore(concurrency)
        project_triggers = options.project_triggers or trigger_properties("project", mappings=mappings)
        self.triggers: dict[str, frozenset[str]] = {
            COMPANIES: frozenset(trigger_properties(CLIENT, mappings=mappings)),
            PROJECTS: frozenset(project_triggers),
        }
        self.read_properties: dict[str, tuple[str, ...]] = {
            name: tuple(dict.fromkeys((*hubspot_properties_to_read(name, mappings=mappings), KLEER_ID)))
            for name in (COMPANIES, PROJECTS)
        }

    @classmethod
    def from_deps(cls, deps: InboundDeps) -> InboundHandlers:
        if deps.kleer is None or deps.hubspot is None:
            raise ValueError("the inbound handlers need the Kleer and HubSpot clients: bootstrap(clients=True)")
        return cls(
            options=deps.options,
            mappings=deps.mappings,
            pool=deps.pool,
            dlq=deps.dlq,
            kleer=deps.kleer,
            hubspot=deps.hubspot,
        )

    # -- the batch -------------------------------------------------------------------------
    async def handle(self, events: Sequence[RecordedEvent]) -> HandlerResult:
        return await self.apply(events)

    async def apply(
        self, events: Sequence[RecordedEvent], *, raise_failures: bool = False, force: bool = False
    ) -> HandlerResult:
        """Handle a batch.

        Redrive uses ``raise_failures`` (a permanent failure raises instead of
        parking again) and ``force`` (sync the records even when the given
        events alone hold no trigger: the parked record needed a sync).
        """
        parsed: list[tuple[RecordedEvent, WebhookEvent]] = []
        unreadable: list[tuple[RecordedEvent, str]] = []
        for event in events:
            if event.type != WEBHOOK_RECEIVED:
                # Only WebhookReceived travels on this topic: another type was written by a newer version.
                unreadable.append((event, f"unknown event type {event.type} on the webhook topic: this handlers "
                                          "version cannot apply it; upgrade the handlers, then redrive"))
                continue
            try:
                parsed.append((event, WebhookEvent.from_data(event.data)))
            except (MalformedWebhook, EventDataError) as exc:
                unreadable.append((event, f"recorded webhook event unreadable: {exc}"))
        if unreadable and raise_failures:
            raise ValueError(unreadable[0][1])
        work, ignored = group_batch(parsed, self.options.app_id)
        if ignored:
            metrics.INBOUND_COMMANDS.labels(object_type="other", outcome="ignored").inc(ignored)
        work = await self._drop_own_echoes(work)
        decisions = [decide(w, self.triggers[w.hubspot_object]) for w in work]
        if force:
            decisions = [Decision(d.work, Action.SYNC) if d.action is Action.SKIP else d for d in decisions]
        # Before HubSpot is read: a sync base recorded later may hold a push HubSpot's answer lacks.
        read_at = await bookkeeping.database_now(self.pool) if _syncs(decisions) else None
        current = await self._read_current(decisions)
        linked = self._linked(decisions, current)
        # Two independent reads: side by side (one database round trip less per batch on the latency path).
        fingerprints, bases = await asyncio.gather(self._stored_fingerprints(linked), self._sync_bases(linked, read_at))
        known = _Known(current, fingerprints, bases)
        outcomes = await asyncio.gather(*(self._guarded(d, known, raise_failures) for d in decisions))
        result = HandlerResult()
        for outcome in outcomes:
            result.appends.extend(outcome.appends)
        # A record's writes lock its bookkeeping rows (its link, HubSpot id, fingerprint). Two commits holding
        # the same records (the batches of two replicas, a redrive beside the consumer) lock them in one order,
        # by record, whatever order their webhooks came in: the second waits for the first instead of Postgres
        # aborting one to break a deadlock. The pusher and the poller write those tables in the same key order.
        for _, outcome in sorted(zip(decisions, outcomes, strict=True), key=lambda pair: _lock_order(pair[0], current)):
            result.writes.extend(outcome.writes)
        result.writes.extend(self._park_unreadable(event, reason) for event, reason in unreadable)
        return result

    def _park_unreadable(self, event: RecordedEvent, reason: str) -> SqlWrite:
        """An event these handlers cannot read is parked whole (never skipped): redrive it after the fix."""
        log.error("inbound event unreadable; parked in the DLQ", position=event.position, type=event.type,
                  reason=reason)
        metrics.INBOUND_COMMANDS.labels(object_type="other", outcome="dead_lettered").inc()

        async def park(conn: asyncpg.Connection) -> None:
            await self.dlq.park_event(conn, source=CONSUMER_NAME, event=event, reason=reason)

        return park

    async def _drop_own_echoes(self, work: list[RecordWork]) -> list[RecordWork]:
        by_key: dict[tuple[str, str], list[tuple[str, str, str | None]]] = {}
        for w in work:
            for change in w.changes:
                if change.not_ours:  # a person's edit, even to a value we wrote before, is no echo
                    continue
                by_key.setdefault((w.connection, w.hubspot_object), []).append(
                    (w.hubspot_id, change.property, change.value)
                )
        echoed: set[tuple[str, str, str, str]] = set()
        for (connection, hubspot_object), changes in by_key.items():
            for hubspot_id, prop in await own_writes.echoes(self.pool, connection, hubspot_object, changes):
                echoed.add((connection, hubspot_object, hubspot_id, prop))
        if not echoed:
            return work
        return [
            drop_echoes(w, {p for (c, o, i, p) in echoed if (c, o, i) == (w.connection, w.hubspot_object, w.hubspot_id)})
            for w in work
        ]

    async def _read_current(self, decisions: Sequence[Decision]) -> dict[tuple[str, str], Properties]:
        wanted: dict[str, set[str]] = {}
        for d in decisions:
            if d.action is Action.SYNC:
                wanted.setdefault(d.work.hubspot_object, set()).add(d.work.hubspot_id)
            elif d.action is Action.MERGE and d.work.merge is not None:
                wanted.setdefault(d.work.hubspot_object, set()).add(merge_survivor(d.work.merge))
        found: dict[tuple[str, str], Properties] = {}
        for hubspot_object, ids in wanted.items():
            records = await self.hubspot.read(hubspot_object, sorted(ids), self.read_properties[hubspot_object])
            found.update({(hubspot_object, i): props for i, props in records.items()})
        return found

    @staticmethod
    def _linked(
        decisions: Sequence[Decision], current: Mapping[tuple[str, str], Properties]
    ) -> dict[tuple[str, str], set[str]]:
        """(connection, Kleer type) -> the Kleer ids of the linked records to sync."""
        wanted: dict[tuple[str, str], set[str]] = {}
        for d in decisions:
            props = current.get((d.work.hubspot_object, d.work.hubspot_id)) if d.action is Action.SYNC else None
            kleer_id = ((props or {}).get(KLEER_ID) or "").strip()
            if kleer_id:
                wanted.setdefault((d.work.connection, d.work.kleer_type), set()).add(kleer_id)
        return wanted

    async def _stored_fingerprints(self, linked: Mapping[tuple[str, str], set[str]]) -> dict[tuple[str, str, str], str]:
        """The poller's fingerprints of every linked record to sync, in one query per connection and type."""
        found: dict[tuple[str, str, str], str] = {}
        for (connection, kleer_type), ids in linked.items():
            stored = await bookkeeping.stored_fingerprints(self.pool, connection, kleer_type, ids)
            found.update({(connection, kleer_type, k): v for k, v in stored.items()})
        return found

    async def _sync_bases(
        self, linked: Mapping[tuple[str, str], set[str]], read_at: dt.datetime | None
    ) -> dict[tuple[str, str, str], SyncBase]:
        """What the log says of each linked record's last sync, in one query per connection and type."""
        found: dict[tuple[str, str, str], SyncBase] = {}
        if read_at is None:
            return found
        for (connection, kleer_type), ids in linked.items():
            streams = {RecordRef("kleer", kleer_type, i).stream(connection): i for i in ids}
            hubspot_object = COMPANIES if kleer_type == CLIENT else PROJECTS
            bases = await bookkeeping.last_syncs(
                self.pool,
                list(streams),
                upserted=upserted_type(hubspot_object),
                inbound_types=[UPDATED[kleer_type], CLIENT_CREATED, SYNC_SKIPPED],
                removed_types=[archived_type(hubspot_object)],
                change_types=[changed_type(kleer_type), push_requested_type(kleer_type)],
                before=read_at,
            )
            found.update({(connection, kleer_type, streams[s]): base for s, base in bases.items()})
        return found

    async def _guarded(self, decision: Decision, known: _Known, raise_failures: bool) -> Outcome:
        work = decision.work
        try:
            async with self._slots:
                return await self._apply(decision, known)
        except PermanentFailure as failure:
            if raise_failures:
                raise
            metrics.INBOUND_COMMANDS.labels(object_type=work.kleer_type, outcome="dead_lettered").inc()
            log.warning(
                "inbound change parked in the DLQ",
                hubspot_object=work.hubspot_object,
                hubspot_id=work.hubspot_id,
                reason=failure.reason,
            )
            return Outcome(writes=[self._park(work, failure)])

    def _park(self, work: RecordWork, failure: PermanentFailure) -> SqlWrite:
        record = str(RecordRef("hubspot", _record_kind(work.hubspot_object), work.hubspot_id))
        # Name the change that asked for the sync (a redrive re-reads the record from it).
        cause = next((c.cause for c in reversed(work.changes) if c.property in self.triggers[work.hubspot_object]),
                     work.cause)

        async def park(conn: asyncpg.Connection) -> None:
            await self.dlq.park(
                conn,
                source=CONSUMER_NAME,
                connection=work.connection,
                record=record,
                reason=failure.reason,
                detail={**failure.detail, "hubspot_object": work.hubspot_object, "hubspot_id": work.hubspot_id},
                payload={"type": cause.type, "data": cause.data},
                cause=cause,
            )

        return park

    # -- one record ----------------------------------------------------------------------
    async def _apply(self, decision: Decision, known: _Known) -> Outcome:
        work = decision.work
        current = known.current
        if decision.action is Action.SKIP:
            outcome = "echo" if decision.reason == "echo" else "ignored"
            metrics.INBOUND_COMMANDS.labels(object_type=work.kleer_type, outcome=outcome).inc()
            return self._skipped(work, decision.reason)
        if decision.action is Action.DELETE:
            return await self._deleted(work)
        if decision.action is Action.MERGE:
            return await self._merged(work, current)
        props = current.get((work.hubspot_object, work.hubspot_id))
        if props is None:
            metrics.INBOUND_COMMANDS.labels(object_type=work.kleer_type, outcome="ignored").inc()
            return self._skipped(work, "not_in_hubspot")
        kleer_id = (props.get(KLEER_ID) or "").strip()
        if kleer_id:
            if not decision.triggers and not work.changes:
                # A creation event of a record that is already linked (e.g. we created it): nothing changed.
                metrics.INBOUND_COMMANDS.labels(object_type=work.kleer_type, outcome="ignored").inc()
                return self._skipped(work, "already_linked")
            key = (work.connection, work.kleer_type, kleer_id)
            return await self._update(work, props, kleer_id, known.fingerprints.get(key), known.bases.get(key))
        if work.created and work.hubspot_object == COMPANIES and self.options.create_clients:
            return await self._create_client(work, props)
        metrics.INBOUND_COMMANDS.labels(object_type=work.kleer_type, outcome="ignored").inc()
        reason = "creation_disabled" if work.created and work.hubspot_object == COMPANIES else "not_linked"
        return self._skipped(work, reason)

    def _resource(self, kleer_type: str) -> Any:
        return self.kleer.clients if kleer_type == CLIENT else self.kleer.projects

    def _to_kleer(self, work: RecordWork, props: Properties) -> dict[str, Any]:
        try:
            return to_kleer(work.kleer_type, props, changed=work.changed_properties, mappings=self.mappings)
        except MappingError as exc:
            raise _unmappable(exc) from exc

    async def _update(
        self, work: RecordWork, props: Properties, kleer_id: str, stored: str | None, base: SyncBase | None
    ) -> Outcome:
        kleer_type = work.kleer_type
        if not kleer_id.isdigit():
            raise PermanentFailure(f"kleer_id {kleer_id[:40]!r} is not a Kleer id", {"kleer_id": kleer_id[:40]})
        resource = self._resource(kleer_type)
        try:
            record = await resource.get(int(kleer_id))
        except KleerNotFound as exc:
            raise PermanentFailure(
                f"the linked Kleer {kleer_type} {kleer_id} does not exist: {exc.message}", {"kleer_id": kleer_id}
            ) from exc
        try:
            plan = plan_write(
                kleer_type,
                record,
                props,
                changed=work.changed_properties,
                base=base,
                stored_fingerprint=stored,
                policy=self.options.conflict_policy,
                mappings=self.mappings,
            )
        except MappingError as exc:
            raise _unmappable(exc) from exc
        body = plan.body
        if plan.write:
            try:
                await resource.update(int(kleer_id), body)
            except KleerValidationError as exc:
                raise PermanentFailure(
                    f"Kleer refused the update: {exc.message}",
                    {"kleer_id": kleer_id, "kleer_message": exc.message, "body": event_json(body)},
                ) from exc
            except KleerNotFound as exc:
                raise PermanentFailure(
                    f"the linked Kleer {kleer_type} {kleer_id} does not exist: {exc.message}", {"kleer_id": kleer_id}
                ) from exc
            metrics.WEBHOOK_TO_KLEER_SECONDS.observe(max(0.0, time.time() - work.received_at))
        stream = RecordRef("kleer", kleer_type, kleer_id).stream(work.connection)
        common = {
            "kleer_id": kleer_id,
            "hubspot_object": work.hubspot_object,
            "hubspot_id": work.hubspot_id,
            "changed_properties": list(work.changed_properties),
            "webhook_event_ids": [str(e.event_id) for e in work.events],
        }
        meta = {"actor": CONSUMER_NAME, "source": "hubspot"}
        events: list[NewEvent] = []
        writes: list[SqlWrite] = []
        if plan.conflict:
            conflict = NewEvent(
                SYNC_CONFLICT,
                {
                    **common,
                    "policy": self.options.conflict_policy.value,
                    "winner": plan.winner,
                    "fields": {
                        p: {"kleer": plan.kleer_values.get(p), "hubspot": plan.hubspot_values.get(p)}
                        for p in plan.conflicts
                    },
                    "kleer_values": plan.kleer_values,
                    "hubspot_values": plan.hubspot_values,
                },
                meta,
            ).caused_by(work.cause)
            events.append(conflict)
            writes.append(self._conflict_row(work, kleer_id, plan.winner or "", plan, conflict))
        if plan.write:
            # ``hubspot_properties``: what HubSpot held at this sync, the base of the next merge.
            data = {**common, "fields": event_json(body), "conflict": plan.conflict, "hubspot_properties": props}
            events.append(NewEvent(UPDATED[kleer_type], data, meta).caused_by(work.cause))
            metrics.INBOUND_COMMANDS.labels(object_type=kleer_type, outcome="applied").inc()
        elif plan.conflict:
            metrics.INBOUND_COMMANDS.labels(object_type=kleer_type, outcome="conflict_kept_kleer").inc()
        else:
            metrics.INBOUND_COMMANDS.labels(object_type=kleer_type, outcome="unchanged").inc()
        if not plan.write and not plan.conflict:
            # Kleer already holds HubSpot's values (say our write landed but its commit did not): a sync
            # both sides took part in. On the Kleer record's stream with what HubSpot held, like a write,
            # it is the base of the next merge and tells the pusher HubSpot's values are in Kleer: a later
            # Kleer change is pushed, not held back as if an edit were still on its way to Kleer.
            events.append(self._skip_event(work, "kleer_up_to_date", kleer_id=kleer_id,
                                           changed_properties=list(work.changed_properties), hubspot_properties=props))
        if plan.snapshot is not None:
            # HubSpot must get the merged record (and not a stale snapshot still queued): as a poll would.
            snapshot_meta = {"actor": CONSUMER_NAME, "source": "kleer"}
            events.append(
                NewEvent(changed_type(kleer_type), plan.snapshot.to_event_data(), snapshot_meta).caused_by(work.cause)
            )
        outcome = Outcome(appends=[AppendRequest(stream, events)] if events else [], writes=writes)
        connection, hubspot_object, hubspot_id = work.connection, work.hubspot_object, work.hubspot_id
        new_fingerprint, wrote = plan.new_fingerprint, plan.write

        async def remember(conn: asyncpg.Connection) -> None:
            await bookkeeping.upsert_link(conn, connection, hubspot_object, hubspot_id, kleer_type, kleer_id)
            if wrote:  # HubSpot now holds values we did not push: our last push no longer says what it has
                await bookkeeping.mark_hubspot_ahead(conn, connection, kleer_type, kleer_id)
            if new_fingerprint is not None:
                await bookkeeping.save_fingerprint_if(
                    conn, connection, kleer_type, kleer_id, new_fingerprint, expected=stored
                )

        outcome.writes.append(remember)
        return outcome

    def _conflict_row(
        self, work: RecordWork, kleer_id: str, winner: str, plan: WritePlan, event: NewEvent
    ) -> SqlWrite:
        policy = self.options.conflict_policy.value

        async def write(conn: asyncpg.Connection) -> None:
            await bookkeeping.record_conflict(
                conn,
                connection=work.connection,
                kleer_type=work.kleer_type,
                kleer_id=kleer_id,
                hubspot_object=work.hubspot_object,
                hubspot_id=work.hubspot_id,
                policy=policy,
                winner=winner,
                hubspot_values=plan.hubspot_values,
                kleer_values=plan.kleer_values,
                event_id=event.event_id,
            )

        return write

    async def _create_client(self, work: RecordWork, props: Properties) -> Outcome:
        body = {**self._to_kleer(work, props), "foreign-id": foreign_id_of(work.hubspot_id)}
        connection, hubspot_id = work.connection, work.hubspot_id
        try:
            made = await create_client_once(
                self.pool,
                self.kleer.clients,
                connection=connection,
                company_id=hubspot_id,
                body=body,
                timing=self.creation,
                # Long enough for another worker's whole create, or for an unconfirmed one to land.
                patience=2 * self.creation.unsettled_seconds + 10,
            )
        except KleerValidationError as exc:
            raise PermanentFailure(
                f"Kleer refused the new client: {exc.message}",
                {"kleer_message": exc.message, "body": event_json(body)},
            ) from exc
        kleer_id = made.kleer_id
        if made.created:
            metrics.WEBHOOK_TO_KLEER_SECONDS.observe(max(0.0, time.time() - work.received_at))
        # Before HubSpot has the kleer_id (its write may take long in a 429 storm), a poll must not take the
        # new client for a change: the pusher would upsert it by kleer_id as a second company. Kleer's whole
        # record (with its defaults) reaches the company through the snapshot recorded with the outcome.
        snapshot = await self._mark_polled(connection, kleer_id)
        try:
            await self.hubspot.set_properties(COMPANIES, hubspot_id, {KLEER_ID: kleer_id})
        except HubSpotPortError as exc:
            if exc.permanent:
                raise PermanentFailure(
                    f"Kleer client {kleer_id} created, but HubSpot refused its kleer_id: {exc}",
                    {"kleer_id": kleer_id},
                ) from exc
            raise
        metrics.INBOUND_COMMANDS.labels(object_type=CLIENT, outcome="created").inc()
        event = NewEvent(
            CLIENT_CREATED,
            {
                "kleer_id": kleer_id,
                "hubspot_object": COMPANIES,
                "hubspot_id": hubspot_id,
                "fields": event_json(body),
                "webhook_event_ids": [str(e.event_id) for e in work.events],
                "changed_properties": list(work.changed_properties),
                "hubspot_properties": props,  # what HubSpot held: the base of the next merge
            },
            {"actor": CONSUMER_NAME, "source": "hubspot"},
        ).caused_by(work.cause)
        events = [event]
        if snapshot is not None:
            # Committed after HubSpot has the kleer_id: the pusher's upsert by kleer_id finds this company.
            events.append(NewEvent(changed_type(CLIENT), snapshot.to_event_data(), {"actor": CONSUMER_NAME,
                                                                                   "source": "kleer"}).caused_by(work.cause))

        async def remember(conn: asyncpg.Connection) -> None:
            await bookkeeping.upsert_link(conn, connection, COMPANIES, hubspot_id, CLIENT, kleer_id)
            await own_writes.record_own_writes(conn, connection, COMPANIES, [(hubspot_id, {KLEER_ID: kleer_id})])
            if snapshot is not None:
                await bookkeeping.save_fingerprint(conn, connection, CLIENT, kleer_id, snapshot.fingerprint)

        stream = RecordRef("kleer", CLIENT, kleer_id).stream(connection)
        return Outcome(appends=[AppendRequest(stream, events)], writes=[remember])

    async def _mark_polled(self, connection: str, kleer_id: str) -> Snapshot | None:
        """The new client as the poller maps it; its fingerprint is stored unless a poll stored one already."""
        try:
            snapshot = record_snapshot(CLIENT, await self.kleer.clients.get(int(kleer_id)), mappings=self.mappings)
        except MappingError:
            return None
        async with self.pool.acquire() as conn, conn.transaction():
            await bookkeeping.save_fingerprint_if(conn, connection, CLIENT, kleer_id, snapshot.fingerprint, expected=None)
        return snapshot

    async def _deleted(self, work: RecordWork) -> Outcome:
        links = await bookkeeping.known_links(self.pool, work.connection, work.hubspot_object, [work.hubspot_id])
        kleer_id = links.get(work.hubspot_id)
        policy = self.options.delete_policy
        data = {
            "hubspot_object": work.hubspot_object,
            "hubspot_id": work.hubspot_id,
            "kleer_type": work.kleer_type,
            "kleer_id": kleer_id,
            "policy": policy.value,
        }
        outcome = Outcome()
        meta = {"actor": CONSUMER_NAME, "source": "hubspot"}
        deleted = NewEvent(DELETED_IN_HUBSPOT[work.hubspot_object], data, meta).caused_by(work.cause)
        outcome.appends.append(AppendRequest(_hubspot_stream(work), [deleted]))
        if kleer_id is not None and policy is DeletePolicy.DEACTIVATE:
            try:
                await self._resource(work.kleer_type).update(int(kleer_id), {"active": False})
            except (KleerValidationError, KleerNotFound) as exc:
                raise PermanentFailure(f"Kleer refused deactivation: {exc.message}", {"kleer_id": kleer_id}) from exc
            stream = RecordRef("kleer", work.kleer_type, kleer_id).stream(work.connection)
            deactivated = NewEvent(DEACTIVATED[work.kleer_type], data, meta).caused_by(work.cause)
            outcome.appends.append(AppendRequest(stream, [deactivated]))
        connection, hubspot_object, hubspot_id = work.connection, work.hubspot_object, work.hubspot_id

        async def unlink(conn: asyncpg.Connection) -> None:
            await bookkeeping.set_link_status(conn, connection, hubspot_object, [hubspot_id], "deleted_in_hubspot")

        outcome.writes.append(unlink)
        metrics.INBOUND_COMMANDS.labels(object_type=work.kleer_type, outcome="deleted").inc()
        return outcome

    async def _merged(self, work: RecordWork, current: Mapping[tuple[str, str], Properties]) -> Outcome:
        assert work.merge is not None
        survivor = merge_survivor(work.merge)
        away = merged_away(work.merge)
        props = current.get((work.hubspot_object, survivor)) or {}
        links = await bookkeeping.known_links(self.pool, work.connection, work.hubspot_object, [survivor, *away])
        kept = (props.get(KLEER_ID) or "").strip() or links.get(survivor) or next(
            (links[i] for i in away if i in links), None
        )
        if kept and not (props.get(KLEER_ID) or "").strip() and props:
            try:
                await self.hubspot.set_properties(work.hubspot_object, survivor, {KLEER_ID: kept})
            except HubSpotPortError as exc:
                if exc.permanent:
                    raise PermanentFailure(
                        f"HubSpot refused the surviving company's kleer_id: {exc}", {"kleer_id": kept}
                    ) from exc
                raise
        released = sorted({links[i] for i in away if i in links and links[i] != kept})
        data = {
            "hubspot_object": work.hubspot_object,
            "survivor": survivor,
            "merged_away": away,
            "kleer_id": kept,
            "released_kleer_ids": released,
        }
        event = NewEvent(COMPANIES_MERGED, data, {"actor": CONSUMER_NAME, "source": "hubspot"}).caused_by(work.cause)
        connection, hubspot_object, kleer_type = work.connection, work.hubspot_object, work.kleer_type
        wrote_back = bool(kept and props and not (props.get(KLEER_ID) or "").strip())

        async def relink(conn: asyncpg.Connection) -> None:
            await bookkeeping.set_link_status(conn, connection, hubspot_object, away, "merged_away")
            if kept:
                await bookkeeping.upsert_link(conn, connection, hubspot_object, survivor, kleer_type, kept)
            if wrote_back and kept:
                await own_writes.record_own_writes(conn, connection, hubspot_object, [(survivor, {KLEER_ID: kept})])

        metrics.INBOUND_COMMANDS.labels(object_type=work.kleer_type, outcome="merged").inc()
        stream = RecordRef("hubspot", _record_kind(hubspot_object), survivor).stream(connection)
        return Outcome(appends=[AppendRequest(stream, [event])], writes=[relink])

    def _skipped(self, work: RecordWork, reason: str, **extra: Any) -> Outcome:
        return Outcome(appends=[AppendRequest(_hubspot_stream(work), [self._skip_event(work, reason, **extra)])])

    @staticmethod
    def _skip_event(work: RecordWork, reason: str, **extra: Any) -> NewEvent:
        kind = ECHO_IGNORED if reason == "echo" else SYNC_SKIPPED
        data: dict[str, Any] = {
            "hubspot_object": work.hubspot_object,
            "hubspot_id": work.hubspot_id,
            "reason": reason,
            "properties": sorted({c.property for c in (*work.changes, *work.echoes)}),
            "webhook_event_ids": [str(e.event_id) for e in work.events],
            **extra,
        }
        return NewEvent(kind, data, {"actor": CONSUMER_NAME, "source": "hubspot"}).caused_by(work.cause)


@dataclass(frozen=True)
class _Known:
    """What a batch read before handling its records: HubSpot's records, fingerprints, sync bases."""

    current: Mapping[tuple[str, str], Properties]
    fingerprints: Mapping[tuple[str, str, str], str]  # (connection, Kleer type, Kleer id)
    bases: Mapping[tuple[str, str, str], SyncBase]


def _unmappable(exc: MappingError) -> PermanentFailure:
    return PermanentFailure(
        f"HubSpot value cannot be mapped to Kleer: {exc}", {"property": exc.property, "error": str(exc)}
    )


def _lock_order(decision: Decision, current: Mapping[tuple[str, str], Properties]) -> tuple[str, str, str, str, str]:
    """Where a record's writes go in a commit: by its Kleer record (the key of the HubSpot id and fingerprint
    rows; a record with no Kleer id yet first), then by its HubSpot record (the link's key)."""
    work = decision.work
    kleer_id = ((current.get((work.hubspot_object, work.hubspot_id)) or {}).get(KLEER_ID) or "").strip()
    return (work.connection, work.kleer_type, kleer_id, work.hubspot_object, work.hubspot_id)


def _syncs(decisions: Sequence[Decision]) -> bool:
    return any(d.action is Action.SYNC for d in decisions)


def _record_kind(hubspot_object: str) -> str:
    return "company" if hubspot_object == COMPANIES else "project"


def _hubspot_stream(work: RecordWork) -> str:
    return RecordRef("hubspot", _record_kind(work.hubspot_object), work.hubspot_id).stream(work.connection)


__all__ = ["CONSUMER_NAME", "InboundHandlers", "KleerError", "KleerUnavailable", "PermanentFailure"]
