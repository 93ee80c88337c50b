"""Replay selections: validation, the event types they read, and a stable key to resume by."""

from __future__ import annotations

import datetime as dt

import pytest

from services.operations.replay import ReplayError, ReplaySelector, object_kind, parse_moment

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def test_object_types_are_named_as_people_write_them() -> None:
    assert [object_kind(n) for n in ("clients", "client", "companies", "company", "line_items")] == [
        "client", "client", "client", "client", "line_item"]
    with pytest.raises(ReplayError, match="unknown object type"):
        object_kind("deals")


def test_moments_are_iso_times_or_ages() -> None:
    assert parse_moment("2h", NOW) == NOW - dt.timedelta(hours=2)
    assert parse_moment("7d", NOW) == NOW - dt.timedelta(days=7)
    assert parse_moment("2025-02-01T10:00", NOW) == dt.datetime(2025, 2, 1, 10, tzinfo=dt.UTC)
    assert parse_moment("2025-02-01T10:00:00Z", NOW) == dt.datetime(2025, 2, 1, 10, tzinfo=dt.UTC)
    with pytest.raises(ReplayError, match="not a time"):
        parse_moment("yesterday", NOW)


def test_a_selector_reads_only_the_outbound_change_types_it_names() -> None:
    assert ReplaySelector("acme", kinds=("client",)).types() == [
        "KleerClientChanged", "KleerClientRemoved", "KleerClientPushRequested"]
    assert ReplaySelector("acme", records=("kleer:invoice:9",), event_types=("KleerInvoiceChanged",)).types() == [
        "KleerInvoiceChanged"]
    assert len(ReplaySelector("acme").types()) == 18


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"records": ("hubspot:company:1",)}, "Kleer records"),
        ({"event_types": ("HubSpotCompanyUpserted",)}, "not an outbound change"),
        ({"since": NOW, "until": NOW}, "time window is empty"),
        ({"from_position": 9, "to_position": 3}, "position range is empty"),
    ],
)
def test_selections_that_cannot_select_anything_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ReplayError, match=message):
        ReplaySelector("acme", **fields)  # type: ignore[arg-type]


def test_the_key_of_a_stored_selection_is_the_key_of_the_original() -> None:
    selector = ReplaySelector(
        "acme", kinds=("invoice", "client"), records=("kleer:client:1",), since=NOW, until=NOW + dt.timedelta(hours=1),
        from_position=5,
    )
    again = ReplaySelector.from_json(selector.to_json())
    assert again.key() == selector.key()
    assert again.to_json() == selector.to_json()
    assert ReplaySelector("acme", kinds=("client",)).key() != ReplaySelector("acme", kinds=("invoice",)).key()
