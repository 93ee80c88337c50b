"""Outbound settings from the environment."""

from __future__ import annotations

import pytest

from libs.config import ConfigError, load_settings
from services.outbound.planning import RemovalPolicy
from services.outbound.settings import OutboundSettings, parse_poll_types


def test_poll_types_accept_command_line_names_and_kinds() -> None:
    assert parse_poll_types("clients, line_items,invoice") == ("client", "line_item", "invoice")
    assert len(parse_poll_types(None)) == 6


def test_an_unknown_poll_type_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="choose from clients"):
        parse_poll_types("clients,deals")


def test_defaults_follow_the_documented_schedule() -> None:
    settings = OutboundSettings.from_settings(load_settings(env={}))
    assert settings.intervals == {
        "client": 900,
        "project": 900,
        "invoice": 1800,
        "agreement": 1800,
        "line_item": 1800,
        "product": 86400,
    }
    assert (settings.removal, settings.include_credit_invoices, settings.invoice_history_days) == (
        RemovalPolicy.FLAG,
        False,
        None,
    )


def test_intervals_and_policies_come_from_the_environment() -> None:
    env = {
        "POLL_INTERVAL_CLIENTS": "60",
        "OUTBOUND_REMOVAL": "archive",
        "SYNC_CREDIT_INVOICES": "true",
        "INVOICE_HISTORY_DAYS": "365",
    }
    settings = OutboundSettings.from_settings(load_settings(env=env))
    assert settings.intervals["client"] == 60
    assert (settings.removal, settings.include_credit_invoices, settings.invoice_history_days) == (
        RemovalPolicy.ARCHIVE,
        True,
        365,
    )


def test_bad_values_are_reported_together() -> None:
    env = {"POLL_INTERVAL_CLIENTS": "0", "OUTBOUND_REMOVAL": "delete", "SYNC_CREDIT_INVOICES": "maybe"}
    with pytest.raises(ConfigError) as caught:
        OutboundSettings.from_settings(load_settings(env=env))
    assert len(caught.value.problems) == 3
