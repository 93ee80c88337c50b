"""Configuration from the environment (12-factor).

Every variable is declared once here, in ``VARIABLES``, with its meaning; the
README's configuration table is generated from the same list. ``load_settings``
checks all variables a process needs and raises one ``ConfigError`` that names
every missing or malformed one, so an operator fixes them in one go.

Secrets are only ever read from the environment and are kept in ``Secret``
wrappers whose ``repr`` never shows the value.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

EVENT_LOOPS = ("asyncio", "uvloop")


class ConfigError(Exception):
    """One or more environment variables are missing or malformed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"kleer-sync cannot start: {len(problems)} configuration problem(s):\n{lines}\n"
            "Set these environment variables (see the configuration table in README.md) and start again."
        )


@dataclass(frozen=True)
class Secret:
    """A secret value that never shows itself in logs, reprs or tracebacks."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('****')" if self.value else "Secret('')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)


@dataclass(frozen=True)
class Variable:
    name: str
    description: str
    default: str | None = None
    secret: bool = False
    kind: str = "str"  # str | url | int | port | level | path | postgres | loop


VARIABLES: tuple[Variable, ...] = (
    Variable("DATABASE_URL", "PostgreSQL DSN of the event log.", kind="postgres"),
    Variable(
        "DATABASE_OWNER_URL",
        "DSN of the schema owner, for `kleer-sync db migrate` only (default DATABASE_URL). When its user differs "
        "from DATABASE_URL's, migrate grants that user exactly what the services need (no DDL, append-only log).",
        kind="postgres",
    ),
    Variable("KAFKA_BOOTSTRAP_SERVERS", "Kafka bootstrap servers, comma separated (host:port,...)."),
    Variable(
        "KAFKA_TOPIC_PREFIX",
        "Prefix of our Kafka topic names (several deployments can share a cluster).",
        "kleer-sync",
    ),
    Variable("KAFKA_CREATE_TOPICS", "true: the relay creates missing topics; false when an operator (e.g. Strimzi) owns them.", "true"),
    Variable("KAFKA_PARTITIONS", "Partitions per topic when the relay creates them.", "4", kind="int"),
    Variable("KLEER_API_BASE", "Kleer API base URL.", "https://api.kleer.se/v1", kind="url"),
    Variable("KLEER_TOKEN", "Kleer API token (sent as X-Token).", secret=True),
    Variable("KLEER_COMPANY_ID", "Kleer company id of the default connection.", kind="int"),
    Variable("HUBSPOT_API_BASE", "HubSpot API base URL.", "https://api.hubapi.com", kind="url"),
    Variable("HUBSPOT_ACCESS_TOKEN", "HubSpot private-app token (or use the OAuth variables).", secret=True),
    Variable("HUBSPOT_CLIENT_ID", "HubSpot app client id (OAuth)."),
    Variable("HUBSPOT_REFRESH_TOKEN", "HubSpot OAuth refresh token.", secret=True),
    Variable(
        "HUBSPOT_CLIENT_SECRET",
        "HubSpot app client secret: verifies webhook and action signatures.",
        secret=True,
    ),
    Variable(
        "HUBSPOT_RATE_LIMIT",
        "Requests per 10 s kleer-sync may send to the portal, shared by every process (HubSpot allows 110 for "
        "public apps, 100-190 for private apps); 0 turns the budget off (simulator benchmarks).",
        "110",
        kind="int",
    ),
    Variable("HUBSPOT_APP_ID", "HubSpot app id: our own writes echo back with this sourceId.", kind="int"),
    Variable("HUBSPOT_PORTAL_ID", "HubSpot portal (hub) id of the default connection.", kind="int"),
    Variable(
        "PUBLIC_BASE_URL",
        "Public base URL HubSpot calls (signatures cover it), e.g. https://sync.example.com.",
        kind="url",
    ),
    Variable("PORT", "HTTP port of the inbound service.", "8080", kind="port"),
    Variable(
        "METRICS_PORT", "Port serving /metrics, /healthz and /readyz for every process.", "9102", kind="port"
    ),
    Variable("MAPPINGS_FILE", "YAML field mappings file (defaults built in).", kind="path"),
    Variable("LOG_LEVEL", "debug, info, warning or error.", "info", kind="level"),
    Variable(
        "EVENT_LOOP",
        "asyncio (the standard library's loop) or uvloop (the `uvloop` extra: cheaper single database round "
        "trips, but no faster webhook intake or outbound sync in our benchmarks).",
        "asyncio",
        kind="loop",
    ),
    Variable(
        "CONNECTION_ID",
        "Name of the default connection (one portal with one Kleer company); part of every stream name.",
        "default",
    ),
    # Outbound poller (services/outbound): seconds between polls per object type, and what it syncs.
    Variable("POLL_INTERVAL_CLIENTS", "Seconds between polls of Kleer clients.", "900", kind="int"),
    Variable("POLL_INTERVAL_PROJECTS", "Seconds between polls of Kleer projects.", "900", kind="int"),
    Variable("POLL_INTERVAL_INVOICES", "Seconds between polls of Kleer invoices.", "1800", kind="int"),
    Variable("POLL_INTERVAL_AGREEMENTS", "Seconds between polls of Kleer agreements.", "1800", kind="int"),
    Variable("POLL_INTERVAL_LINE_ITEMS", "Seconds between polls of invoice and agreement rows.", "1800", kind="int"),
    Variable("POLL_INTERVAL_PRODUCTS", "Seconds between polls of Kleer products.", "86400", kind="int"),
    Variable("INVOICE_HISTORY_DAYS", "Sync only invoices dated within this many days (unset: all).", kind="int"),
    Variable("SYNC_CREDIT_INVOICES", "true to sync credit invoices too (default false).", "false"),
    Variable(
        "OUTBOUND_REMOVAL",
        "What a record deleted in Kleer becomes in HubSpot: flag (kleer_deleted=true) or archive.",
        "flag",
    ),
    # Inbound sync (services/inbound): what HubSpot-side creations, deletions and conflicts do.
    Variable(
        "INBOUND_CREATE_CLIENTS",
        "true: a company created in HubSpot gets a new Kleer client (its id is written to kleer_id).",
        "true",
    ),
    Variable(
        "INBOUND_CONFLICT_POLICY",
        "Both sides changed since the last sync: hubspot (the newer HubSpot edit wins) or kleer.",
        "hubspot",
    ),
    Variable(
        "INBOUND_DELETE_POLICY",
        "A company/project deleted in HubSpot: leave its Kleer record alone, or deactivate it.",
        "leave",
    ),
    Variable(
        "INBOUND_PROJECT_TRIGGERS",
        "Comma-separated project properties that start an inbound sync (unset: every two-way one).",
    ),
    Variable(
        "ADMIN_TOKEN",
        "Bearer token or basic-auth password for /admin (no default: admin is off without it).",
        secret=True,
    ),
)

_BY_NAME = {v.name: v for v in VARIABLES}
_LEVELS = {"debug", "info", "warning", "error", "critical"}


def _without_password(url: str) -> str:
    """``url`` with any password in it masked: a DATABASE_URL carries one, and errors are logged."""
    try:
        parsed = urlparse(url)
        password = parsed.password
    except ValueError:
        return "(unparseable URL, not shown)"
    if not password:
        return url
    user = parsed.username or ""
    host = parsed.netloc.rpartition("@")[2]
    return parsed._replace(netloc=f"{user}:****@{host}").geturl()


def _check(var: Variable, raw: str) -> str | None:
    if var.kind in ("url", "postgres"):
        parsed = urlparse(raw)
        schemes = ("postgres", "postgresql") if var.kind == "postgres" else ("http", "https")
        if parsed.scheme not in schemes or (not parsed.netloc and var.kind == "url"):
            shown = "****" if var.secret else _without_password(raw)
            return f"{var.name}={shown} is not a {'/'.join(schemes)} URL"
    elif var.kind in ("int", "port"):
        try:
            number = int(raw)
        except ValueError:
            return f"{var.name} must be a whole number, got {raw!r}"
        if var.kind == "port" and not 0 < number < 65536:
            return f"{var.name} must be a port between 1 and 65535, got {number}"
    elif var.kind == "level" and raw.lower() not in _LEVELS:
        return f"{var.name} must be one of {', '.join(sorted(_LEVELS))}, got {raw!r}"
    elif var.kind == "loop" and raw not in EVENT_LOOPS:
        return f"{var.name} must be one of {', '.join(EVENT_LOOPS)}, got {raw!r}"
    elif var.kind == "path" and not os.path.isfile(raw):
        return f"{var.name}={raw!r} is not a readable file"
    return None


@dataclass(frozen=True)
class Settings:
    """Validated configuration. ``get`` returns plain values, ``secret`` wrapped ones."""

    values: Mapping[str, str]

    def get(self, name: str) -> str | None:
        if _BY_NAME[name].secret:
            raise KeyError(f"{name} is a secret: use Settings.secret()")
        return self.values.get(name)

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise ConfigError([f"{name} is not set: {_BY_NAME[name].description}"])
        return value

    def get_int(self, name: str) -> int | None:
        value = self.get(name)
        return int(value) if value is not None else None

    def secret(self, name: str) -> Secret:
        if not _BY_NAME[name].secret:
            raise KeyError(f"{name} is not a secret")
        return Secret(self.values.get(name, ""))

    @property
    def connection_id(self) -> str:
        return self.values.get("CONNECTION_ID", "default")


def event_loop_choice(env: Mapping[str, str] | None = None) -> str:
    """``EVENT_LOOP`` (its default when unset), checked as ``load_settings`` checks it."""
    var = _BY_NAME["EVENT_LOOP"]
    raw = (os.environ if env is None else env).get(var.name) or var.default or ""
    problem = _check(var, raw)
    if problem:
        raise ConfigError([problem])
    return raw


def load_settings(
    required: Collection[str] = (),
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Read and validate the environment.

    ``required`` names the variables this process cannot run without. Every
    set variable is validated; all problems are reported in one ``ConfigError``.
    OAuth: ``HUBSPOT_ACCESS_TOKEN`` may be replaced by ``HUBSPOT_CLIENT_ID`` +
    ``HUBSPOT_CLIENT_SECRET`` + ``HUBSPOT_REFRESH_TOKEN``.
    """
    source = os.environ if env is None else env
    problems: list[str] = []
    values: dict[str, str] = {}
    for var in VARIABLES:
        raw = source.get(var.name)
        if raw is None or raw == "":
            if var.default is not None:
                values[var.name] = var.default
            continue
        problem = _check(var, raw)
        if problem:
            problems.append(problem)
        else:
            values[var.name] = raw
    for name in required:
        if name == "HUBSPOT_ACCESS_TOKEN" and "HUBSPOT_ACCESS_TOKEN" not in values:
            oauth = ("HUBSPOT_CLIENT_ID", "HUBSPOT_CLIENT_SECRET", "HUBSPOT_REFRESH_TOKEN")
            missing = [n for n in oauth if n not in values]
            if missing:
                problems.append(
                    "HUBSPOT_ACCESS_TOKEN is not set, and OAuth needs "
                    + ", ".join(missing)
                    + ": set a private-app token or all three OAuth variables"
                )
            continue
        if name not in values and not any(p.startswith(name) for p in problems):
            problems.append(f"{name} is not set: {_BY_NAME[name].description}")
    if problems:
        raise ConfigError(problems)
    return Settings(values)
