"""The promises checked at the end of a scenario: nothing lost, nothing duplicated, no loops, no leaks.

Each check returns an ``InvariantResult`` whose ``problems`` list names every
divergence (record, field, expected, actual), so a failure message says what
went wrong without digging through logs.

1. ``hubspot_matches_kleer``: HubSpot holds exactly the state the Kleer book
   implies (``expected.py``): every record once, every mapped field, every
   amount, every association.
2. ``kleer_holds_hubspot_edits``: the last accepted edit of each triggering
   property is in Kleer, unless a later Kleer-side change of that record
   superseded it or the record sits in the dead-letter queue with a reason.
3. ``hubspot_created_companies_linked``: each company created in HubSpot got
   exactly one Kleer client and carries its ``kleer_id``.
4. ``webhooks_recorded``: every webhook event answered 2xx is in the log;
   forged, stale and cross-portal requests were refused and left no trace;
   a replayed request added nothing.
5. ``everything_handled``: every event routed to a topic was handled by each
   consumer of that topic (its Postgres checkpoint passed the event), so an
   accepted webhook was applied or parked; every dead letter has a reason.
6. ``no_ping_pong``: per Kleer record, writes (``HubSpot…Upserted`` and
   ``Kleer…Updated``) at most one per real change (+1 for a crash redo).
7. ``no_secrets_in_logs``: no token or client secret in any process log.
8. ``processes_stayed_up``: no process died that the runner did not kill.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from libs.events.kafka import DEFAULT_PARTITIONS, partition_for
from libs.mapping import MappingError, to_hubspot
from services.inbound.webhook_events import webhook_event_id
from services.topics import route_topic, topic_name
from tests.reliability.expected import (
    ASSOCIATION_PAIRS,
    ExpectedState,
    HubSpotIndex,
    StateDiff,
    diff_associations,
    diff_records,
    expected_state,
)
from tests.reliability.faults import BadWebhook
from tests.reliability.processes import ProcessFailed
from tests.reliability.system import COMPANY_ID, CONNECTION, PORTAL_ID, System
from tests.reliability.workload import Ledger

KIND_OF_OBJECT = {"companies": "client", "projects": "project"}
UPSERTED = re.compile(r"^HubSpot\w+Upserted$")
INBOUND_WRITE = re.compile(r"^Kleer\w+(Updated|Created)$")


@dataclass
class InvariantResult:
    name: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "figures": self.figures, "problems": self.problems[:60],
                "problem_count": len(self.problems)}


@dataclass
class Snapshot:
    """Both systems' data at one moment."""

    book: dict[str, list[dict[str, Any]]]
    hubspot: dict[str, list[dict[str, Any]]]
    expected: ExpectedState
    index: HubSpotIndex


async def take_snapshot(system: System, ledger: Ledger | None = None) -> Snapshot:
    kleer = await system.sim_get(f"{system.kleer_base}/_sim/state?records=true&company-id={COMPANY_ID}")
    book = kleer[str(COMPANY_ID)]
    hubspot = (await system.sim_get(system.hubspot_base + "/_sim/state?full=true"))["data"]
    pushed: set[str] = set()
    if ledger is not None:
        actions = await system.sim_get(system.hubspot_base + "/_sim/workflow-actions")
        pushed = action_created_invoices(ledger, actions.get("completions", {}))
    return Snapshot(book, hubspot, expected_state(book, pushed), HubSpotIndex.build(hubspot))


def action_created_invoices(ledger: Ledger, completions: Mapping[str, list[Any]]) -> set[str]:
    """Invoices Create Kleer Invoice answered SUCCESS with (directly or through the callback API): pushed to
    HubSpot at once, drafts though they are. A create Kleer did not confirm answers FAIL_CONTINUE ("look the
    record up in Kleer"); a draft it may have left is like any other draft: drafts do not sync (the 12-minute
    soak expected one in HubSpot when its tag was the test)."""
    return {kleer_id for call in ledger.actions if call.action == "create-invoice"
            for kleer_id in action_kleer_ids(call, completions)}


async def read_associations(system: System, index: HubSpotIndex) -> dict[tuple[str, str], dict[str, set[str]]]:
    """Associations of every synced record, read through HubSpot's v4 batch read API."""
    assert system.session is not None
    headers = {"Authorization": f"Bearer {system.secrets.hubspot_token}"}
    out: dict[tuple[str, str], dict[str, set[str]]] = {}
    for from_obj, to_obj in ASSOCIATION_PAIRS:
        ids = sorted({hid for (obj, hid) in index.kleer_id_of if obj == from_obj}, key=int)
        links: dict[str, set[str]] = {}
        for start in range(0, len(ids), 1000):
            body = {"inputs": [{"id": i} for i in ids[start:start + 1000]]}
            url = f"{system.hubspot_base}/crm/v4/associations/{from_obj}/{to_obj}/batch/read"
            answer = await _post_retrying(system.session, url, body, headers)
            for result in answer.get("results", []):
                links[str(result["from"]["id"])] = {str(t["toObjectId"]) for t in result.get("to", [])}
        out[(from_obj, to_obj)] = links
    return out


async def _post_retrying(session: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str]) -> Any:
    import asyncio

    for attempt in range(30):
        async with session.post(url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as resp:
            if resp.status in (429, 502, 503, 504):
                await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))
                continue
            if resp.status >= 400 and resp.status != 207:
                raise RuntimeError(f"POST {url} answered {resp.status}: {(await resp.text())[:300]}")
            return await resp.json()
    raise RuntimeError(f"POST {url}: still rate limited after 30 attempts")


# --- 1. HubSpot matches Kleer ------------------------------------------------------------------------


def check_records(snapshot: Snapshot) -> StateDiff:
    return diff_records(snapshot.expected, snapshot.index)


async def check_hubspot_matches_kleer(system: System, snapshot: Snapshot, dlq: list[dict[str, Any]]) -> InvariantResult:
    diff = check_records(snapshot)
    links = await read_associations(system, snapshot.index)
    diff_associations(snapshot.expected, snapshot.index, links, diff)
    parked = {d["record"] for d in dlq if d["status"] == "open"}
    problems = diff.problems()
    # A record Kleer holds that cannot be mapped must be parked, not silently missing.
    for kind, kleer_id, reason in snapshot.expected.unmappable:
        if f"kleer:{kind}:{kleer_id}" not in parked:
            problems.append(f"unmappable Kleer {kind} {kleer_id} is not in the dead-letter queue ({reason})")
    figures = {**diff.summary(), "expected_records": snapshot.expected.count(),
               "unmappable": len(snapshot.expected.unmappable)}
    return InvariantResult("hubspot_matches_kleer", not problems, problems, figures)


# --- 2. Kleer holds accepted HubSpot edits ------------------------------------------------------------


def check_kleer_holds_edits(snapshot: Snapshot, ledger: Ledger, dlq: list[dict[str, Any]]) -> InvariantResult:
    resource = {"client": "client", "project": "client-project"}
    records = {kind: {str(r["id"]): r for r in snapshot.book.get(res, [])} for kind, res in resource.items()}
    mutated_after: dict[tuple[str, str], float] = {}
    for mutation in ledger.mutations:
        for res, kind in (("client", "client"), ("client-project", "project")):
            for record_id in mutation.changed.get(res, []):
                key = (kind, str(record_id))
                mutated_after[key] = max(mutated_after.get(key, 0.0), mutation.at)
    parked = {d["record"] for d in dlq if d["status"] == "open"}
    last: dict[tuple[str, str, str], tuple[float, str, str]] = {}  # (kind, kleer_id, prop) -> (at, value, hs id)
    for edit in ledger.edits:
        kind = KIND_OF_OBJECT[edit.hubspot_object]
        for prop, value in edit.properties.items():
            last[(kind, edit.kleer_id, prop)] = (edit.at, value, edit.hubspot_id)
    problems: list[str] = []
    checked = superseded = in_dlq = 0
    for (kind, kleer_id, prop), (at, value, hubspot_id) in sorted(last.items()):
        if mutated_after.get((kind, kleer_id), 0.0) > at:
            superseded += 1
            continue
        singular = "company" if kind == "client" else "project"
        if {f"kleer:{kind}:{kleer_id}", f"hubspot:{singular}:{hubspot_id}"} & parked:
            in_dlq += 1
            continue
        record = records[kind].get(kleer_id)
        if record is None:
            problems.append(f"Kleer {kind} {kleer_id} (HubSpot {hubspot_id}) no longer exists; edit {prop}={value!r}")
            continue
        checked += 1
        try:
            have = to_hubspot(kind, record).get(prop)
        except MappingError as exc:
            problems.append(f"Kleer {kind} {kleer_id} cannot be mapped: {exc}")
            continue
        if have != value:
            problems.append(f"Kleer {kind} {kleer_id} (HubSpot {hubspot_id}) {prop}: the HubSpot edit {value!r} "
                            f"is lost; Kleer holds {have!r}")
    figures = {"edits": len(ledger.edits), "last_values_checked": checked, "superseded_by_kleer_change": superseded,
               "parked_in_dlq": in_dlq}
    return InvariantResult("kleer_holds_hubspot_edits", not problems, problems, figures)


# --- 3. Companies created in HubSpot ----------------------------------------------------------------


def check_created_companies(snapshot: Snapshot, ledger: Ledger, dlq: list[dict[str, Any]]) -> InvariantResult:
    companies = {str(r["id"]): r for r in snapshot.hubspot.get("companies", [])}
    clients = snapshot.book.get("client", [])
    by_foreign: dict[str, list[str]] = defaultdict(list)
    for client in clients:
        if client.get("foreign-id"):
            by_foreign[client["foreign-id"]].append(str(client["id"]))
    client_ids = {str(c["id"]) for c in clients}
    parked = {d["record"] for d in dlq if d["status"] == "open"}
    problems: list[str] = []
    linked = 0
    for created in ledger.created_companies:
        company = companies.get(created.hubspot_id)
        if company is None:
            problems.append(f"company {created.hubspot_id} ({created.name}) vanished from HubSpot")
            continue
        kleer_id = (company.get("properties") or {}).get("kleer_id")
        dupes = [ids for fid, ids in by_foreign.items() if fid.endswith(f"-{created.hubspot_id}") and len(ids) > 1]
        if dupes:
            problems.append(f"company {created.hubspot_id} has {len(dupes[0])} Kleer clients: {dupes[0]}")
        named = [str(c["id"]) for c in clients if c.get("name") == created.name]
        if len(named) > 1:
            problems.append(f"company {created.hubspot_id} ({created.name}): Kleer holds {len(named)} clients "
                            f"of that name: {named}")
        if not kleer_id:
            if f"hubspot:company:{created.hubspot_id}" in parked:
                continue
            problems.append(f"company {created.hubspot_id} ({created.name}) was never linked to a Kleer client")
        elif kleer_id not in client_ids:
            problems.append(f"company {created.hubspot_id} carries kleer_id {kleer_id}, which Kleer does not have")
        else:
            linked += 1
    figures = {"created": len(ledger.created_companies), "linked": linked}
    return InvariantResult("hubspot_created_companies_linked", not problems, problems, figures)


# --- 3b. Workflow actions ------------------------------------------------------------------------------

_ACTION_RECORDS = {  # action -> (Kleer resource, field holding our tag, deal property linking it)
    "create-invoice": ("client-invoice", "your-reference", "kleer_invoice_id"),
    "create-agreement": ("client-agreement", "description", "kleer_agreement_id"),
    "update-agreement": ("client-agreement", "description", "kleer_agreement_id"),
    "create-project": ("client-project", "your-reference", "kleer_project_id"),
}


def _credits(record: Mapping[str, Any], debit: Mapping[str, Any] | None) -> bool:
    """``record`` is a credit invoice of ``debit``: the workload credits paid invoices, the action-created
    ones too, and a credit invoice copies its debit invoice's fields, our tag among them."""
    credited = record.get("debit-invoice-nr")
    return debit is not None and credited is not None and credited == debit.get("invoice-nr")


def check_workflow_actions(snapshot: Snapshot, ledger: Ledger, completions: Mapping[str, list[Any]]) -> InvariantResult:
    """Each action call got an answer; a SUCCESS created exactly one Kleer record (the same one for every
    repeat of its callbackId) linked from the deal; a BLOCK was completed through the callback API."""
    deals = {str(r["id"]): r.get("properties") or {} for r in snapshot.hubspot.get("deals", [])}
    companies = {str(r["id"]): r.get("properties") or {} for r in snapshot.hubspot.get("companies", [])}
    problems: list[str] = []
    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    deleted_later = {(res, str(i)) for m in ledger.mutations for res, ids in m.deleted.items() for i in ids}
    for call in ledger.actions:
        final = call.final()
        where = f"{call.action} {call.callback_id} ({call.object_type.lower()} {call.object_id})"
        if final is None:
            problems.append(f"{where}: never answered 200 ({[a.get('status') for a in call.answers]}; "
                            f"{call.answers[-1].get('error') if call.answers else 'no attempt'})")
            continue
        state, output = final.get("state"), final.get("output") or {}
        if state == "BLOCK":
            done = completions.get(call.callback_id) or []
            if not done:
                problems.append(f"{where}: answered BLOCK and was never completed through the callback API")
                continue
            output = done[-1]
            state = output.get("hs_execution_state")
        outcomes[f"{call.action}: {state}"] += 1
        ids = {str((a.get("output") or {}).get("kleer_id")) for a in call.answers
               if a.get("state") == "SUCCESS"} - {"None", ""}
        if len(ids) > 1:
            problems.append(f"{where}: repeats of one callbackId answered different Kleer ids {sorted(ids)}")
        if state == "FAIL_CONTINUE":
            message = str(output.get("message") or "")
            if not message.strip():
                problems.append(f"{where}: FAIL_CONTINUE without a reason")
            reasons[message[:70]] += 1
            continue
        if state != "SUCCESS":
            problems.append(f"{where}: final state {state!r}, output {output}")
            continue
        kleer_id = str(output.get("kleer_id") or "")
        if call.action == "create-client":
            linked = (companies.get(call.object_id) or {}).get("kleer_id")
            if linked != kleer_id:
                problems.append(f"{where}: answered client {kleer_id}, the company carries kleer_id {linked!r}")
            continue
        resource, tag_field, link = _ACTION_RECORDS[call.action]
        if (resource, kleer_id) in deleted_later:
            outcomes[f"{call.action}: deleted later in Kleer"] += 1
            continue
        records = snapshot.book.get(resource, [])
        answered = next((r for r in records if str(r["id"]) == kleer_id), None)
        tagged = [str(r["id"]) for r in records if r.get(tag_field) == call.tag and not _credits(r, answered)]
        if tagged != [kleer_id]:
            problems.append(f"{where}: answered Kleer {resource} {kleer_id}, Kleer holds {tagged} tagged {call.tag}")
        deal_link = (deals.get(call.object_id) or {}).get(link)
        if deal_link != kleer_id:
            problems.append(f"{where}: the deal's {link} is {deal_link!r}, not {kleer_id}")
    figures = {"calls": len(ledger.actions), "repeated_callback_sends": sum(max(0, len(c.answers) - 1)
                                                                           for c in ledger.actions),
               "outcomes": dict(sorted(outcomes.items())), "fail_continue_reasons": dict(reasons.most_common(8))}
    return InvariantResult("workflow_actions_applied_once", not problems, problems, figures)


# --- 4. Webhooks recorded -----------------------------------------------------------------------------


async def check_webhooks_recorded(
    conn: asyncpg.Connection, system: System, ledger: Ledger, bad: list[BadWebhook],
    hubspot_stats: Mapping[str, Any] | None = None,
) -> InvariantResult:
    accepted = set(system.proxy.accepted) | ledger.load.accepted_events
    ids = [webhook_event_id(PORTAL_ID, e) for e in accepted]
    found = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM events WHERE event_id = ANY($1::uuid[])",
                                                     ids)}
    lost = sorted(e for e in accepted if webhook_event_id(PORTAL_ID, e) not in found)
    problems = [f"webhook event {e} was answered 2xx but is not in the log" for e in lost[:50]]
    if len(lost) > 50:
        problems.append(f"... {len(lost)} lost in all")
    refused: Counter[str] = Counter()
    for item in bad:
        if item.status not in item.expected:
            problems.append(f"{item.kind}: answered {item.status}, expected {item.expected}")
        portal = PORTAL_ID + 1 if item.kind == "webhook_cross_portal" else PORTAL_ID
        present = await conn.fetchval(
            "SELECT count(*) FROM events WHERE event_id = ANY($1::uuid[])",
            [webhook_event_id(portal, e) for e in item.event_ids],
        )
        if item.must_not_be_recorded and present:
            problems.append(f"{item.kind}: {present} of its events were recorded")
        if not item.must_not_be_recorded and present != len(item.event_ids):
            problems.append(f"{item.kind}: {present} of {len(item.event_ids)} replayed events in the log")
        refused[item.kind] += 1
    given_up = sorted(ledger.load.given_up_events)
    hubspot_gave_up = int((hubspot_stats or {}).get("batches_given_up", 0))
    if hubspot_gave_up:
        problems.append(f"the HubSpot simulator gave up {hubspot_gave_up} webhook batch(es) after all its retries: "
                        "the inbound service did not answer 2xx for longer than HubSpot retries")
    if given_up:
        problems.append(f"{len(given_up)} load events were never answered 2xx in 10 attempts (about 30 s)")
    figures = {"hubspot_sim_batches_given_up": hubspot_gave_up, "accepted_events": len(accepted),
               "from_hubspot_sim": len(system.proxy.accepted), "from_load": len(ledger.load.accepted_events), "lost": len(lost),
               "load_events_given_up_after_retries": len(given_up), "bad_requests_checked": dict(refused),
               "proxy_statuses": {str(k): v for k, v in sorted(system.proxy.statuses.items())}}
    return InvariantResult("webhooks_recorded", not problems, problems, figures)


# --- 5. Everything handled ----------------------------------------------------------------------------


async def check_everything_handled(conn: asyncpg.Connection, dlq: list[dict[str, Any]], prefix: str,
                                   partitions: int = DEFAULT_PARTITIONS) -> InvariantResult:
    checkpoints: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
    for row in await conn.fetch("SELECT consumer, topic, partition, position FROM consumer_checkpoints"):
        checkpoints[(row["consumer"], row["topic"])][row["partition"]] = row["position"]
    consumers_of: dict[str, list[str]] = defaultdict(list)
    for consumer, topic in checkpoints:
        consumers_of[topic].append(consumer)
    rows = await conn.fetch("SELECT stream, type, max(position) AS last FROM events GROUP BY stream, type")
    problems: list[str] = []
    routed: Counter[str] = Counter()
    for row in rows:
        logical = route_topic(row["type"])
        if logical is None:
            continue
        topic = topic_name(logical, prefix)
        routed[topic] += 1
        consumers = consumers_of.get(topic, [])
        if not consumers:
            problems.append(f"no consumer ever checkpointed {topic}, which carries {row['type']}")
            continue
        partition = partition_for(row["stream"], partitions)
        for consumer in consumers:
            done = checkpoints[(consumer, topic)].get(partition, 0)
            if done < row["last"]:
                problems.append(f"{consumer} has not handled {row['type']} at position {row['last']} of "
                                f"{row['stream']} (its checkpoint on {topic}[{partition}] is {done})")
    problems = sorted(set(problems))
    for entry in dlq:
        if not (entry.get("reason") or "").strip():
            problems.append(f"dead letter {entry['id']} ({entry['record']}) has no reason")
    open_by_reason = Counter(f"{d['source']}: {d['reason'][:80]}" for d in dlq if d["status"] == "open")
    figures = {"topics": {t: sorted(c) for t, c in consumers_of.items()}, "record_streams_routed": dict(routed),
               "dead_letters_open": sum(open_by_reason.values()), "dead_letters_by_reason": dict(open_by_reason)}
    return InvariantResult("everything_handled", not problems, problems, figures)


# --- 6. No ping-pong -----------------------------------------------------------------------------------


def action_kleer_ids(call: Any, completions: Mapping[str, list[Any]]) -> set[str]:
    """The Kleer ids a workflow action call answered SUCCESS with, directly or through the callback API."""
    outputs = [a.get("output") or {} for a in call.answers if a.get("state") == "SUCCESS"]
    outputs += [o for o in completions.get(call.callback_id, []) if o.get("hs_execution_state") == "SUCCESS"]
    return {str(o.get("kleer_id")) for o in outputs} - {"None", ""}


async def check_no_ping_pong(
    conn: asyncpg.Connection, snapshot: Snapshot, ledger: Ledger, completions: Mapping[str, list[Any]]
) -> InvariantResult:
    """Writes per Kleer record against the real changes that caused them.

    Allowed writes (``HubSpot…Upserted`` + ``Kleer…Updated/Created``) per record: 1 for its first sync,
    1 per Kleer change, 2 per HubSpot edit, company created in HubSpot or workflow action (the write to
    Kleer, and at most one write back to HubSpot: "back and forth once"), plus 1 for a crash redo.
    A loop would blow through this at once.
    """
    rows = await conn.fetch(
        "SELECT stream, type, count(*) AS n FROM events WHERE stream LIKE $1 GROUP BY stream, type",
        f"{CONNECTION}/kleer-%",
    )
    writes: Counter[str] = Counter()
    upserts: Counter[str] = Counter()
    for row in rows:
        if UPSERTED.match(row["type"]) or INBOUND_WRITE.match(row["type"]):
            writes[row["stream"]] += row["n"]
        if UPSERTED.match(row["type"]):
            upserts[row["stream"]] += row["n"]
    allowance: Counter[str] = Counter()
    real: Counter[str] = Counter()

    def add(kind: str, kleer_id: object, allowed: int) -> None:
        stream = f"{CONNECTION}/kleer-{kind}/{kleer_id}"
        allowance[stream] += allowed
        real[stream] += 1

    resource_kind = {"client": "client", "product": "product", "client-project": "project",
                     "client-invoice": "invoice", "client-agreement": "agreement"}
    for mutation in ledger.mutations:
        for res, ids in mutation.changed.items():
            for record_id in ids:
                add(resource_kind[res], record_id, 1)
    for edit in ledger.edits:
        add(KIND_OF_OBJECT[edit.hubspot_object], edit.kleer_id, 2)
    companies = {str(r["id"]): (r.get("properties") or {}).get("kleer_id") for r in snapshot.hubspot.get("companies", [])}
    for created in ledger.created_companies:
        if companies.get(created.hubspot_id):
            add("client", companies[created.hubspot_id], 2)
    action_kind = {"create-client": "client", "create-invoice": "invoice", "create-agreement": "agreement",
                   "update-agreement": "agreement", "create-project": "project"}
    for call in ledger.actions:
        for kleer_id in action_kleer_ids(call, completions):
            add(action_kind[call.action], kleer_id, 2)
    parents = {stream.rsplit("/", 1)[1]: n for stream, n in allowance.items()
               if "/kleer-invoice/" in stream or "/kleer-agreement/" in stream}
    problems: list[str] = []
    worst = 0.0
    for stream, n in sorted(writes.items()):
        if "/kleer-line_item/" in stream:
            allowed = 1 + parents.get(stream.rsplit("/", 1)[1].split("-", 1)[0], 0)
        else:
            allowed = 1 + allowance.get(stream, 0)
        worst = max(worst, n / allowed)
        if n > allowed + 1:
            problems.append(f"{stream}: {n} writes where its first sync and {real.get(stream, 0)} real change(s) "
                            f"allow {allowed}")
    figures = {"records_written": len(writes), "writes": sum(writes.values()), "hubspot_upserts": sum(upserts.values()),
               "real_changes_recorded_by_workload": sum(real.values()),
               "worst_writes_per_allowed": round(worst, 2)}
    return InvariantResult("no_ping_pong", not problems, problems, figures)


# --- 7. Secrets ------------------------------------------------------------------------------------------


def check_no_secrets(system: System, extra_files: Iterable[Any] = ()) -> InvariantResult:
    secrets = system.secrets.named()
    problems: list[str] = []
    scanned = 0
    for path in [*system.log_files(), *extra_files]:
        text = path.read_text(errors="replace")
        scanned += len(text)
        for name, value in secrets.items():
            if value in text:
                line = next(i for i, ln in enumerate(text.splitlines(), 1) if value in ln)
                problems.append(f"{name} appears in {path.name} (line {line})")
    return InvariantResult("no_secrets_in_logs", not problems, problems,
                           {"log_files": len(system.log_files()), "bytes_scanned": scanned})


# --- 8. Processes ----------------------------------------------------------------------------------------


def check_processes(system: System) -> InvariantResult:
    """Every process runs at the end, and none exited on its own while running.

    The supervisor restarts a service that exits (as Kubernetes would), so the
    run goes on, but an exit is a failure of this invariant: services retry
    what fails (the broker, the database, Kleer, HubSpot) instead of crashing.
    The one exit allowed: a service (re)started while Postgres was down may
    refuse to start (``cannot connect to PostgreSQL``), and is started again.
    """
    problems = []
    for process in system.processes.values():
        try:
            process.check_running()
        except ProcessFailed as exc:
            problems.append(str(exc))
    for exit_ in system.exits:
        if not (exit_["phase"] == "start-up" and exit_["while_postgres_down"]):
            problems.append(f"{exit_['process']} exited with code {exit_['exit_code']} ({exit_['phase']}, "
                            f"{exit_['at_s']}s after the start; restarted by the runner): {exit_['detail']}")
    figures = {name: {"starts": p.starts, "sigkills": p.kills, "own_exits": len(p.exits)}
               for name, p in system.processes.items()}
    return InvariantResult("processes_stayed_up", not problems, problems, figures)


async def dead_letters(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT id, source, record, reason, status FROM dead_letters ORDER BY id")
    return [dict(r) for r in rows]


async def event_counts(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type")
    return {r["type"]: r["n"] for r in rows}


def format_failures(results: Iterable[InvariantResult]) -> str:
    lines = []
    for result in results:
        if result.ok:
            continue
        lines.append(f"INVARIANT {result.name} FAILED ({len(result.problems)} problem(s)):")
        lines.extend(f"  - {p}" for p in result.problems[:40])
    return "\n".join(lines)


def merge_figures(results: Iterable[InvariantResult]) -> Mapping[str, Any]:
    return {r.name: r.figures for r in results}
