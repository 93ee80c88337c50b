"""Simulator settings, all changeable at run time through ``/_sim/*`` or the test fixture."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOKEN = "pat-na1-00000000-sim0-0000-0000-000000000000"


@dataclass
class Subscription:
    """One webhook subscription: ``company.propertyChange`` (+ ``propertyName``), ``object.creation``
    (+ ``objectTypeId``), … A propertyChange subscription without ``propertyName`` matches every
    property (a simulator convenience; HubSpot subscribes property by property)."""

    id: int
    subscription_type: str
    property_name: str | None = None
    object_type_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "subscriptionType": self.subscription_type, "propertyName": self.property_name,
                "objectTypeId": self.object_type_id}


@dataclass
class WebhookConfig:
    target_url: str | None = None  # None: no deliveries (and no change tracking)
    signed_url: str | None = None  # the public URL the signature covers (behind an ingress); default target_url
    subscriptions: list[Subscription] | None = None  # None: every creation/deletion/propertyChange
    batch_size: int = 100
    batch_window_ms: float = 20.0  # gather events this long before sending a batch
    duplicate_rate: float = 0.0  # share of events delivered a second time, in a later request
    shuffle: bool = False  # deliver events out of order
    max_attempts: int = 10
    retry_base_ms: float = 1_000.0  # first retry delay (doubles each attempt), divided by time_scale
    retry_max_ms: float = 3_600_000.0
    timeout_s: float = 5.0
    concurrency: int = 4
    signature_version: str = "v3"  # v3 | v2 | v1


@dataclass
class SimConfig:
    portal_id: int = 62515
    app_id: int = 1_234_567
    private_app_token: str = DEFAULT_TOKEN
    client_id: str = "sim-client-id-0000"
    client_secret: str = "sim-client-secret-0000-0000-000000000000"
    refresh_token: str = "sim-refresh-token-0000-0000"
    developer_api_key: str = "sim-developer-api-key-0000"
    access_token_lifetime_s: float = 1_800.0
    rate_limit_max: int = 110  # requests per interval per portal; 0 = off
    rate_limit_interval_ms: int = 10_000
    search_limit_per_s: int = 5  # search requests per second; 0 = off
    daily_limit: int = 0  # private-app daily cap; 0 = off (no Daily headers)
    time_scale: float = 1.0  # >1 runs windows and retry delays faster (10 = ten times faster)
    strict_value_types: bool = False  # reject non-string property values instead of coercing them
    shuffle_batch_results: bool = True  # HubSpot does not promise results in input order
    webhook: WebhookConfig = field(default_factory=WebhookConfig)

    def scaled_ms(self, ms: float) -> float:
        """Real milliseconds for a HubSpot-time duration."""
        return ms / self.time_scale if self.time_scale > 0 else ms
