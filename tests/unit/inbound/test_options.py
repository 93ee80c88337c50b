"""Inbound settings: one ConfigError naming every problem."""

from __future__ import annotations

import pytest

from libs.config import ConfigError, Settings
from services.inbound.options import ConflictPolicy, InboundOptions


def test_intake_needs_secret_base_url_and_portal() -> None:
    with pytest.raises(ConfigError) as error:
        InboundOptions.from_settings(Settings({}))
    text = str(error.value)
    assert "HUBSPOT_CLIENT_SECRET" in text and "PUBLIC_BASE_URL" in text and "HUBSPOT_PORTAL_ID" in text


def test_handlers_only_need_the_portal() -> None:
    options = InboundOptions.from_settings(Settings({"HUBSPOT_PORTAL_ID": "5", "CONNECTION_ID": "acme"}), intake=False)
    assert options.portals == {5: "acme"}
    assert options.conflict_policy is ConflictPolicy.HUBSPOT_WINS and options.create_clients
