"""The inbound service's settings as plain, typed values (built once from ``libs.config.Settings``).

Policies (each an environment variable declared in ``libs/config.py``):

- ``INBOUND_CREATE_CLIENTS`` (default ``true``): a company created in HubSpot
  gets a new Kleer client, whose id is written back to the company's ``kleer_id``.
- ``INBOUND_CONFLICT_POLICY`` (default ``hubspot``): when Kleer and HubSpot
  both changed a field to different values since the last sync, ``hubspot``
  writes HubSpot's value (the newer edit) and ``kleer`` keeps Kleer's (the
  merged record is then recorded for the pusher, which brings it to HubSpot).
  Either way a ``SyncConflict`` event records both sides. Fields only one side
  changed are no conflict: that side's value is kept.
- ``INBOUND_DELETE_POLICY`` (default ``leave``): a company deleted in HubSpot
  leaves its Kleer client alone (``leave``) or marks it inactive (``deactivate``).
- ``INBOUND_PROJECT_TRIGGERS``: comma-separated project properties that start
  an inbound sync (default: every two-way project property of the mappings).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from libs.config import ConfigError, Secret, Settings
from libs.hubspot.signatures import DEFAULT_MAX_AGE_MS

MAX_BODY_BYTES = 1024 * 1024
MAX_HEADER_FIELD_BYTES = 8190
MAX_HEADERS = 100


class ConflictPolicy(StrEnum):
    HUBSPOT_WINS = "hubspot"
    KLEER_WINS = "kleer"


class DeletePolicy(StrEnum):
    LEAVE = "leave"
    DEACTIVATE = "deactivate"


E = TypeVar("E", bound=StrEnum)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class InboundOptions:
    """Everything the intake and the handlers decide by, besides the mappings."""

    client_secret: Secret
    public_base_url: str
    portals: Mapping[int, str]  # HubSpot portal id -> connection name
    app_id: int | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    signature_max_age_ms: int = DEFAULT_MAX_AGE_MS
    answer_within_seconds: float = 4.0
    create_clients: bool = True
    conflict_policy: ConflictPolicy = ConflictPolicy.HUBSPOT_WINS
    delete_policy: DeletePolicy = DeletePolicy.LEAVE
    project_triggers: tuple[str, ...] | None = None
    group_commit_delay: float = 0.002
    extra: Mapping[str, Any] = field(default_factory=dict)

    def connection_for(self, portal_id: int) -> str | None:
        return self.portals.get(portal_id)

    @property
    def default_connection(self) -> str:
        return next(iter(self.portals.values()), "default")

    @classmethod
    def from_settings(cls, settings: Settings, *, intake: bool = True) -> InboundOptions:
        """Read and check every inbound setting; one ``ConfigError`` names all problems.

        ``intake=False`` (a handlers-only process) does not need the signature settings.
        """
        problems: list[str] = []
        secret = settings.secret("HUBSPOT_CLIENT_SECRET")
        if not secret and intake:
            problems.append("HUBSPOT_CLIENT_SECRET is not set: it verifies HubSpot's webhook signatures")
        base = settings.get("PUBLIC_BASE_URL") or ""
        if not base and intake:
            problems.append("PUBLIC_BASE_URL is not set: signatures cover the public URL HubSpot calls")
        portal = settings.get_int("HUBSPOT_PORTAL_ID")
        if portal is None:
            problems.append("HUBSPOT_PORTAL_ID is not set: events of other portals are refused")
        create = _flag(settings, "INBOUND_CREATE_CLIENTS", True, problems)
        conflict = _choice(settings, "INBOUND_CONFLICT_POLICY", ConflictPolicy, ConflictPolicy.HUBSPOT_WINS, problems)
        delete = _choice(settings, "INBOUND_DELETE_POLICY", DeletePolicy, DeletePolicy.LEAVE, problems)
        raw_triggers = _optional(settings, "INBOUND_PROJECT_TRIGGERS")
        triggers = tuple(p.strip() for p in raw_triggers.split(",") if p.strip()) if raw_triggers else None
        if problems:
            raise ConfigError(problems)
        assert portal is not None
        return cls(
            client_secret=secret,
            public_base_url=base.rstrip("/"),
            portals={portal: settings.connection_id},
            app_id=settings.get_int("HUBSPOT_APP_ID"),
            create_clients=create,
            conflict_policy=conflict,
            delete_policy=delete,
            project_triggers=triggers,
        )


def _optional(settings: Settings, name: str) -> str | None:
    try:
        return settings.get(name)
    except KeyError:  # not declared in libs/config.py (older config): use the default
        return None


def _flag(settings: Settings, name: str, default: bool, problems: list[str]) -> bool:
    raw = _optional(settings, name)
    if raw is None or raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    problems.append(f"{name} must be true or false, got {raw!r}")
    return default


def _choice(settings: Settings, name: str, kind: type[E], default: E, problems: list[str]) -> E:
    raw = _optional(settings, name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw.lower())
    except ValueError:
        problems.append(f"{name} must be one of {', '.join(k.value for k in kind)}, got {raw!r}")
        return default
