"""Every Prometheus metric kleer-sync exports, defined once (prefix ``kleer_sync_``).

Import the metric you need from here; never create one elsewhere. The README's
metrics table, the Grafana dashboard and the alert rules refer to these names,
and a test checks that they only use names defined here.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# The *_created series double the exposition and no dashboard uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

PREFIX = "kleer_sync_"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# --- event log -----------------------------------------------------------------
EVENTS_APPENDED = Counter(
    PREFIX + "events_appended_total", "Events appended to the event log, by type.", ["type"]
)
EVENT_APPEND_SECONDS = Histogram(
    PREFIX + "event_append_seconds", "Duration of one append transaction.", buckets=_LATENCY_BUCKETS
)
LOG_HEAD_POSITION = Gauge(PREFIX + "log_head_position", "Highest position in the event log.")

# --- relay and consumers -------------------------------------------------------
RELAY_PUBLISHED_POSITION = Gauge(
    PREFIX + "relay_published_position", "Highest log position the relay has published to Kafka."
)
RELAY_LAG_EVENTS = Gauge(PREFIX + "relay_lag_events", "Log head minus the relay's published position.")
RELAY_PUBLISHED = Counter(PREFIX + "relay_published_total", "Events published to Kafka, by topic.", ["topic"])
RELAY_REPUBLISHES = Counter(
    PREFIX + "relay_republishes_total", "Times the relay rewound because the broker lost data."
)
CONSUMER_LAG_EVENTS = Gauge(
    PREFIX + "consumer_lag_events", "Log head minus the consumer's checkpoint, by consumer.", ["consumer"]
)
CONSUMER_PAUSED = Gauge(
    PREFIX + "consumer_paused", "1 while a consumer group is paused (kleer-sync outbound pause), by consumer.",
    ["consumer"],
)
CONSUMER_HANDLED = Counter(
    PREFIX + "consumer_events_handled_total",
    "Events handled by a consumer, by outcome.",
    ["consumer", "outcome"],
)

# --- outbound poller -----------------------------------------------------------
POLL_DURATION_SECONDS = Histogram(
    PREFIX + "poll_duration_seconds",
    "Duration of one poll of one object type.",
    ["connection", "object_type"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
POLL_RECORDS_SEEN = Counter(
    PREFIX + "poll_records_seen_total", "Kleer records read by the poller.", ["connection", "object_type"]
)
POLL_RECORDS_CHANGED = Counter(
    PREFIX + "poll_records_changed_total",
    "Kleer records whose mapped fields changed (or that were removed).",
    ["connection", "object_type"],
)
POLL_LAST_SUCCESS = Gauge(
    PREFIX + "poll_last_success_timestamp_seconds",
    "Unix time of the last successful poll; freshness = time() - this.",
    ["connection", "object_type"],
)
POLL_FRESHNESS_SECONDS = Gauge(
    PREFIX + "poll_freshness_seconds",
    "Seconds since the last successful poll (updated every few seconds).",
    ["connection", "object_type"],
)
POLL_ERRORS = Counter(PREFIX + "poll_errors_total", "Failed polls.", ["connection", "object_type"])

# --- outbound pusher -----------------------------------------------------------
HUBSPOT_RECORDS_UPSERTED = Counter(
    PREFIX + "hubspot_records_upserted_total", "Records upserted into HubSpot.", ["object_type"]
)
HUBSPOT_EDITS_HELD = Counter(
    PREFIX + "hubspot_edits_held_total",
    "Trigger properties the pusher did not overwrite because HubSpot held an edit not yet synced to Kleer.",
)
HUBSPOT_ASSOCIATIONS_WRITTEN = Counter(
    PREFIX + "hubspot_associations_written_total",
    "Associations written to HubSpot.",
    ["from_type", "to_type"],
)

# --- API clients ---------------------------------------------------------------
KLEER_REQUESTS = Counter(
    PREFIX + "kleer_requests_total", "Kleer API requests, by endpoint and status.", ["endpoint", "status"]
)
KLEER_REQUEST_SECONDS = Histogram(
    PREFIX + "kleer_request_seconds", "Kleer API request latency.", ["endpoint"], buckets=_LATENCY_BUCKETS
)
HUBSPOT_REQUESTS = Counter(
    PREFIX + "hubspot_requests_total", "HubSpot API requests, by endpoint and status.", ["endpoint", "status"]
)
HUBSPOT_REQUEST_SECONDS = Histogram(
    PREFIX + "hubspot_request_seconds", "HubSpot API request latency.", ["endpoint"], buckets=_LATENCY_BUCKETS
)
HUBSPOT_RATE_REMAINING = Gauge(
    PREFIX + "hubspot_rate_budget_remaining",
    "Requests left in HubSpot's current rate window, as last reported by HubSpot.",
    ["portal"],
)
HUBSPOT_RATE_LIMITED = Counter(
    PREFIX + "hubspot_rate_limited_total", "HubSpot 429 answers, by policy.", ["policy"]
)

# --- inbound service -----------------------------------------------------------
WEBHOOK_REQUESTS = Counter(
    PREFIX + "webhook_requests_total",
    "Webhook requests, by outcome (accepted, unauthorized, malformed, too_large, error).",
    ["outcome"],
)
WEBHOOK_REQUEST_SECONDS = Histogram(
    PREFIX + "webhook_request_seconds", "Webhook request latency (to the 2xx).", buckets=_LATENCY_BUCKETS
)
WEBHOOK_EVENTS = Counter(
    PREFIX + "webhook_events_total", "Webhook events received, by outcome (recorded, duplicate).", ["outcome"]
)
INBOUND_COMMANDS = Counter(
    PREFIX + "inbound_commands_total",
    "Inbound commands to Kleer, by object type and outcome (applied, echo, ignored, dead_lettered).",
    ["object_type", "outcome"],
)
WEBHOOK_TO_KLEER_SECONDS = Histogram(
    PREFIX + "webhook_to_kleer_seconds",
    "From webhook receipt to the Kleer write.",
    buckets=_LATENCY_BUCKETS,
)
WORKFLOW_ACTIONS = Counter(
    PREFIX + "workflow_actions_total", "Workflow action calls, by action and outcome.", ["action", "outcome"]
)

# --- dead letters ---------------------------------------------------------------
DEAD_LETTERS = Gauge(PREFIX + "dead_letters", "Open entries in the dead-letter queue.", ["source"])
DEAD_LETTERED = Counter(
    PREFIX + "dead_lettered_total", "Entries parked in the dead-letter queue.", ["source"]
)

# --- process --------------------------------------------------------------------
BUILD_INFO = Gauge(
    PREFIX + "build_info", "Always 1; labels carry the version and the process role.", ["version", "role"]
)
