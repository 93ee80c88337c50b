"""The simulator's in-memory CRM store (pure): upserts, unique indexes, values, paging, associations."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from libs.hubspot.objects import ObjectType
from sim.hubspot.errors import ApiError
from sim.hubspot.schema import built_in_properties, check_value
from sim.hubspot.store import Change, CrmStore, Source

API = Source("INTEGRATION", "42")
C = ObjectType.COMPANIES


@pytest.fixture
def store() -> CrmStore:
    s = CrmStore(shuffle_results=False)
    s.create_property(C, {"name": "kleer_id", "label": "K", "type": "string", "fieldType": "text",
                          "hasUniqueValue": True})
    return s


def upsert(store: CrmStore, *pairs: tuple[str, dict[str, object]]) -> list[dict[str, object]]:
    answer = store.batch_upsert(C, {"inputs": [{"id": i, "idProperty": "kleer_id", "properties": p}
                                               for i, p in pairs]}, API)
    assert not answer.errors, answer.errors
    return answer.results


def test_changing_a_unique_value_frees_the_old_one(store: CrmStore) -> None:
    [created] = upsert(store, ("k1", {"name": "A"}))
    store.update_one(C, str(created["id"]), None, {"properties": {"kleer_id": "k2"}}, API)
    assert store.unique[C]["kleer_id"] == {"k2": int(str(created["id"]))}
    [again] = upsert(store, ("k1", {"name": "B"}))
    assert again["new"] is True


def test_archiving_frees_unique_values_and_associations(store: CrmStore) -> None:
    [created] = upsert(store, ("k1", {}))
    deal = store.create_one(ObjectType.DEALS, {"properties": {}}, API)
    record_id = int(str(created["id"]))
    store.associations.add(C, record_id, ObjectType.DEALS, deal.id, 342)
    assert store.archive(C, str(record_id), API)
    assert store.unique[C]["kleer_id"] == {}
    assert store.associations.targets(ObjectType.DEALS, deal.id, C) == {}


def test_empty_string_clears_a_value(store: CrmStore) -> None:
    upsert(store, ("k1", {"city": "Lund"}))
    upsert(store, ("k1", {"city": ""}))
    assert "city" not in next(iter(store.records[C].values())).properties


def test_changes_are_reported_only_for_values_that_changed(store: CrmStore) -> None:
    seen: list[Change] = []
    store.on_change = seen.extend
    upsert(store, ("k1", {"name": "A", "city": "Lund"}))
    seen.clear()
    upsert(store, ("k1", {"name": "A", "city": "Umeå"}))
    assert [(c.kind, c.property_name, c.value) for c in seen] == [("propertyChange", "city", "Umeå")]


def test_paging_skips_archived_records(store: CrmStore) -> None:
    results = upsert(store, *[(f"k{i}", {}) for i in range(10)])
    for r in results[:5]:
        store.archive(C, str(r["id"]), API)
    page, cursor = store.page(C, 0, 3)
    assert len(page) == 3 and cursor is not None
    rest, end = store.page(C, cursor, 10)
    assert len(rest) == 2 and end is None


def test_unknown_property_rejects_the_whole_batch(store: CrmStore) -> None:
    with pytest.raises(ApiError) as info:
        upsert(store, ("k1", {"name": "A"}), ("k2", {"bogus": "x"}))
    assert info.value.status == 400 and "PROPERTY_DOESNT_EXIST" in info.value.message
    assert store.records[C] == {}


def test_a_property_needs_an_existing_group_and_a_known_type(store: CrmStore) -> None:
    for bad in ({"groupName": "nope"}, {"type": "money"}, {"fieldType": "slider"}, {"name": "Has Spaces"}):
        spec = {"name": "region", "label": "Region", "type": "string", "fieldType": "text", **bad}
        with pytest.raises(ApiError) as info:
            store.create_property(C, spec)
        assert info.value.status == 400
    with pytest.raises(ApiError) as info:
        store.create_property(C, {"name": "kleer_id", "label": "K", "type": "string", "fieldType": "text"})
    assert info.value.status == 409


@given(st.dates())
def test_any_calendar_date_is_a_valid_date_value(day: object) -> None:
    prop = built_in_properties(ObjectType.INVOICES, "")["hs_invoice_date"]
    assert check_value(prop, str(day)) is None


@given(st.from_regex(r"\d{4}-\d{2}-\d{2}\n?", fullmatch=True) | st.text(max_size=12))
@example("000\u0661-01-01")  # a draw of the suite found it, 2026-12-07: strptime reads it, HubSpot does not
@example("2026-12-07\n")
def test_a_date_value_is_valid_exactly_when_strptime_reads_it_in_ascii_digits(value: str) -> None:
    prop = built_in_properties(ObjectType.INVOICES, "")["hs_invoice_date"]
    try:
        datetime.strptime(value, "%Y-%m-%d")
        # strptime also reads other scripts' digits ("000\u0661-01-01"); HubSpot's ISO dates are ASCII.
        readable = re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value) is not None
    except ValueError:
        readable = False
    if readable or not value.isdigit():  # epoch milliseconds have rules of their own
        assert (check_value(prop, value) is None) == (readable or value == "")


def test_an_enumeration_follows_its_options_when_they_are_replaced() -> None:
    prop = built_in_properties(ObjectType.DEALS, "")["dealstage"]
    first = sorted(prop.option_values())[0]
    assert check_value(prop, first) is None
    prop.options = [{"label": "Only", "value": "only"}]
    assert check_value(prop, "only") is None
    problem = check_value(prop, first)
    assert problem is not None and problem.error == "INVALID_OPTION"


@given(st.integers(min_value=1, max_value=86_399_999))
def test_epoch_ms_not_at_midnight_is_an_invalid_date(offset: int) -> None:
    prop = built_in_properties(ObjectType.INVOICES, "")["hs_invoice_date"]
    problem = check_value(prop, str(1_700_006_400_000 + offset))
    assert problem is not None and problem.error == "INVALID_DATE"


@given(st.decimals(allow_nan=False, allow_infinity=False, places=2))
def test_decimal_strings_are_valid_numbers(value: object) -> None:
    prop = built_in_properties(ObjectType.DEALS, "")["amount"]
    assert check_value(prop, str(value)) is None


def test_numbers_with_surrounding_whitespace_are_refused() -> None:
    prop = built_in_properties(ObjectType.DEALS, "")["amount"]
    problem = check_value(prop, " 12.50")
    assert problem is not None and problem.error == "LEADING_TRAILING_WHITESPACE"
