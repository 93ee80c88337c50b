"""The workload: what users and HubSpot do while faults run, and the ledger of it the invariants check.

- Kleer bookkeeping: ``POST /_sim/mutate`` on the Kleer simulator (a small
  share of every resource changes; new clients with invoices appear).
- People editing HubSpot: ``POST /_sim/ui-edit/{companies|projects}/{id}`` of
  a triggering property (changeSource ``CRM_UI``); the simulator sends the
  signed webhooks, through the recording proxy, to the inbound service.
- People creating companies in HubSpot (``/_sim/ui-create/companies``): the
  inbound service creates the Kleer client and links it.
- Workflow actions: ``POST /_sim/workflow-actions/invoke`` (when the action
  routes exist), some with a ``callbackId`` sent again later.
- Sustained webhook load: signed batches straight to ``/webhooks/hubspot`` at
  a target rate, events the handlers must record and then drop (deal changes,
  one-way company properties), retried like HubSpot retries (same
  ``eventId``, new signature) when not answered 2xx.

All choices come from one ``random.Random(seed)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from libs.hubspot.signatures import v3_headers
from tests.reliability.system import APP_ID, PORTAL_ID, System

# Company edits: canonical triggering properties with values Kleer accepts; n makes each value unique.
COMPANY_EDITS: dict[str, Any] = {
    "name": lambda n, rng: f"Tillförlitlig {n} AB",
    "phone": lambda n, rng: f"08-{n:03d} {rng.randrange(10, 99)} 00",
    "address": lambda n, rng: f"Provgatan {n}",
    "city": lambda n, rng: f"Provstad {n}",
    "description": lambda n, rng: f"Ändrad i HubSpot #{n}",
    "invoice_email": lambda n, rng: f"faktura{n}@prov.example.se",
    "kleer_payment_days": lambda n, rng: str(rng.choice((10, 15, 20, 30, 45, 60))),
}
#: The sourceId of the synthetic load's events (diagnostics leave them out of record timelines).
LOAD_SOURCES = ("userId:77", "userId:78")
PROJECT_EDITS: dict[str, Any] = {
    "hs_name": lambda n, rng: f"Projekt {n}",
    "kleer_comment": lambda n, rng: f"Kommentar {n}",
}


@dataclass
class Edit:
    at: float
    hubspot_object: str
    hubspot_id: str
    kleer_id: str
    properties: dict[str, str]
    status: int  # the simulator's answer


@dataclass
class Mutation:
    at: float
    changed: dict[str, list[int]]
    created: dict[str, list[int]]
    deleted: dict[str, list[int]]


@dataclass
class CreatedCompany:
    at: float
    hubspot_id: str
    name: str


@dataclass
class ActionCall:
    """One workflow action a HubSpot workflow ran: every answer it got, by callbackId."""

    action: str
    callback_id: str
    object_type: str  # DEAL | COMPANY
    object_id: str
    tag: str  # unique text we put in the Kleer record (its reference or description)
    company_id: str
    inputs: dict[str, str] = field(default_factory=dict)
    answers: list[dict[str, Any]] = field(default_factory=list)  # {"status", "state", "output", "at"}

    def final(self) -> dict[str, Any] | None:
        """The last answer with a status of 200, if any."""
        done = [a for a in self.answers if a.get("status") == 200]
        return done[-1] if done else None


@dataclass
class LoadStats:
    """The synthetic webhook load: requests and their outcomes, by time."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    accepted_at: list[float] = field(default_factory=list)  # time of each 2xx
    latencies_ms: list[float] = field(default_factory=list)
    accepted_events: set[int] = field(default_factory=set)
    given_up_events: set[int] = field(default_factory=set)
    events_per_request: int = 10

    def rate_between(self, start: float, end: float) -> float:
        if end <= start:
            return 0.0
        return sum(1 for t in self.accepted_at if start <= t <= end) / (end - start)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


@dataclass
class Ledger:
    edits: list[Edit] = field(default_factory=list)
    mutations: list[Mutation] = field(default_factory=list)
    created_companies: list[CreatedCompany] = field(default_factory=list)
    actions: list[ActionCall] = field(default_factory=list)
    load: LoadStats = field(default_factory=LoadStats)
    failures: Counter[str] = field(default_factory=Counter)  # workload calls that failed (not invariants)

    def summary(self) -> dict[str, Any]:
        return {
            "kleer_mutations": len(self.mutations),
            "kleer_records_changed": sum(len(ids) for m in self.mutations for ids in m.changed.values()),
            "kleer_records_created": sum(len(ids) for m in self.mutations for ids in m.created.values()),
            "hubspot_edits": len(self.edits),
            "hubspot_companies_created": len(self.created_companies),
            "workflow_actions": len(self.actions),
            "workload_call_failures": dict(self.failures),
        }


class HubSpotDirectory:
    """Linked companies and projects in the HubSpot simulator (refreshed from ``/_sim/state``)."""

    def __init__(self) -> None:
        self.companies: list[tuple[str, str]] = []  # (hubspot id, kleer_id)
        self.projects: list[tuple[str, str]] = []
        self.refreshed = 0.0

    async def refresh(self, system: System) -> None:
        state = await system.sim_get(system.hubspot_base + "/_sim/state?full=true")
        data = state.get("data", {})
        self.companies = [(str(r["id"]), r["properties"]["kleer_id"]) for r in data.get("companies", [])
                          if (r.get("properties") or {}).get("kleer_id")]
        self.projects = [(str(r["id"]), r["properties"]["kleer_id"]) for r in data.get("projects", [])
                         if (r.get("properties") or {}).get("kleer_id")]
        self.refreshed = time.monotonic()


@dataclass
class WorkloadConfig:
    mutate_every: float = 4.0
    mutate_share: float = 0.01
    edit_every: float = 0.8
    project_edit_share: float = 0.2
    create_company_every: float = 12.0
    load_rate: float = 50.0  # webhook requests per second
    load_events_per_request: int = 10
    load_concurrency: int = 32
    action_every: float = 6.0
    action_repeat_share: float = 0.4  # calls HubSpot sends again with the same callbackId


class Workload:
    def __init__(self, system: System, config: WorkloadConfig, seed: int, ledger: Ledger | None = None) -> None:
        self.system = system
        self.config = config
        self.rng = random.Random(seed)
        self.ledger = ledger or Ledger()
        self.directory = HubSpotDirectory()
        self._counter = 0
        self._event_ids = iter(range(10**12 + (seed % 10_000) * 10**8, 10**15))
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._load_session: aiohttp.ClientSession | None = None
        self._retrying: set[asyncio.Task[None]] = set()

    def _next(self) -> int:
        self._counter += 1
        return self._counter

    async def start(self) -> None:
        await self.directory.refresh(self.system)
        self._load_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        self._stop.clear()
        loops = [
            ("mutator", self._every(self.config.mutate_every, self.mutate_kleer)),
            ("editor", self._every(self.config.edit_every, self.edit_hubspot)),
            ("creator", self._every(self.config.create_company_every, self.create_company)),
            ("actions", self._every(self.config.action_every, self.run_workflow_action)),
            ("directory", self._every(8.0, lambda: self.directory.refresh(self.system))),
        ]
        if self.config.load_rate > 0:
            loops.append(("load", self._load()))
        self._tasks = [asyncio.create_task(coro, name=f"workload-{name}") for name, coro in loops]
        for task in self._tasks:
            task.add_done_callback(self._note_crash)

    def _note_crash(self, task: asyncio.Task[None]) -> None:
        """A workload loop that died is a broken test, not a quiet gap in the load: record it."""
        if not task.cancelled() and task.exception() is not None:
            self.ledger.failures[f"{task.get_name()} crashed: {task.exception()!r}"] += 1

    async def stop(self) -> None:
        """Stop the loops between actions: an action in flight finishes and is recorded in the ledger
        (cancelled mid-call, an edit HubSpot already applied would be missing from it)."""
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=30)
            for task in pending:
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Batches still being retried: give them their last attempts.
        if self._retrying:
            await asyncio.wait(list(self._retrying), timeout=30)
        if self._load_session is not None:
            await self._load_session.close()

    async def _every(self, seconds: float, action: Any) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.rng.uniform(0.5 * seconds, 1.5 * seconds))
            if self._stop.is_set():
                return
            try:
                await action()
            except (aiohttp.ClientError, TimeoutError, OSError, RuntimeError, KeyError, ValueError) as exc:
                self.ledger.failures[f"{getattr(action, '__name__', 'action')}: {type(exc).__name__}"] += 1

    # --- Kleer -------------------------------------------------------------------------------------

    async def mutate_kleer(self) -> None:
        answer = await self.system.sim_post(
            self.system.kleer_base + "/_sim/mutate",
            {"share": self.config.mutate_share, "seed": self.rng.randrange(1, 2**31)},
        )
        self.ledger.mutations.append(
            Mutation(time.time(), answer["changed"], answer["created"], answer["deleted"])
        )

    # --- HubSpot edits ------------------------------------------------------------------------------

    async def edit_hubspot(self) -> None:
        use_project = self.directory.projects and self.rng.random() < self.config.project_edit_share
        pool, obj, edits = (
            (self.directory.projects, "projects", PROJECT_EDITS) if use_project
            else (self.directory.companies, "companies", COMPANY_EDITS)
        )
        if not pool:
            return
        hubspot_id, kleer_id = self.rng.choice(pool)
        n = self._next()
        names = self.rng.sample(sorted(edits), k=1 if self.rng.random() < 0.7 else 2)
        properties = {name: edits[name](n, self.rng) for name in names}
        at = time.time()
        assert self.system.session is not None
        async with self.system.session.post(
            f"{self.system.hubspot_base}/_sim/ui-edit/{obj}/{hubspot_id}",
            json={"properties": properties}, timeout=aiohttp.ClientTimeout(total=20),
        ) as resp:
            await resp.read()
            status = resp.status
        if status >= 400:
            self.ledger.failures[f"ui-edit {obj}: HTTP {status}"] += 1
            return
        self.ledger.edits.append(Edit(at, obj, hubspot_id, kleer_id, properties, status))

    async def create_company(self) -> None:
        n = self._next()
        name = f"Nyskapad {n} i HubSpot AB"
        assert self.system.session is not None
        async with self.system.session.post(
            f"{self.system.hubspot_base}/_sim/ui-create/companies",
            json={"properties": {"name": name, "phone": f"031-{n:03d} 00 00", "city": "Göteborg"}},
            timeout=aiohttp.ClientTimeout(total=20),
        ) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                self.ledger.failures[f"ui-create companies: HTTP {resp.status}"] += 1
                return
        record = orjson.loads(raw)
        self.ledger.created_companies.append(CreatedCompany(time.time(), str(record["id"]), name))

    # --- workflow actions -------------------------------------------------------------------------------

    async def _api(self, method: str, path: str, body: Any = None) -> Any:
        """A HubSpot API call with our token (the simulator's rate limit applies), retried on 429/5xx."""
        assert self.system.session is not None
        headers = {"Authorization": f"Bearer {self.system.secrets.hubspot_token}"}
        for attempt in range(12):
            async with self.system.session.request(method, self.system.hubspot_base + path, json=body,
                                                   headers=headers, timeout=aiohttp.ClientTimeout(total=20)) as resp:
                raw = await resp.read()
                if resp.status in (429, 502, 503, 504, 599):
                    await asyncio.sleep(min(3.0, 0.3 * (attempt + 1)))
                    continue
                if resp.status >= 400:
                    raise RuntimeError(f"{method} {path}: HTTP {resp.status} {raw[:200]!r}")
                return orjson.loads(raw) if raw else None
        raise RuntimeError(f"{method} {path}: still failing after retries")

    async def _ui_create(self, obj: str, properties: dict[str, str]) -> str:
        record = await self.system.sim_post(f"{self.system.hubspot_base}/_sim/ui-create/{obj}",
                                            {"properties": properties})
        return str(record["id"])

    async def _deal(self, n: int, company_id: str, recurring: bool) -> str:
        deal_id = await self._ui_create("deals", {"dealname": f"Affär {n}"})
        await self._api("PUT", f"/crm/v4/objects/deals/{deal_id}/associations/default/companies/{company_id}")
        for row in range(1, self.rng.randint(1, 3) + 1):
            props = {"name": f"Rad {row} av affär {n}", "quantity": str(self.rng.randint(1, 5)),
                     "price": f"{self.rng.randint(100, 5000)}.{self.rng.choice(('00', '50', '25'))}"}
            if recurring:
                props["recurringbillingfrequency"] = "monthly"
            item_id = await self._ui_create("line_items", props)
            await self._api("PUT", f"/crm/v4/objects/deals/{deal_id}/associations/default/line_items/{item_id}")
        return deal_id

    async def run_workflow_action(self) -> None:
        """A deal workflow (create invoice / agreement / project, update agreement) or Create Kleer Client."""
        if not self.directory.companies:
            return
        n = self._next()
        tag = f"wf-{self.system.secrets.kleer_token[-6:]}-{n}"
        agreements = [a for a in self.ledger.actions if a.action == "create-agreement" and a.final()
                      and (a.final() or {}).get("state") == "SUCCESS"]
        roll = self.rng.random()
        if roll < 0.15 and self.ledger.created_companies:
            company = self.rng.choice(self.ledger.created_companies)
            call = ActionCall("create-client", f"cb-{tag}", "COMPANY", company.hubspot_id, tag, company.hubspot_id,
                              {"payment_days": "20"})
        elif roll < 0.3 and agreements:
            earlier = self.rng.choice(agreements)
            item_id = await self._ui_create("line_items", {"name": f"Tillägg {n}", "quantity": "1",
                                                          "price": "99.00", "recurringbillingfrequency": "monthly"})
            await self._api("PUT", f"/crm/v4/objects/deals/{earlier.object_id}/associations/default/line_items/"
                                   f"{item_id}")
            call = ActionCall("update-agreement", f"cb-{tag}", "DEAL", earlier.object_id, earlier.tag,
                              earlier.company_id, {"change_type": "upsell"})
        else:
            action = self.rng.choice(("create-invoice", "create-agreement", "create-project"))
            company_id, _ = self.rng.choice(self.directory.companies)
            deal_id = await self._deal(n, company_id, recurring=action == "create-agreement")
            inputs = {"create-invoice": {"your_reference": tag, "payment_days": "30"},
                      "create-agreement": {"description": tag, "invoice_interval_months": "1"},
                      "create-project": {"project_name": f"Projekt {tag}", "your_reference": tag,
                                         "budget_hours": "40"}}[action]
            call = ActionCall(action, f"cb-{tag}", "DEAL", deal_id, tag, company_id, inputs)
        self.ledger.actions.append(call)
        sends = 2 if self.rng.random() < self.config.action_repeat_share else 1
        together = sends == 2 and self.rng.random() < 0.5
        if together:  # the same callbackId twice at once
            await asyncio.gather(self.invoke(call), self.invoke(call))
        else:
            for _ in range(sends):
                await self.invoke(call)

    async def invoke(self, call: ActionCall, attempts: int = 4) -> None:
        """HubSpot calls the action (it retries 429/5xx/timeouts itself, ``attempts`` times)."""
        from services.inbound.actions import catalog

        definition = catalog.definition(call.action)
        assert definition is not None
        wanted = (definition.source.get("objectRequestOptions") or {}).get("properties", [])
        body = {"url": self.system.public_url + definition.path, "objectType": call.object_type,
                "objectId": call.object_id, "propertiesToFetch": wanted, "inputFields": call.inputs,
                "callbackId": call.callback_id, "max_attempts": attempts, "timeout_s": 10}
        try:
            answer = await self.system.sim_post(self.system.hubspot_base + "/_sim/workflow-actions/invoke", body)
        except (RuntimeError, aiohttp.ClientError, TimeoutError) as exc:
            call.answers.append({"status": None, "error": str(exc)[:200], "at": time.time()})
            return
        output = (answer.get("response") or {}).get("outputFields") if isinstance(answer.get("response"), dict) else None
        call.answers.append({"status": answer.get("status"), "state": (output or {}).get("hs_execution_state"),
                             "output": output, "at": time.time(),
                             "error": None if output else str(answer.get("response"))[:200]})

    async def finish_actions(self) -> None:
        """HubSpot keeps calling an action until it gets an answer: call the unanswered ones again."""
        for call in self.ledger.actions:
            if call.final() is None:
                await self.invoke(call, attempts=6)

    # --- sustained webhook load -------------------------------------------------------------------------

    def _load_events(self) -> list[dict[str, Any]]:
        now = int(time.time() * 1000)
        events: list[dict[str, Any]] = []
        for _ in range(self.config.load_events_per_request):
            event_id = next(self._event_ids)
            if self.directory.companies and self.rng.random() < 0.2:
                hubspot_id, _ = self.rng.choice(self.directory.companies)
                # A one-way (non-triggering) mapped property: recorded, then dropped by the handlers.
                events.append({"eventId": event_id, "subscriptionId": 901, "portalId": PORTAL_ID, "appId": APP_ID,
                               "occurredAt": now, "subscriptionType": "company.propertyChange",
                               "attemptNumber": 0, "objectId": int(hubspot_id), "propertyName": "kleer_contact",
                               "propertyValue": f"Kontakt {event_id % 1000}", "changeSource": "CRM_UI",
                               "sourceId": "userId:77"})
            else:
                events.append({"eventId": event_id, "subscriptionId": 902, "portalId": PORTAL_ID, "appId": APP_ID,
                               "occurredAt": now, "subscriptionType": "deal.propertyChange", "attemptNumber": 0,
                               "objectId": self.rng.randrange(1, 10**6), "propertyName": "amount",
                               "propertyValue": str(self.rng.randrange(1000, 100000)), "changeSource": "CRM_UI",
                               "sourceId": "userId:78"})
        return events

    async def _load(self) -> None:
        stats = self.ledger.load
        stats.events_per_request = self.config.load_events_per_request
        interval = 1.0 / self.config.load_rate
        slots = asyncio.Semaphore(self.config.load_concurrency)
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                next_at = time.monotonic()  # we fell behind (all slots busy): do not burst to catch up
            await slots.acquire()
            task = asyncio.create_task(self._deliver(self._load_events(), slots))
            self._retrying.add(task)
            task.add_done_callback(self._retrying.discard)

    async def _deliver(self, events: list[dict[str, Any]], slots: asyncio.Semaphore | None) -> None:
        """Send one batch the way HubSpot does: retried (same events, fresh signature) until 2xx."""
        stats = self.ledger.load
        url = self.system.webhook_url
        assert self._load_session is not None
        try:
            for attempt in range(10):  # about 30 s; HubSpot itself retries for a day
                for event in events:
                    event["attemptNumber"] = attempt
                body = orjson.dumps(events)
                headers = {"Content-Type": "application/json",
                           **v3_headers(self.system.secrets.client_secret, "POST", url, body,
                                        int(time.time() * 1000))}
                started = time.monotonic()
                stats.sent += 1
                try:
                    async with self._load_session.post(url, data=body, headers=headers,
                                                       timeout=aiohttp.ClientTimeout(total=5)) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    stats.errors[type(exc).__name__] += 1
                    status = 0
                else:
                    stats.statuses[status] += 1
                stats.latencies_ms.append((time.monotonic() - started) * 1000)
                if 200 <= status < 300:
                    stats.accepted_at.append(time.monotonic())
                    stats.accepted_events.update(e["eventId"] for e in events)
                    return
                if slots is not None:  # retries do not hold a slot of the open-loop sender
                    slots.release()
                    slots = None
                await asyncio.sleep(min(4.0, 0.25 * 2**attempt) * self.rng.uniform(0.8, 1.2))
            stats.given_up_events.update(e["eventId"] for e in events)
        finally:
            if slots is not None:
                slots.release()
