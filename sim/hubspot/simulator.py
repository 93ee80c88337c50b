"""The simulated portal: its data, limits, faults, tokens, webhooks and actions, in one object.

The HTTP app (``sim.hubspot.app``) and the test fixture both drive this
object; the admin operations here are what ``/_sim/*`` exposes.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

from libs.hubspot.objects import ObjectType, object_type
from sim.hubspot.actions import ActionRegistry
from sim.hubspot.config import SimConfig
from sim.hubspot.errors import not_found, validation_error
from sim.hubspot.faults import Faults
from sim.hubspot.oauth import TokenIssuer
from sim.hubspot.ratelimit import DailyCounter, SlidingWindow
from sim.hubspot.store import CrmStore, Record, Source
from sim.hubspot.webhooks import WebhookDispatcher, parse_subscriptions

UI_CHANGE_SOURCE = "CRM_UI"
INTEGRATION_CHANGE_SOURCE = "INTEGRATION"


class HubSpotSimulator:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.store = CrmStore(
            strict_value_types=self.config.strict_value_types,
            shuffle_results=self.config.shuffle_batch_results,
        )
        self.tokens = TokenIssuer(self.config.private_app_token)
        self.faults = Faults()
        self.webhooks = WebhookDispatcher(self.config)
        self.actions = ActionRegistry(self.config)
        self.request_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._ui_users = itertools.count(1)
        self._apply_limits()
        self._sync_tracking()

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.webhooks.start()

    async def stop(self) -> None:
        await self.webhooks.stop()

    # --- limits ---------------------------------------------------------------------------

    def _apply_limits(self) -> None:
        c = self.config
        self.window = SlidingWindow(c.rate_limit_max, c.scaled_ms(c.rate_limit_interval_ms) / 1000)
        self.search_window = SlidingWindow(c.search_limit_per_s, c.scaled_ms(1000) / 1000)
        self.daily = DailyCounter(c.daily_limit)

    def set_rate_limit(self, *, max_requests: int | None = None, interval_ms: int | None = None,
                       search_per_s: int | None = None, daily: int | None = None,
                       time_scale: float | None = None) -> dict[str, Any]:
        """Change the limits (0 turns one off); the windows start empty."""
        c = self.config
        if max_requests is not None:
            c.rate_limit_max = max(0, int(max_requests))
        if interval_ms is not None:
            if int(interval_ms) <= 0:
                raise validation_error("interval_ms must be positive")
            c.rate_limit_interval_ms = int(interval_ms)
        if search_per_s is not None:
            c.search_limit_per_s = max(0, int(search_per_s))
        if daily is not None:
            c.daily_limit = max(0, int(daily))
        if time_scale is not None:
            if float(time_scale) <= 0:
                raise validation_error("time_scale must be positive")
            c.time_scale = float(time_scale)
        self._apply_limits()
        return self.rate_limit_json()

    def rate_limit_json(self) -> dict[str, Any]:
        c = self.config
        return {"max": c.rate_limit_max, "interval_ms": c.rate_limit_interval_ms,
                "effective_interval_ms": int(c.scaled_ms(c.rate_limit_interval_ms)),
                "search_per_s": c.search_limit_per_s, "daily": c.daily_limit, "time_scale": c.time_scale,
                "used_in_window": self.window.used()}

    # --- faults ---------------------------------------------------------------------------

    def set_faults(self, body: Any) -> dict[str, Any]:
        self.faults = Faults.from_json(body)
        return self.faults.to_json()

    def clear_faults(self) -> None:
        self.faults = Faults()

    # --- webhooks ---------------------------------------------------------------------------

    def configure_webhooks(self, body: Any) -> dict[str, Any]:
        """Set any of ``target_url, signed_url, subscriptions, batch_size, batch_window_ms, duplicate_rate,
        shuffle, max_attempts, retry_base_ms, timeout_s, concurrency, signature_version``."""
        if not isinstance(body, dict):
            raise validation_error("webhook configuration must be an object")
        hook = self.config.webhook
        try:
            if "target_url" in body:
                hook.target_url = str(body["target_url"]) if body["target_url"] else None
            if "signed_url" in body:
                hook.signed_url = str(body["signed_url"]) if body["signed_url"] else None
            if "subscriptions" in body:
                raw = body["subscriptions"]
                hook.subscriptions = None if raw is None else parse_subscriptions(raw)
            for key in ("batch_size", "max_attempts", "concurrency"):
                if key in body:
                    setattr(hook, key, int(body[key]))
            for key in ("batch_window_ms", "duplicate_rate", "retry_base_ms", "retry_max_ms", "timeout_s"):
                if key in body:
                    setattr(hook, key, float(body[key]))
            if "shuffle" in body:
                hook.shuffle = bool(body["shuffle"])
            if "signature_version" in body:
                if body["signature_version"] not in ("v1", "v2", "v3"):
                    raise validation_error("signature_version must be v1, v2 or v3")
                hook.signature_version = str(body["signature_version"])
        except (TypeError, ValueError) as exc:
            raise validation_error(f"malformed webhook configuration: {exc}") from None
        if not 1 <= hook.batch_size <= 100:
            raise validation_error("batch_size must be between 1 and 100")
        self.webhooks.reindex()
        self._sync_tracking()
        return self.webhooks.to_json()

    def _sync_tracking(self) -> None:
        # Change tracking costs time on every write: only on while someone listens.
        self.store.on_change = self.webhooks.on_changes if self.webhooks.enabled else None

    # --- UI simulation --------------------------------------------------------------------

    def _ui_source(self, body: dict[str, Any]) -> Source:
        user = body.get("userId") or next(self._ui_users)
        return Source(str(body.get("changeSource") or UI_CHANGE_SOURCE), f"userId:{user}")

    def ui_edit(self, type_name: str, record_id: str, body: Any) -> Record:
        """A person edits a record in HubSpot: ``{"properties": {...}}`` (changeSource ``CRM_UI``)."""
        kind = self.object_type(type_name)
        if not isinstance(body, dict):
            raise validation_error("ui-edit needs {\"properties\": {...}}")
        return self.store.update_one(kind, record_id, None, body, self._ui_source(body))

    def ui_create(self, type_name: str, body: Any) -> Record:
        kind = self.object_type(type_name)
        if not isinstance(body, dict):
            raise validation_error("ui-create needs {\"properties\": {...}}")
        return self.store.create_one(kind, body, self._ui_source(body))

    def ui_merge(self, type_name: str, body: Any) -> Record:
        """A person merges two records: ``{"primaryObjectId": "1", "objectIdToMerge": "2"}``."""
        kind = self.object_type(type_name)
        if not isinstance(body, dict) or "primaryObjectId" not in body or "objectIdToMerge" not in body:
            raise validation_error("ui-merge needs {\"primaryObjectId\": ..., \"objectIdToMerge\": ...}")
        return self.store.merge(kind, str(body["primaryObjectId"]), str(body["objectIdToMerge"]),
                                self._ui_source(body))

    def configure_app(self, body: Any) -> None:
        """Change who the portal and our app are: ``portal_id``, ``app_id``, ``client_secret``,
        ``private_app_token``, ``access_token_lifetime_s``, ``strict_value_types``, ``shuffle_batch_results``."""
        if not isinstance(body, dict):
            raise validation_error("config needs an object")
        c = self.config
        try:
            if "portal_id" in body:
                c.portal_id = int(body["portal_id"])
            if "app_id" in body:
                c.app_id = int(body["app_id"])
            if "client_secret" in body:
                c.client_secret = str(body["client_secret"])
            if "private_app_token" in body:
                c.private_app_token = self.tokens.private_app_token = str(body["private_app_token"])
            if "access_token_lifetime_s" in body:
                c.access_token_lifetime_s = float(body["access_token_lifetime_s"])
            if "strict_value_types" in body:
                c.strict_value_types = self.store.strict_value_types = bool(body["strict_value_types"])
            if "shuffle_batch_results" in body:
                c.shuffle_batch_results = self.store.shuffle_results = bool(body["shuffle_batch_results"])
        except (TypeError, ValueError) as exc:
            raise validation_error(f"malformed configuration: {exc}") from None

    def ui_delete(self, type_name: str, record_id: str, body: Any = None) -> None:
        kind = self.object_type(type_name)
        source = self._ui_source(body if isinstance(body, dict) else {})
        if not self.store.archive_one(kind, record_id, source):
            raise not_found(f"{kind.value} {record_id} does not exist")

    # --- inspection -----------------------------------------------------------------------

    @staticmethod
    def object_type(name: str) -> ObjectType:
        kind = object_type(name)
        if kind is None:
            raise not_found(f"Unknown object type {name!r}")
        return kind

    def count_request(self, endpoint: str, status: int) -> None:
        self.request_counts[endpoint][str(status)] += 1

    def requests_json(self) -> dict[str, Any]:
        counts = {k: dict(v) for k, v in sorted(self.request_counts.items())}
        by_status: dict[str, int] = defaultdict(int)
        for statuses in counts.values():
            for status, n in statuses.items():
                by_status[status] += n
        return {"total": sum(by_status.values()), "by_status": dict(by_status), "endpoints": counts}

    def state_json(self, full: bool = False) -> dict[str, Any]:
        store = self.store
        state: dict[str, Any] = {
            "portal_id": self.config.portal_id,
            "app_id": self.config.app_id,
            "records": store.counts(),
            "archived": store.archived_count,
            "associations": store.associations.count(),
            "custom_properties": {
                t.value: sorted(n for n, p in props.items() if not p.hubspot_defined)
                for t, props in store.properties.items()
            },
            "non_string_values": store.non_string_values,
            "rate_limit": self.rate_limit_json(),
            "faults": self.faults.to_json(),
            "webhooks": self.webhooks.to_json(),
            "oauth_tokens_issued": self.tokens.issued,
            "action_definitions": sum(len(d) for d in self.actions.definitions.values()),
            "action_invocations": len(self.actions.invocations),
            "callback_completions": {k: len(v) for k, v in self.actions.completions.items()},
        }
        if full:
            state["data"] = {
                t.value: [r.to_json(None, include_all=True) for r in store.records[t].values()] for t in ObjectType
            }
        return state

    def reset(self) -> None:
        """Everything back to a fresh portal: records, custom properties, counters, faults, limits windows."""
        self.store.reset()
        self.actions.reset()
        self.webhooks.clear()
        self.request_counts.clear()
        self.faults = Faults()
        self._apply_limits()

    def wipe(self) -> None:
        """Drop records and associations; keep properties, groups and configuration."""
        self.store.wipe()
