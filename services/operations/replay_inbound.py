"""Inbound replay: re-drive recorded HubSpot webhooks through the normal inbound handlers.

``kleer-sync replay --direction inbound`` selects ``WebhookReceived`` events
(a connection and any of HubSpot kinds ``company``/``project``, records such as
``hubspot:company:456``, a time window, a position range), keeps the latest per
HubSpot record (with the record's creation webhook, if any, so the handlers know
it was created in HubSpot), and hands them to ``InboundHandlers.apply`` with ``force``:
every selected record is synced with its *current* HubSpot values through the
same path a webhook takes (all mapped fields, the three-way merge and the
conflict policy, client creation when the creation policy allows, the
dead-letter queue, outcome events). Use it after a fix: a creation policy
turned on, triggering properties changed, a mapping corrected, records that
were not linked yet.

The run is recorded like an outbound replay (``replay_runs``,
``ReplayStarted``/``ReplayCompleted``); a killed run resumes at its cursor,
and the handlers' writes are idempotent (the merge writes only what differs,
a client is created once per company), so a rerun makes no duplicates.

``--dry-run`` runs the same handlers against a Kleer and a HubSpot that only
read: Kleer updates are captured with the record as it is (the field diff),
creates and HubSpot writes are reported, nothing is written anywhere and
nothing is committed to the log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from libs.events.envelope import NewEvent, RecordedEvent
from libs.events.store import AppendRequest, PostgresEventStore
from libs.records import RecordRef
from services.inbound.handlers import (
    CLIENT_CREATED,
    DEACTIVATED,
    SYNC_CONFLICT,
    UPDATED,
    InboundHandlers,
    PermanentFailure,
    SqlWrite,
)
from services.inbound.planning import RecordWork
from services.inbound.webhook_events import WEBHOOK_RECEIVED
from services.operations.replay import (
    BATCH,
    REPLAY_COMPLETED,
    REPLAY_SOURCE,
    DryRunReport,
    Progress,
    RecordDiff,
    ReplayError,
    RunReport,
    Window,
    batches,
    begin_run,
    complete_run,
    events_at,
    run_locked,
    save_progress,
    select,
    started_event_id,
)
from services.operations.rows import EVENT_COLUMNS, recorded
from services.operations.timeline import FieldChange

INBOUND = "inbound"
#: HubSpot record kinds with inbound sync, as records name them (``hubspot:company:456``).
INBOUND_KINDS = ("company", "project")
_NAMES = {"company": "company", "companies": "company", "project": "project", "projects": "project",
          "client": "company", "clients": "company"}
_NAMESPACE_TEXT = "kleer-sync inbound replay"

_WRITTEN = {*UPDATED.values(), *DEACTIVATED.values(), CLIENT_CREATED}


def inbound_kind(name: str) -> str:
    """``companies``, ``company`` (or the Kleer side's ``clients``) -> ``company``; ``ReplayError`` otherwise."""
    kind = _NAMES.get(name.strip().lower())
    if kind is None:
        raise ReplayError(f"inbound replay knows HubSpot companies and projects, not {name!r}")
    return kind


@dataclass(frozen=True)
class InboundSelector(Window):
    """Which recorded HubSpot webhooks to re-drive. Empty filters select every company and project."""

    connection: str
    kinds: tuple[str, ...] = ()  # "company", "project"
    records: tuple[str, ...] = ()  # hubspot:company:456
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    from_position: int | None = None
    to_position: int | None = None

    def __post_init__(self) -> None:
        for kind in self.kinds:
            if kind not in INBOUND_KINDS:
                raise ReplayError(f"inbound replay knows HubSpot {', '.join(INBOUND_KINDS)}, not {kind!r}")
        for record in self.records:
            try:
                ref = RecordRef.parse(record)
            except ValueError as exc:
                raise ReplayError(str(exc)) from None
            if ref.system != "hubspot" or ref.kind not in INBOUND_KINDS:
                raise ReplayError(f"inbound replay selects HubSpot records (hubspot:company:456), not {record!r}")
        self.check_window()

    def types(self) -> list[str]:
        return [WEBHOOK_RECEIVED]

    def streams(self) -> list[str]:
        return [RecordRef.parse(r).stream(self.connection) for r in self.records]

    def stream_patterns(self) -> list[str]:
        return [RecordRef("hubspot", kind, "%").stream(self.connection) for kind in self.kinds or INBOUND_KINDS]

    def to_json(self) -> dict[str, Any]:
        return {"direction": INBOUND, **self.window_json()}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> InboundSelector:
        return cls(**cls.window_from_json(body))

    def describe(self) -> str:
        return "; ".join([f"HubSpot -> Kleer, connection {self.connection}", *self.selection_parts(),
                          *self.window_parts()])


async def _with_creations(pool: asyncpg.Pool, events: Sequence[RecordedEvent], up_to: int) -> list[RecordedEvent]:
    """``events`` plus each record's creation webhook (wherever it is in the log, up to ``up_to``), in log order.

    The latest webhook of a company created in HubSpot is often a property change; without its creation the
    handlers would take it for a record that is simply not linked (and create no client for it).
    """
    rows = await pool.fetch(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE stream = ANY($1::text[]) AND type = $2 AND position <= $3 "
        "AND data->>'subscriptionType' LIKE '%.creation' ORDER BY position",
        sorted({e.stream for e in events}), WEBHOOK_RECEIVED, up_to,
    )
    merged = {e.position: e for e in events}
    merged.update((r["position"], recorded(r)) for r in rows)
    return [merged[p] for p in sorted(merged)]


def is_inbound(selector_json: Mapping[str, Any]) -> bool:
    """Whether a stored selection (``replay_runs.selector``) is an inbound one."""
    return selector_json.get("direction") == INBOUND


def _record_of(stream: str) -> str:
    return str(RecordRef.from_stream(stream)[1])


def _outcomes(appends: Sequence[AppendRequest]) -> dict[str, list[NewEvent]]:
    """The handlers' outcome events per HubSpot record id they name."""
    found: dict[str, list[NewEvent]] = {}
    for request in appends:
        for event in request.events:
            hubspot_id = event.data.get("hubspot_id") if isinstance(event.data, dict) else None
            if hubspot_id is not None:
                found.setdefault(str(hubspot_id), []).append(event)
    return found


# --- the real run -----------------------------------------------------------------------------------------


async def run_inbound_replay(
    store: PostgresEventStore,
    selector: InboundSelector,
    handlers: InboundHandlers,
    *,
    actor: str,
    progress: Progress = lambda done, total: None,
    batch_size: int = BATCH,
    on_start: Callable[[str, bool], None] | None = None,
) -> RunReport:
    """Re-drive ``selector``'s webhooks through ``handlers`` (see the module docstring); resumes a killed run.

    In the report, ``pushed`` counts records written to Kleer (updated, created, deactivated),
    ``unchanged`` those Kleer already had, ``failed`` those parked in the dead-letter queue.
    """

    async def drive(run_id: str, resumed: bool) -> RunReport:
        return await _drive(store, selector, handlers, run_id, resumed, progress, batch_size)

    return await run_locked(store, selector, actor, drive, on_start)


async def _drive(
    store: PostgresEventStore,
    selector: InboundSelector,
    handlers: InboundHandlers,
    run_id: str,
    resumed: bool,
    progress: Progress,
    batch_size: int,
) -> RunReport:
    pool = store.pool
    start = await begin_run(store, selector, run_id, resumed, progress)
    run, cause, report, pending = start.run, start.cause, start.report, start.pending
    done = report.records - len(pending)
    for part in batches(pending, batch_size):
        events = await _with_creations(pool, await events_at(pool, part), run.up_to_position)
        started = await pool.fetchval("SELECT clock_timestamp()")
        result = await handlers.apply(events, force=True)
        await result.commit(store)
        outcomes = _outcomes(result.appends)
        parked = {r["record"]: r["reason"] for r in await pool.fetch(
            "SELECT record, reason FROM dead_letters WHERE status = 'open' AND event_id = ANY($1::uuid[]) "
            "AND updated_at >= $2",  # parked (again) by this batch, not an older entry of the same event
            [e.event_id for e in events], started)}
        for stream in dict.fromkeys(e.stream for e in events):
            record = _record_of(stream)
            if record in parked:
                report.failed += 1
                report.failures.append(f"{record}: parked in the dead-letter queue: {parked[record]}")
            elif any(e.type in _WRITTEN for e in outcomes.get(RecordRef.from_stream(stream)[1].id, [])):
                report.pushed += 1
            else:
                report.unchanged += 1
        done += len(part)
        await save_progress(pool, report, part[-1])
        progress(done, report.records)
    report.status = "completed"
    completed = NewEvent(
        REPLAY_COMPLETED,
        {"run_id": run_id, "direction": INBOUND, "records": report.records, "written": report.pushed,
         "unchanged": report.unchanged, "failed": report.failed, "events_scanned": report.events_scanned},
        {"actor": run.actor, "source": REPLAY_SOURCE},
        started_event_id(f"{run_id}:{_NAMESPACE_TEXT}"),
    ).caused_by(cause)
    await complete_run(store, selector.connection, run_id, completed)
    return report


# --- dry run ----------------------------------------------------------------------------------------------


@dataclass
class _Captured:
    """What the handlers would have written (the dry run's Kleer and HubSpot only read)."""

    updates: dict[tuple[str, int], tuple[Mapping[str, Any], Mapping[str, Any]]] = field(default_factory=dict)
    hubspot_writes: dict[str, dict[str, str]] = field(default_factory=dict)  # hubspot id -> properties
    parked: dict[str, str] = field(default_factory=dict)  # hubspot id -> reason


class _ReadOnlyResource:
    def __init__(self, real: Any, kind: str, captured: _Captured) -> None:
        self.real, self.kind, self.captured = real, kind, captured
        self.seen: dict[int, Mapping[str, Any]] = {}

    async def get(self, record_id: int) -> Any:
        record = await self.real.get(record_id)
        self.seen[int(record_id)] = record
        return record

    async def update(self, record_id: int, body: Mapping[str, Any]) -> Mapping[str, Any]:
        before = self.seen.get(int(record_id)) or await self.real.get(record_id)
        self.captured.updates[(self.kind, int(record_id))] = (before, body)
        return before

    async def create(self, body: Mapping[str, Any]) -> int:  # pragma: no cover - creation is off in a dry run
        raise ReplayError("a dry run creates nothing")


class _ReadOnlyKleer:
    def __init__(self, real: Any, captured: _Captured) -> None:
        self.clients = _ReadOnlyResource(real.clients, "client", captured)
        self.projects = _ReadOnlyResource(real.projects, "project", captured)


class _ReadOnlyHubSpot:
    def __init__(self, real: Any, captured: _Captured) -> None:
        self.real, self.captured = real, captured

    async def read(self, object_name: str, ids: Sequence[str], properties: Sequence[str]) -> Any:
        return await self.real.read(object_name, ids, properties)

    async def set_properties(self, object_name: str, hubspot_id: str, properties: Mapping[str, str]) -> None:
        self.captured.hubspot_writes.setdefault(str(hubspot_id), {}).update(properties)


class _PreviewHandlers(InboundHandlers):
    """The handlers with read-only Kleer and HubSpot, no client creation and the dead-letter queue captured."""

    def __init__(self, real: InboundHandlers, captured: _Captured) -> None:
        super().__init__(
            options=dataclasses.replace(real.options, create_clients=False),
            mappings=real.mappings,
            pool=real.pool,
            dlq=real.dlq,
            kleer=_ReadOnlyKleer(real.kleer, captured),
            hubspot=_ReadOnlyHubSpot(real.hubspot, captured),
        )
        self.captured = captured

    def _park(self, work: RecordWork, failure: PermanentFailure) -> SqlWrite:
        self.captured.parked[work.hubspot_id] = failure.reason
        return _nothing

    def _park_unreadable(self, event: RecordedEvent, reason: str) -> SqlWrite:
        self.captured.parked[RecordRef.from_stream(event.stream)[1].id] = reason
        return _nothing


async def _nothing(conn: asyncpg.Connection) -> None:
    return None


def _leaves(body: Mapping[str, Any], prefix: str = "") -> dict[str, object]:
    """``{"address": {"city": "X"}}`` -> ``{"address.city": "X"}``."""
    flat: dict[str, object] = {}
    for key, value in body.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_leaves(value, path + "."))
        else:
            flat[path] = value
    return flat


def _changes(before: Mapping[str, Any], body: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    new, old = _leaves(body), _leaves(before)
    changes = []
    for name in sorted(new):
        a, b = _text(old.get(name)), _text(new[name])
        if a != b:
            changes.append(FieldChange(name, a, b))
    return tuple(changes)


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


async def inbound_dry_run(
    pool: asyncpg.Pool,
    selector: InboundSelector,
    handlers: InboundHandlers,
    *,
    progress: Progress = lambda done, total: None,
    batch_size: int = BATCH,
    max_records: int | None = None,
    creation_allowed: bool | None = None,
) -> DryRunReport:
    """What re-driving ``selector`` would write to Kleer now; writes nothing, commits nothing."""
    selection = await select(pool, selector)
    report = DryRunReport(selector, selection.up_to, selection.events_scanned, records=len(selection))
    positions = selection.positions if max_records is None else selection.positions[:max_records]
    creating = handlers.options.create_clients if creation_allowed is None else creation_allowed
    done = 0
    for part in batches(positions, batch_size):
        events = await _with_creations(pool, await events_at(pool, part), selection.up_to)
        captured = _Captured()
        preview = _PreviewHandlers(handlers, captured)
        result = await preview.apply(events, force=True)  # its writes and appends are never committed
        report.diffs.extend(_diffs(events, result.appends, captured, creating))
        done += len(part)
        progress(done, len(positions))
    report.compared = len(positions)
    return report


def _diffs(
    events: Sequence[RecordedEvent], appends: Sequence[AppendRequest], captured: _Captured, creating: bool
) -> list[RecordDiff]:
    outcomes = _outcomes(appends)
    diffs = []
    for stream in dict.fromkeys(e.stream for e in events):
        ref = RecordRef.from_stream(stream)[1]
        record, target = str(ref), f"Kleer {'client' if ref.kind == 'company' else 'project'}"
        happened = outcomes.get(ref.id, [])
        written = next((e for e in happened if e.type in _WRITTEN), None)
        conflict = next((e for e in happened if e.type == SYNC_CONFLICT), None)
        note = ""
        if conflict is not None:
            note = f"conflict on {', '.join(sorted(conflict.data.get('fields') or {}))}: " \
                   f"{conflict.data.get('winner')} wins ({conflict.data.get('policy')})"
        if ref.id in captured.parked:
            diffs.append(RecordDiff(record, target, "skip", None, note=f"would be parked: {captured.parked[ref.id]}"))
        elif written is not None:
            kleer_id = str(written.data.get("kleer_id") or "")
            kind = "client" if ref.kind == "company" else "project"
            before, body = captured.updates.get((kind, int(kleer_id)), ({}, {})) if kleer_id.isdigit() else ({}, {})
            diffs.append(RecordDiff(record, target, "update", kleer_id or None, _changes(before, body), note))
        else:
            skipped = next((e for e in happened if e.type.startswith("Inbound")), None)
            reason = str(skipped.data.get("reason")) if skipped is not None else ""
            kleer_id = str(skipped.data.get("kleer_id") or "") if skipped is not None else ""
            if reason == "creation_disabled" and creating:
                diffs.append(RecordDiff(record, target, "create", None, note="a Kleer client would be created and "
                                        "linked (kleer_id written to the company)"))
            elif reason in ("not_linked", "creation_disabled"):
                diffs.append(RecordDiff(record, target, "skip", None, note="not linked to a Kleer record"
                                        + (" (client creation is off)" if reason == "creation_disabled" else "")))
            else:
                diffs.append(RecordDiff(record, target, "same", kleer_id or None, note=note or reason))
    return diffs
