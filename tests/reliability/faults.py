"""Faults at random times from a fixed seed, and the injectors that carry them out.

``plan_faults(seed, duration, every_kind_once=...)`` draws the schedule up
front (so a failing run can be repeated exactly); ``FaultInjector`` runs it
against a ``System``. Kinds:

- ``kill:<service>``: SIGKILL of poller, relay, pusher, inbound or handlers,
  restarted after a short random pause;
- ``broker_restart``: the broker is SIGKILLed and starts empty (every topic, message
  and offset lost);
- ``postgres_restart``: the scenario's private PostgreSQL cluster is stopped
  (``pg_ctl stop -m fast`` or ``-m immediate``, drawn from the seed), stays down
  for a few seconds and starts again; every connection of every service breaks;
- ``hubspot_429_storm``, ``hubspot_5xx_burst``, ``hubspot_slow``,
  ``hubspot_drops``: the HubSpot simulator's ``/_sim/faults`` for a window;
- ``kleer_outage`` (every API call 503), ``kleer_slow``, ``kleer_lost_answers``
  (writes are stored but the connection drops before the answer): the Kleer
  simulator's ``/_sim/faults`` for a window;
- ``webhooks_dup_shuffle``: the HubSpot simulator delivers duplicates, out of order;
- ``webhook_forged`` (wrong secret), ``webhook_stale`` (valid signature, timestamp
  six minutes old: a captured request replayed later), ``webhook_cross_portal``
  (valid signature, another portal's events), ``webhook_replay`` (an accepted
  request sent again as captured): bad input whose answer and effect the
  invariants check.

The Postgres restarts need ``SystemConfig(private_postgres=True)``: the
machine's shared server is never restarted.
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
from tests.reliability.system import APP_ID, PORTAL_ID, SERVICES, System

KILL_KINDS = tuple(f"kill:{name}" for name in SERVICES)
WINDOW_KINDS = ("hubspot_429_storm", "hubspot_5xx_burst", "hubspot_slow", "hubspot_drops", "kleer_outage",
                "kleer_slow", "kleer_lost_answers", "webhooks_dup_shuffle")
WEBHOOK_KINDS = ("webhook_forged", "webhook_stale", "webhook_cross_portal", "webhook_replay")
ALL_KINDS = (*KILL_KINDS, "broker_restart", "postgres_restart", *WINDOW_KINDS, *WEBHOOK_KINDS)
POSTGRES_STOP_MODES = ("fast", "immediate")


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the fault phase starts
    kind: str
    duration: float = 0.0  # windows; for kills and restarts the pause before the start
    mode: str = ""  # postgres_restart: how it is stopped (fast or immediate)


@dataclass
class BadWebhook:
    """A bad request we sent, what the inbound service answered, and the eventIds it carried."""

    kind: str
    status: int
    expected: tuple[int, ...]
    event_ids: list[int]
    must_not_be_recorded: bool


def plan_faults(seed: int, duration: float, *, every_kind_once: bool, mean_gap: float = 6.0,
                window: tuple[float, float] = (3.0, 8.0)) -> list[Fault]:
    """The schedule: every kind once at random times (short runs) or a random stream of kinds (soak)."""
    rng = random.Random(seed)
    faults: list[Fault] = []

    def make(kind: str, at: float, mode: str = "") -> Fault:
        if kind.startswith("kill:"):
            return Fault(at, kind, rng.uniform(0.2, 2.0))
        if kind == "postgres_restart":
            return Fault(at, kind, rng.uniform(2.0, 5.0), mode or rng.choice(POSTGRES_STOP_MODES))
        if kind in WINDOW_KINDS:
            return Fault(at, kind, rng.uniform(*window))
        return Fault(at, kind)

    if every_kind_once:
        for kind in ALL_KINDS:
            faults.append(make(kind, rng.uniform(0.03 * duration, 0.85 * duration)))
        # The Postgres restart once more, so both stop modes run: fast (clients told, checkpoint) and
        # immediate (connections cut, crash recovery at the start).
        first = next(f for f in faults if f.kind == "postgres_restart")
        other = next(m for m in POSTGRES_STOP_MODES if m != first.mode)
        faults.append(make("postgres_restart", rng.uniform(0.03 * duration, 0.85 * duration), other))
    else:
        at = rng.expovariate(1 / mean_gap)
        while at < 0.9 * duration:
            faults.append(make(rng.choice(ALL_KINDS), at))
            at += rng.expovariate(1 / mean_gap)
    return sorted(faults, key=lambda f: f.at)


class SimFaults:
    """Composes overlapping fault windows into the one plan each simulator holds."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.hubspot: dict[int, dict[str, Any]] = {}
        self.kleer: dict[int, dict[str, Any]] = {}
        self._ids = iter(range(1, 10**9))
        self._lock = asyncio.Lock()

    async def add(self, target: str, fragment: dict[str, Any]) -> int:
        key = next(self._ids)
        async with self._lock:
            (self.hubspot if target == "hubspot" else self.kleer)[key] = fragment
            await self._apply(target)
        return key

    async def remove(self, target: str, key: int) -> None:
        async with self._lock:
            (self.hubspot if target == "hubspot" else self.kleer).pop(key, None)
            await self._apply(target)

    async def clear(self) -> None:
        async with self._lock:
            self.hubspot.clear()
            self.kleer.clear()
            await self.system.sim_delete(self.system.hubspot_base + "/_sim/faults")
            await self.system.sim_delete(self.system.kleer_base + "/_sim/faults")

    async def _apply(self, target: str) -> None:
        if target == "hubspot":
            base = self.system.hubspot_base
            await self.system.sim_delete(base + "/_sim/faults")
            if self.hubspot:
                await self.system.sim_post(base + "/_sim/faults", _merge_hubspot(list(self.hubspot.values())))
        else:
            base = self.system.kleer_base
            await self.system.sim_delete(base + "/_sim/faults")
            if self.kleer:
                await self.system.sim_post(base + "/_sim/faults", _merge_kleer(list(self.kleer.values())))


def _merge_hubspot(fragments: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"error_rates": {}, "drop_rate": 0.0}
    for fragment in fragments:
        for status, rate in fragment.get("error_rates", {}).items():
            merged["error_rates"][status] = min(1.0, merged["error_rates"].get(status, 0.0) + rate)
        merged["drop_rate"] = max(merged["drop_rate"], fragment.get("drop_rate", 0.0))
        if "latency" in fragment:
            merged["latency"] = fragment["latency"]
        if "storm_429" in fragment:
            merged["storm_429"] = fragment["storm_429"]
    return merged


def _merge_kleer(fragments: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"error-rates": {}, "drop-after-rate": 0.0}
    for fragment in fragments:
        for status, rate in fragment.get("error-rates", {}).items():
            merged["error-rates"][status] = min(1.0, merged["error-rates"].get(status, 0.0) + rate)
        merged["drop-after-rate"] = max(merged["drop-after-rate"], fragment.get("drop-after-rate", 0.0))
        if "latency" in fragment:
            merged["latency"] = fragment["latency"]
    total = sum(merged["error-rates"].values()) + merged["drop-after-rate"]
    if total > 1:  # the Kleer simulator refuses plans whose chances add up past 1
        merged["drop-after-rate"] = max(0.0, 1 - sum(merged["error-rates"].values()))
    return merged


_WINDOWS: dict[str, tuple[str, dict[str, Any]]] = {
    "hubspot_429_storm": ("hubspot", {"storm_429": {"seconds": 0}}),  # seconds set from the fault
    "hubspot_5xx_burst": ("hubspot", {"error_rates": {"502": 0.2, "503": 0.2, "504": 0.1}}),
    "hubspot_slow": ("hubspot", {"latency": {"distribution": "uniform", "min_ms": 200, "max_ms": 1500}}),
    "hubspot_drops": ("hubspot", {"drop_rate": 0.2}),
    "kleer_outage": ("kleer", {"error-rates": {"503": 1.0}}),
    "kleer_slow": ("kleer", {"latency": {"distribution": "uniform", "ms": 200, "max-ms": 1500}}),
    "kleer_lost_answers": ("kleer", {"drop-after-rate": 0.3}),
}


@dataclass
class FaultLog:
    injected: Counter[str] = field(default_factory=Counter)
    entries: list[dict[str, Any]] = field(default_factory=list)
    bad_webhooks: list[BadWebhook] = field(default_factory=list)
    restart_seconds: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class FaultInjector:
    def __init__(self, system: System, seed: int) -> None:
        self.system = system
        self.rng = random.Random(seed ^ 0x5EED)
        self.sim_faults = SimFaults(system)
        self.log = FaultLog()
        self._tasks: list[asyncio.Task[None]] = []
        self._event_ids = iter(range(9 * 10**15 + (seed % 10_000) * 10**8, 10**16))
        self.started = 0.0

    async def run(self, plan: list[Fault]) -> None:
        """Inject every fault of ``plan`` at its time; returns when all have run and ended."""
        self.started = time.monotonic()
        for fault in plan:
            delay = self.started + fault.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._tasks.append(asyncio.create_task(self._inject(fault), name=f"fault-{fault.kind}"))
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def _inject(self, fault: Fault) -> None:
        at = round(time.monotonic() - self.started, 2)
        entry: dict[str, Any] = {"at_s": at, "kind": fault.kind}
        if fault.duration:
            entry["duration_s"] = round(fault.duration, 2)
        if fault.mode:
            entry["mode"] = fault.mode
        self.log.entries.append(entry)
        self.log.injected[fault.kind] += 1
        try:
            if fault.kind.startswith("kill:"):
                await self._kill(fault.kind.partition(":")[2], fault.duration, entry)
            elif fault.kind == "broker_restart":
                await self.system.restart_broker()
            elif fault.kind == "postgres_restart":
                await self.system.restart_postgres(fault.mode, fault.duration)
            elif fault.kind == "webhooks_dup_shuffle":
                await self._dup_shuffle(fault.duration)
            elif fault.kind in _WINDOWS:
                await self._window(fault.kind, fault.duration)
            elif fault.kind in WEBHOOK_KINDS:
                await self._bad_webhook(fault.kind)
            else:
                raise ValueError(f"unknown fault kind {fault.kind}")
        except Exception as exc:  # a fault that could not be injected is reported, not fatal
            self.log.errors.append(f"{fault.kind} at {at}s: {type(exc).__name__}: {exc}")
            entry["error"] = f"{type(exc).__name__}: {exc}"

    async def _kill(self, name: str, pause: float, entry: dict[str, Any]) -> None:
        async with self.system.process_lock(name):
            await self.system.sigkill(name)
            await asyncio.sleep(pause)
            seconds = await self.system.restart(name)
            entry["healthy_after_s"] = round(seconds, 2)
            self.log.restart_seconds.setdefault(name, []).append(round(seconds, 2))

    async def _window(self, kind: str, seconds: float) -> None:
        target, fragment = _WINDOWS[kind]
        if kind == "hubspot_429_storm":
            fragment = {"storm_429": {"seconds": seconds}}
        key = await self.sim_faults.add(target, fragment)
        try:
            await asyncio.sleep(seconds)
        finally:
            await self.sim_faults.remove(target, key)

    async def _dup_shuffle(self, seconds: float) -> None:
        url = self.system.hubspot_base + "/_sim/webhooks"
        await self.system.sim_post(url, {"duplicate_rate": 0.5, "shuffle": True})
        try:
            await asyncio.sleep(seconds)
        finally:
            await self.system.sim_post(url, {"duplicate_rate": 0.0, "shuffle": False})

    async def stop(self) -> None:
        for task in self._tasks:
            if not task.done():
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.sim_faults.clear()
        with contextlib.suppress(Exception):
            await self.system.sim_post(self.system.hubspot_base + "/_sim/webhooks",
                                       {"duplicate_rate": 0.0, "shuffle": False})

    # --- bad webhooks ---------------------------------------------------------------------------------

    def _events(self, portal: int, count: int = 3) -> list[dict[str, Any]]:
        now = int(time.time() * 1000)
        return [{"eventId": next(self._event_ids), "subscriptionId": 903, "portalId": portal, "appId": APP_ID,
                 "occurredAt": now, "subscriptionType": "company.propertyChange", "attemptNumber": 0,
                 "objectId": self.rng.randrange(1, 10**6), "propertyName": "name",
                 "propertyValue": "Förfalskad AB", "changeSource": "CRM_UI", "sourceId": "userId:666"}
                for _ in range(count)]

    async def _bad_webhook(self, kind: str) -> None:
        url = self.system.webhook_url
        secret = self.system.secrets.client_secret
        now_ms = int(time.time() * 1000)
        if kind == "webhook_replay":
            captured = self.system.proxy.captured
            if not captured:
                raise RuntimeError("no accepted webhook request captured yet to replay")
            captured_at, body, headers = captured[self.rng.randrange(len(captured))]
            ids = [int(e["eventId"]) for e in orjson.loads(body)]
            # Within five minutes a replay is indistinguishable from HubSpot's own retry: it is accepted,
            # and the eventId dedupe must make it a no-op. Later its timestamp is stale: refused.
            age = time.monotonic() - captured_at
            expected_status: tuple[int, ...] = (200,) if age < 280 else (401,) if age > 320 else (200, 401)
            status = await self._post(url, body, headers)
            self.log.bad_webhooks.append(BadWebhook(kind, status, expected_status, ids, False))
            return
        portal = PORTAL_ID + 1 if kind == "webhook_cross_portal" else PORTAL_ID
        events = self._events(portal)
        body = orjson.dumps(events)
        if kind == "webhook_forged":
            headers = v3_headers("not-" + secret, "POST", url, body, now_ms)
            expected: tuple[int, ...] = (401,)
        elif kind == "webhook_stale":
            headers = v3_headers(secret, "POST", url, body, now_ms - 6 * 60 * 1000)
            expected = (401,)
        else:
            headers = v3_headers(secret, "POST", url, body, now_ms)
            expected = (403,)
        headers["Content-Type"] = "application/json"
        status = await self._post(url, body, headers)
        self.log.bad_webhooks.append(BadWebhook(kind, status, expected, [e["eventId"] for e in events], True))

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        assert self.system.session is not None
        for _ in range(20):  # the inbound service may be restarting
            try:
                async with self.system.session.post(url, data=body, headers=headers,
                                                    timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    await resp.read()
                    if resp.status not in (502, 503):
                        return resp.status
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            await asyncio.sleep(0.5)
        return 0
