"""Outbound settings from the environment (the variables are declared in ``libs/config.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from libs.config import ConfigError, Settings
from libs.mapping.objects import AGREEMENT, CLIENT, INVOICE, LINE_ITEM, PRODUCT, PROJECT
from services.outbound.planning import RemovalPolicy

#: Poll types as named on the command line (``--types clients,invoices``) -> Kleer kind.
POLL_TYPES: Mapping[str, str] = {
    "clients": CLIENT,
    "products": PRODUCT,
    "projects": PROJECT,
    "agreements": AGREEMENT,
    "invoices": INVOICE,
    "line_items": LINE_ITEM,
}
_INTERVAL_VARIABLES: Mapping[str, str] = {
    CLIENT: "POLL_INTERVAL_CLIENTS",
    PRODUCT: "POLL_INTERVAL_PRODUCTS",
    PROJECT: "POLL_INTERVAL_PROJECTS",
    AGREEMENT: "POLL_INTERVAL_AGREEMENTS",
    INVOICE: "POLL_INTERVAL_INVOICES",
    LINE_ITEM: "POLL_INTERVAL_LINE_ITEMS",
}
DEFAULT_INTERVALS: Mapping[str, float] = {
    CLIENT: 900.0,
    PROJECT: 900.0,
    INVOICE: 1800.0,
    AGREEMENT: 1800.0,
    LINE_ITEM: 1800.0,
    PRODUCT: 86400.0,
}


def parse_poll_types(text: str | None) -> tuple[str, ...]:
    """``"clients,invoices"`` -> ``("client", "invoice")``; None or empty -> every kind."""
    if not text:
        return tuple(POLL_TYPES.values())
    kinds: list[str] = []
    for name in (part.strip() for part in text.split(",")):
        if not name:
            continue
        kind = POLL_TYPES.get(name) or (name if name in POLL_TYPES.values() else None)
        if kind is None:
            raise ConfigError(
                [f"unknown object type {name!r} in --types; choose from {', '.join(POLL_TYPES)}"]
            )
        if kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)


@dataclass(frozen=True)
class OutboundSettings:
    connection: str = "default"
    intervals: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_INTERVALS))
    include_credit_invoices: bool = False
    invoice_history_days: int | None = None
    removal: RemovalPolicy = RemovalPolicy.FLAG

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundSettings:
        problems: list[str] = []
        intervals: dict[str, float] = {}
        for kind, name in _INTERVAL_VARIABLES.items():
            value = settings.get_int(name)
            if value is None:
                intervals[kind] = DEFAULT_INTERVALS[kind]
            elif value < 1:
                problems.append(f"{name} must be at least 1 second, got {value}")
            else:
                intervals[kind] = float(value)
        credit = (settings.get("SYNC_CREDIT_INVOICES") or "false").strip().lower()
        if credit not in ("true", "false", "1", "0", "yes", "no"):
            problems.append(f"SYNC_CREDIT_INVOICES must be true or false, got {credit!r}")
        removal = (settings.get("OUTBOUND_REMOVAL") or "flag").strip().lower()
        if removal not in {p.value for p in RemovalPolicy}:
            problems.append(f"OUTBOUND_REMOVAL must be flag or archive, got {removal!r}")
        history = settings.get_int("INVOICE_HISTORY_DAYS")
        if history is not None and history < 1:
            problems.append(f"INVOICE_HISTORY_DAYS must be at least 1 when set, got {history}")
        if problems:
            raise ConfigError(problems)
        return cls(
            connection=settings.connection_id,
            intervals=intervals,
            include_credit_invoices=credit in ("true", "1", "yes"),
            invoice_history_days=history,
            removal=RemovalPolicy(removal),
        )
