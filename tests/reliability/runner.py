"""The scenario runner: start everything, sync, run workload and faults, settle, check the invariants.

``await run_scenario(ScenarioConfig(...))`` returns a ``ScenarioReport``
(JSON-ready with ``to_json``): faults injected by kind, events processed,
the webhook load held while faults ran, and every invariant's result with the
divergences it found. Phases:

1. start: a private Postgres cluster with a fresh database, broker, simulators,
   ``hubspot setup``, services; from here on a supervisor restarts any service
   that exits on its own, as Kubernetes would, and records the exit (the
   ``processes_stayed_up`` invariant reports it);
2. first sync: wait (bounded) until HubSpot holds the seeded book;
3. faults: the workload runs while the seeded fault plan is injected;
4. settle: faults cleared, workload stopped; poll (bounded) until HubSpot
   matches Kleer, no webhook is pending in the HubSpot simulator, no
   workflow action call is unfinished or owes its callback completion, and
   the event log has been quiet for a while;
5. invariants (``invariants.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.reliability import invariants as inv
from tests.reliability.faults import Fault, FaultInjector, plan_faults
from tests.reliability.processes import ProcessFailed
from tests.reliability.system import CONNECTION, System, SystemConfig
from tests.reliability.workload import LOAD_SOURCES, Ledger, Workload, WorkloadConfig

PROGRESS_EVERY = 60.0  # seconds between progress lines while faults run


@dataclass
class ScenarioConfig:
    workdir: Path
    seed: int = 7
    clients: int = 100
    fault_seconds: float = 75.0
    every_kind_once: bool = True  # short runs: each fault kind once; soak: a random stream
    mean_fault_gap: float = 6.0
    first_sync_timeout: float = 90.0
    settle_timeout: float = 75.0
    poll_interval: int = 3
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    progress: Any = None  # callable(str) for progress lines, or None


@dataclass
class ScenarioReport:
    config: dict[str, Any]
    phases: dict[str, float] = field(default_factory=dict)
    faults: dict[str, Any] = field(default_factory=dict)
    events: dict[str, Any] = field(default_factory=dict)
    webhook_load: dict[str, Any] = field(default_factory=dict)
    workload: dict[str, Any] = field(default_factory=dict)
    settle: dict[str, Any] = field(default_factory=dict)
    invariants: list[inv.InvariantResult] = field(default_factory=list)
    diagnosis: dict[str, list[str]] = field(default_factory=dict)  # event timelines of diverging records
    processes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.invariants) and all(r.ok for r in self.invariants)

    def failure_message(self) -> str:
        parts = []
        if self.error:
            parts.append(f"SCENARIO ERROR: {self.error}")
        if self.settle and not self.settle.get("settled"):
            parts.append(f"the system did not settle: {self.settle.get('reason')}")
        parts.append(inv.format_failures(self.invariants))
        for key, lines in self.diagnosis.items():
            if not key.startswith("table "):  # the event log of a record named above: what happened, in order
                parts.append(f"TIMELINE {key}:\n" + "\n".join(f"    {line[:300]}" for line in lines))
        return "\n".join(p for p in parts if p)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "error": self.error,
            "config": self.config,
            "phases_seconds": self.phases,
            "faults": self.faults,
            "events": self.events,
            "webhook_load": self.webhook_load,
            "workload": self.workload,
            "settle": self.settle,
            "processes": self.processes,
            "invariants": [r.to_json() for r in self.invariants],
            "diagnosis": self.diagnosis,
            "lost": _figure(self.invariants, "webhooks_recorded", "lost")
            + _figure(self.invariants, "hubspot_matches_kleer", "missing"),
            "duplicated": _figure(self.invariants, "hubspot_matches_kleer", "duplicates"),
        }


def _figure(results: list[inv.InvariantResult], name: str, key: str) -> int:
    for result in results:
        if result.name == name:
            return int(result.figures.get(key, 0))
    return 0


async def wait_first_sync(system: System, timeout: float, say: Any) -> float:
    started = time.monotonic()
    last = ""
    while True:
        system.check_processes()
        snapshot = await inv.take_snapshot(system)
        diff = inv.check_records(snapshot)
        if diff.ok:
            return time.monotonic() - started
        line = f"first sync: {diff.compared_records} of {len(snapshot.expected.records)} records in HubSpot"
        if line != last:
            say(line)
            last = line
        if time.monotonic() - started > timeout:
            raise TimeoutError(
                f"the first sync did not complete within {timeout:.0f}s; still diverging:\n  "
                + "\n  ".join(diff.problems(10))
            )
        await asyncio.sleep(1.0)


async def settle(system: System, timeout: float, quiet_seconds: float, ledger: Ledger | None = None) -> dict[str, Any]:
    """Poll until HubSpot matches Kleer, webhooks are delivered, workflow action calls are finished and
    completed, and the log is quiet (bounded)."""
    assert system.pool is not None
    started = time.monotonic()
    head = -1
    quiet_since = time.monotonic()
    reason = ""
    while True:
        system.check_processes()
        hooks = await system.sim_get(system.hubspot_base + "/_sim/webhooks")
        async with system.pool.acquire() as conn:
            now_head = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
            # A call whose worker died waits for its lease to run out (ActionSettings.lease_s) before
            # another takes it over; a finished one may still owe HubSpot its callback completion.
            actions = await conn.fetchval("SELECT count(*) FROM workflow_actions WHERE state <> 'done' "
                                          "OR (completion_due AND completed_at IS NULL)")
        if now_head != head:
            head, quiet_since = now_head, time.monotonic()
        snapshot = await inv.take_snapshot(system, ledger)
        diff = inv.check_records(snapshot)
        pending = hooks.get("pending", 0) + hooks.get("in_flight", 0)
        quiet = time.monotonic() - quiet_since
        if diff.ok and pending == 0 and actions == 0 and quiet >= quiet_seconds:
            return {"settled": True, "seconds": round(time.monotonic() - started, 1), "log_head": head}
        reason = (f"HubSpot diverges in {len(diff.problems(10**6))} way(s); {pending} webhook batch(es) pending; "
                  f"{actions} workflow action call(s) unfinished; log quiet for {quiet:.1f}s of {quiet_seconds:.0f}s")
        if time.monotonic() - started > timeout:
            return {"settled": False, "seconds": round(time.monotonic() - started, 1), "reason": reason,
                    "divergences": diff.problems(15), "log_head": head}
        await asyncio.sleep(1.0)


async def check_all(
    system: System, ledger: Ledger, injector: FaultInjector, workload_config: WorkloadConfig
) -> list[inv.InvariantResult]:
    assert system.pool is not None
    results: list[inv.InvariantResult] = [inv.check_processes(system)]
    snapshot = await inv.take_snapshot(system, ledger)
    async with system.pool.acquire() as conn:
        dlq = await inv.dead_letters(conn)
        results.append(await inv.check_hubspot_matches_kleer(system, snapshot, dlq))
        results.append(inv.check_kleer_holds_edits(snapshot, ledger, dlq))
        results.append(inv.check_created_companies(snapshot, ledger, dlq))
        actions = await system.sim_get(system.hubspot_base + "/_sim/workflow-actions")
        results.append(inv.check_workflow_actions(snapshot, ledger, actions.get("completions", {})))
        hooks = await system.sim_get(system.hubspot_base + "/_sim/webhooks")
        results.append(await inv.check_webhooks_recorded(conn, system, ledger, injector.log.bad_webhooks,
                                                         hooks.get("stats")))
        results.append(await inv.check_everything_handled(conn, dlq, system.env()["KAFKA_TOPIC_PREFIX"]))
        results.append(await inv.check_no_ping_pong(conn, snapshot, ledger, actions.get("completions", {})))
    results.append(inv.check_no_secrets(system))
    results.append(scenario_ran_as_planned(ledger, injector, workload_config))
    return results


def scenario_ran_as_planned(ledger: Ledger, injector: FaultInjector, config: WorkloadConfig) -> inv.InvariantResult:
    """The test itself: every workload loop kept running, the load was sent, every fault was injected."""
    problems = [f"workload: {what} ({n}x)" for what, n in ledger.failures.items() if "crashed" in what]
    if config.load_rate > 0 and ledger.load.sent == 0:
        problems.append("the webhook load generator sent nothing")
    problems += [f"fault not injected: {error}" for error in injector.log.errors]
    figures = {"workload_call_failures": dict(ledger.failures), "fault_injection_errors": len(injector.log.errors)}
    return inv.InvariantResult("scenario_ran_as_planned", not problems, problems, figures)


async def run_scenario(config: ScenarioConfig) -> ScenarioReport:
    say = config.progress or (lambda _line: None)
    report = ScenarioReport(config={
        "seed": config.seed, "clients": config.clients, "fault_seconds": config.fault_seconds,
        "every_kind_once": config.every_kind_once, "poll_interval_s": config.poll_interval,
        "webhook_load_target_rps": config.workload.load_rate,
        "webhook_load_events_per_request": config.workload.load_events_per_request,
        "postgres": "a private PostgreSQL 15 cluster per run (restarted by postgres_restart faults)",
        "simulators_killed": "never: they hold Kleer's and HubSpot's own data",
    })
    system = System(SystemConfig(config.workdir, clients=config.clients, seed=config.seed,
                                 poll_interval=config.poll_interval, private_postgres=True))
    ledger = Ledger()
    injector = FaultInjector(system, config.seed)
    workload = Workload(system, config.workload, config.seed, ledger)
    plan: list[Fault] = plan_faults(config.seed, config.fault_seconds, every_kind_once=config.every_kind_once,
                                    mean_gap=config.mean_fault_gap)
    t0 = time.monotonic()
    failed = True
    supervisor: asyncio.Task[None] | None = None
    try:
        say(f"starting the system (logs in {system.logs})")
        await system.start()
        supervisor = asyncio.create_task(system.supervise(), name="supervisor")
        report.phases["start"] = round(time.monotonic() - t0, 1)
        report.phases.update({f"start_{k}": v for k, v in system.start_timings.items()})
        say(f"started in {report.phases['start']}s {system.start_timings}; waiting for the first sync")
        report.phases["first_sync"] = round(await wait_first_sync(system, config.first_sync_timeout, say), 1)
        say(f"first sync done in {report.phases['first_sync']}s; {len(plan)} faults over {config.fault_seconds:.0f}s")
        await workload.start()
        fault_start = time.monotonic()
        faults_task = asyncio.create_task(injector.run(plan))
        deadline = fault_start + config.fault_seconds
        next_progress = fault_start + PROGRESS_EVERY
        while time.monotonic() < deadline:
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            system.check_processes()
            if time.monotonic() >= next_progress:
                next_progress += PROGRESS_EVERY
                load = ledger.load
                say(f"faults: {time.monotonic() - fault_start:.0f} of {config.fault_seconds:.0f}s, "
                    f"{sum(injector.log.injected.values())} of {len(plan)} injected; webhooks sent {load.sent}, "
                    f"accepted {len(load.accepted_at)}")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(faults_task), timeout=30)
        fault_end = time.monotonic()
        report.phases["faults"] = round(fault_end - fault_start, 1)
        await injector.stop()
        await workload.stop()
        await workload.finish_actions()
        say("faults over; settling")
        quiet = 2 * config.poll_interval + 2
        report.settle = await settle(system, config.settle_timeout, quiet, ledger)
        report.phases["settle"] = report.settle["seconds"]
        say(f"settle: {report.settle}")
        report.invariants = await check_all(system, ledger, injector, config.workload)
        if not all(r.ok for r in report.invariants):
            async with system.pool.acquire() as conn:  # type: ignore[union-attr]
                report.diagnosis = await diagnose(conn, report.invariants)
        report.faults = {
            "injected_by_kind": dict(sorted(injector.log.injected.items())),
            "total": sum(injector.log.injected.values()),
            "timeline": injector.log.entries,
            "restart_seconds": injector.log.restart_seconds,
            "injection_errors": injector.log.errors,
            "broker_restarts": system.broker_restarts,
            "postgres_restarts": system.postgres_restarts,
            "postgres_down_seconds": [round(up - down, 1) for down, up in system.postgres_down],
        }
        load = ledger.load
        duration = max(1e-9, fault_end - fault_start)
        report.webhook_load = {
            "requests_sent": load.sent,
            "accepted_requests": len(load.accepted_at),
            "accepted_requests_per_s_during_faults": round(load.rate_between(fault_start, fault_end), 1),
            "accepted_events_per_s_during_faults": round(
                load.rate_between(fault_start, fault_end) * load.events_per_request, 1),
            "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
            "connection_errors": dict(load.errors),
            "latency_ms_p50": load.percentile(0.5),
            "latency_ms_p99": load.percentile(0.99),
            "hubspot_sim_webhook_requests_through_proxy": sum(system.proxy.statuses.values()),
            "hubspot_sim_webhook_events_accepted": len(system.proxy.accepted),
            "fault_phase_seconds": round(duration, 1),
        }
        async with system.pool.acquire() as conn:  # type: ignore[union-attr]
            counts = await inv.event_counts(conn)
        report.events = {"total": sum(counts.values()), "by_type": counts}
        report.workload = ledger.summary()
        failed = not report.ok
    except (ProcessFailed, TimeoutError, RuntimeError, OSError) as exc:
        report.error = f"{type(exc).__name__}: {exc}"
    finally:
        report.phases["total"] = round(time.monotonic() - t0, 1)
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await supervisor
        report.processes = process_report(system)
        with contextlib.suppress(Exception):
            await injector.stop()
        with contextlib.suppress(Exception):
            await workload.stop()
        await system.stop(failed=failed)
    return report


_OBJECT_PROBLEM = re.compile(r"\b(companies|projects|products|invoices|subscriptions|line_items) kleer_id=(\S+) "
                             r"\(HubSpot (\d+)\)")
_KLEER_PROBLEM = re.compile(r"\bKleer (client|project) (\d+) \(HubSpot (\d+)\)")
_STREAM_PROBLEM = re.compile(r"\b[^/\s]+/kleer-([a-z_]+)/(\S+?):")
_MISSING_PROBLEM = re.compile(r"\b(companies|projects|products|invoices|subscriptions|line_items) kleer_id=(\S+)")
_KIND = {"companies": ("client", "company"), "projects": ("project", "project"), "products": ("product", "product"),
         "invoices": ("invoice", "invoice"), "subscriptions": ("agreement", "subscription"),
         "line_items": ("line_item", "line_item")}


async def diagnose(conn: Any, results: list[inv.InvariantResult], limit: int = 6) -> dict[str, list[str]]:
    """The event-log timeline of the first records an invariant complains about (for the report)."""
    streams: dict[str, list[str]] = {}
    for result in results:
        for problem in result.problems:
            found = _OBJECT_PROBLEM.search(problem)
            if found:
                kind, singular = _KIND[found[1]]
                key, hubspot_id = f"kleer:{kind}:{found[2]}", found[3]
            elif (found := _KLEER_PROBLEM.search(problem)) is not None:
                kind, singular = found[1], "company" if found[1] == "client" else "project"
                key, hubspot_id = f"kleer:{kind}:{found[2]}", found[3]
            elif (found := _STREAM_PROBLEM.search(problem)) is not None:
                kind, singular, hubspot_id = found[1], "-", "-"
                key = f"kleer:{kind}:{found[2]}"
            elif (found := _MISSING_PROBLEM.search(problem)) is not None:
                kind, singular = _KIND[found[1]]
                key, hubspot_id = f"kleer:{kind}:{found[2]}", "-"
            else:
                continue
            if key in streams or len(streams) >= limit:
                continue
            rows = await conn.fetch(
                "SELECT position, recorded_at, stream, type, data FROM events WHERE stream = ANY($1::text[]) "
                "ORDER BY position",
                [f"{CONNECTION}/kleer-{kind}/{key.rsplit(':', 1)[1]}", f"{CONNECTION}/hubspot-{singular}/{hubspot_id}"],
            )
            streams[key] = [_timeline_line(r) for r in rows if not _is_noise(r)][-40:]
    for table, query in _STATE_QUERIES.items():
        try:
            streams[f"table {table}"] = [str(dict(r)) for r in await conn.fetch(query)][:40]
        except Exception as exc:  # a table another area has not created yet
            streams[f"table {table}"] = [f"{type(exc).__name__}: {exc}"]
    return streams


_STATE_QUERIES = {
    "consumer_checkpoints": "SELECT consumer, topic, partition, position, updated_at FROM consumer_checkpoints "
                            "ORDER BY 1, 2, 3",
    "relay_state": "SELECT * FROM relay_state",
    "relay_partitions": "SELECT * FROM relay_partitions ORDER BY topic, partition",
    "hubspot_rate_budget": "SELECT portal, cardinality(grants) AS grants, blocked_until_ms, updated_at "
                           "FROM hubspot_rate_budget",
    "log_head": "SELECT max(position) AS head, max(recorded_at) AS last_recorded FROM events",
}


def _data(row: Any) -> dict[str, Any]:
    raw = row["data"]
    data = raw if isinstance(raw, dict) else orjson.loads(raw)
    return data if isinstance(data, dict) else {}


def _is_noise(row: Any) -> bool:
    """Echoes of our own writes, the synthetic load's events and what the handlers made of them."""
    if row["type"] == "InboundSyncSkipped":
        return _data(row).get("reason") == "no_trigger"
    if row["type"] != "WebhookReceived":
        return False
    data = _data(row)
    return data.get("changeSource") == "INTEGRATION" or data.get("sourceId") in LOAD_SOURCES


def _timeline_line(row: Any) -> str:
    data = _data(row)
    if row["type"] == "WebhookReceived":
        what = f"{data.get('changeSource')} {data.get('propertyName')}={data.get('propertyValue')!r}"
    elif isinstance(data.get("properties"), dict):
        props = data["properties"]
        what = " ".join(f"{k}={v!r}" for k, v in list(props.items())[:6] if k != "kleer_id")
    else:
        what = orjson.dumps(data).decode()[:160]
    return f"{row['position']} {row['recorded_at']:%H:%M:%S.%f} {row['type']}: {what}"[:300]


def process_report(system: System) -> dict[str, Any]:
    """Per process: starts, the runner's SIGKILLs and the exits it did not cause (restarted like Kubernetes)."""
    return {
        "by_process": {name: {"starts": p.starts, "sigkills": p.kills, "own_exits": len(p.exits)}
                       for name, p in system.processes.items()},
        "exits_restarted_by_the_runner": len(system.exits),
        "exits": system.exits,
    }
