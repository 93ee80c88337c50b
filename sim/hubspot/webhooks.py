"""Webhook delivery: record changes become signed, batched POSTs to the app's target URL.

Like HubSpot: a JSON array of up to 100 events per request, signed (v3 by
default) with the app's client secret over the public target URL; a non-2xx
answer or a timeout is retried with exponential backoff (``attemptNumber``
counts up from 0) up to ``max_attempts`` times. Options make delivery as
awkward as HubSpot's can be: duplicates in later requests, shuffled order.
Delays are divided by the simulator's ``time_scale``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from libs.hubspot.objects import OBJECTS, ObjectType
from libs.hubspot.signatures import (
    HEADER_SIGNATURE,
    HEADER_SIGNATURE_VERSION,
    sign_v1,
    sign_v2,
    v3_headers,
)
from sim.hubspot.config import SimConfig, Subscription
from sim.hubspot.errors import validation_error
from sim.hubspot.store import Change

USER_AGENT = "HubSpot Connect 2.0 (http://dev.hubspot.com/) - WebhooksExecutorDaemon-executor"
_KINDS = ("creation", "deletion", "propertyChange", "merge")


def default_subscriptions() -> list[Subscription]:
    """Every creation, deletion and property change of every object type."""
    subs: list[Subscription] = []
    for info in OBJECTS.values():
        for kind in _KINDS:
            object_type_id = info.type_id if info.webhook_name == "object" else None
            subs.append(Subscription(len(subs) + 1, f"{info.webhook_name}.{kind}", None, object_type_id))
    return subs


def parse_subscriptions(raw: Any) -> list[Subscription]:
    if not isinstance(raw, list):
        raise validation_error("'subscriptions' must be a list")
    subs: list[Subscription] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("subscriptionType"), str):
            raise validation_error("each subscription needs a 'subscriptionType' like 'company.propertyChange'")
        kind = item["subscriptionType"].partition(".")[2]
        if kind not in _KINDS:
            raise validation_error(f"unsupported subscription type {item['subscriptionType']!r}")
        subs.append(Subscription(
            int(item.get("id", len(subs) + 1)), item["subscriptionType"],
            item.get("propertyName"), item.get("objectTypeId"),
        ))
    return subs


@dataclass
class Delivery:
    """One POST attempt, kept for inspection."""

    attempt: int
    events: int
    status: int | None
    error: str | None
    elapsed_ms: float
    at: float


class WebhookDispatcher:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._pending: deque[dict[str, Any]] = deque()
        self._event_seq = 100_000
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._semaphore = asyncio.Semaphore(max(1, config.webhook.concurrency))
        self._index: dict[tuple[ObjectType, str], list[Subscription]] = {}
        self.deliveries: deque[Delivery] = deque(maxlen=10_000)
        self.delivered: deque[dict[str, Any]] = deque(maxlen=200_000)  # events in accepted requests
        self.stats = {"events_generated": 0, "requests": 0, "requests_ok": 0, "requests_failed": 0,
                      "events_delivered": 0, "batches_given_up": 0, "duplicates_sent": 0}
        self.reindex()

    # --- configuration -------------------------------------------------------------

    def reindex(self) -> None:
        subs = self.config.webhook.subscriptions
        if subs is None:
            subs = default_subscriptions()
        index: dict[tuple[ObjectType, str], list[Subscription]] = {}
        for info in OBJECTS.values():
            for kind in _KINDS:
                wanted = f"{info.webhook_name}.{kind}"
                index[(info.type, kind)] = [
                    s for s in subs
                    if s.subscription_type == wanted and (s.object_type_id in (None, info.type_id))
                ]
        self._index = index
        self._semaphore = asyncio.Semaphore(max(1, self.config.webhook.concurrency))

    @property
    def enabled(self) -> bool:
        return bool(self.config.webhook.target_url)

    def clear(self) -> None:
        self._pending.clear()
        self.deliveries.clear()
        self.delivered.clear()
        for key in self.stats:
            self.stats[key] = 0

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        self._task = asyncio.create_task(self._run(), name="hubspot-sim-webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until nothing is pending or in flight (retries included); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._pending and not self._inflight:
                return True
            await asyncio.sleep(0.005)
        return False

    # --- events ---------------------------------------------------------------------

    def on_changes(self, changes: list[Change]) -> None:
        if not self.enabled:
            return
        config = self.config
        for change in changes:
            subs = self._index.get((change.object_type, change.kind), ())
            info = OBJECTS[change.object_type]
            for sub in subs:
                if sub.property_name is not None and sub.property_name != change.property_name:
                    continue
                self._event_seq += 1
                event: dict[str, Any] = {
                    "eventId": self._event_seq,
                    "subscriptionId": sub.id,
                    "portalId": config.portal_id,
                    "appId": config.app_id,
                    "occurredAt": change.occurred_at,
                    "subscriptionType": sub.subscription_type,
                    "attemptNumber": 0,
                    "objectId": change.object_id,
                    "changeSource": change.source.change_source,
                    "sourceId": change.source.source_id,
                }
                if info.webhook_name == "object":
                    event["objectTypeId"] = info.type_id
                if change.kind == "propertyChange":
                    event["propertyName"] = change.property_name
                    event["propertyValue"] = change.value if change.value is not None else ""
                elif change.kind == "merge":
                    event["primaryObjectId"] = change.object_id
                    event["mergedObjectIds"] = list(change.merged_ids)
                    event["newObjectId"] = change.object_id
                    event["numberOfPropertiesMoved"] = 0
                self._pending.append(event)
                self.stats["events_generated"] += 1
        self._wake.set()

    def _take_batch(self) -> list[dict[str, Any]]:
        hook = self.config.webhook
        size = max(1, min(100, hook.batch_size))
        if hook.shuffle and len(self._pending) > 1:
            pool = list(self._pending)
            random.shuffle(pool)
            batch, rest = pool[:size], pool[size:]
            self._pending = deque(rest)
        else:
            batch = [self._pending.popleft() for _ in range(min(size, len(self._pending)))]
        if hook.duplicate_rate > 0:
            for event in batch:
                if not event.get("_dup") and random.random() < hook.duplicate_rate:
                    copy = dict(event)
                    copy["_dup"] = True
                    self._pending.append(copy)
                    self.stats["duplicates_sent"] += 1
        return [{k: v for k, v in e.items() if k != "_dup"} for e in batch]

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            window = self.config.webhook.batch_window_ms / 1000
            if window > 0:
                await asyncio.sleep(window)
            while self._pending:
                batch = self._take_batch()
                task = asyncio.create_task(self._deliver(batch))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                await asyncio.sleep(0)

    def _headers(self, url: str, body: bytes) -> dict[str, str]:
        secret = self.config.client_secret
        version = self.config.webhook.signature_version
        headers = {"Content-Type": "application/json"}
        if version == "v1":
            headers.update({HEADER_SIGNATURE: sign_v1(secret, body), HEADER_SIGNATURE_VERSION: "v1"})
        elif version == "v2":
            headers.update({HEADER_SIGNATURE: sign_v2(secret, "POST", url, body), HEADER_SIGNATURE_VERSION: "v2"})
        else:
            headers.update(v3_headers(secret, "POST", url, body, int(time.time() * 1000)))
        return headers

    def _retry_delay_s(self, attempt: int) -> float:
        hook = self.config.webhook
        delay_ms = min(hook.retry_max_ms, hook.retry_base_ms * (2 ** attempt))
        delay_ms *= random.uniform(0.8, 1.2)
        return self.config.scaled_ms(delay_ms) / 1000

    async def _deliver(self, events: list[dict[str, Any]]) -> None:
        hook = self.config.webhook
        for attempt in range(max(1, hook.max_attempts)):
            target = hook.target_url
            if not target or self._session is None:
                return
            for event in events:
                event["attemptNumber"] = attempt
            body = orjson.dumps(events)
            headers = self._headers(hook.signed_url or target, body)
            started = time.monotonic()
            status: int | None = None
            error: str | None = None
            async with self._semaphore:
                try:
                    timeout = aiohttp.ClientTimeout(total=hook.timeout_s)
                    async with self._session.post(target, data=body, headers=headers, timeout=timeout) as resp:
                        status = resp.status
                        await resp.read()
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
            elapsed = (time.monotonic() - started) * 1000
            self.deliveries.append(Delivery(attempt, len(events), status, error, elapsed, time.time()))
            self.stats["requests"] += 1
            if status is not None and 200 <= status < 300:
                self.stats["requests_ok"] += 1
                self.stats["events_delivered"] += len(events)
                self.delivered.extend(dict(e) for e in events)
                return
            self.stats["requests_failed"] += 1
            if attempt + 1 < hook.max_attempts:
                await asyncio.sleep(self._retry_delay_s(attempt))
        self.stats["batches_given_up"] += 1

    def to_json(self) -> dict[str, Any]:
        hook = self.config.webhook
        subs = hook.subscriptions if hook.subscriptions is not None else default_subscriptions()
        return {
            "target_url": hook.target_url,
            "signed_url": hook.signed_url,
            "subscriptions": [s.to_json() for s in subs],
            "batch_size": hook.batch_size,
            "batch_window_ms": hook.batch_window_ms,
            "duplicate_rate": hook.duplicate_rate,
            "shuffle": hook.shuffle,
            "max_attempts": hook.max_attempts,
            "retry_base_ms": hook.retry_base_ms,
            "timeout_s": hook.timeout_s,
            "concurrency": hook.concurrency,
            "signature_version": hook.signature_version,
            "pending": len(self._pending),
            "in_flight": len(self._inflight),
            "stats": dict(self.stats),
        }
