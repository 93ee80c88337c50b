"""The three-way merge of a record's fields: its laws, and the cases the inbound sync meets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.inbound.merge import Side, three_way_merge

KEYS = st.sampled_from(["name", "phone", "zip", "email"])
VALUES = st.sampled_from(["a", "b", "c", ""])
RECORDS = st.dictionaries(KEYS, VALUES)
SIDES = st.sampled_from(list(Side))


@given(RECORDS, RECORDS, SIDES)
def test_a_side_that_changed_nothing_takes_the_other_sides_values(base: dict[str, str], other: dict[str, str],
                                                                    winner: Side) -> None:
    assert three_way_merge(base, base, other, winner=winner).values == other
    assert three_way_merge(base, other, base, winner=winner).values == other


@given(RECORDS, RECORDS, RECORDS, SIDES)
def test_conflicts_are_exactly_the_fields_both_sides_changed_differently(
    base: dict[str, str], hubspot: dict[str, str], kleer: dict[str, str], winner: Side
) -> None:
    merge = three_way_merge(base, hubspot, kleer, winner=winner)
    expected = {
        k for k in {*base, *hubspot, *kleer}
        if hubspot.get(k) != base.get(k) and kleer.get(k) != base.get(k) and hubspot.get(k) != kleer.get(k)
    }
    assert set(merge.conflicts) == expected
    winning = hubspot if winner is Side.HUBSPOT else kleer
    for key in expected:
        assert merge.values.get(key) == winning.get(key)


@given(RECORDS, RECORDS, RECORDS, SIDES)
def test_every_merged_value_comes_from_one_side_and_kleer_ahead_names_the_ones_hubspot_lacks(
    base: dict[str, str], hubspot: dict[str, str], kleer: dict[str, str], winner: Side
) -> None:
    merge = three_way_merge(base, hubspot, kleer, winner=winner)
    for key in {*base, *hubspot, *kleer}:
        assert merge.values.get(key) in (hubspot.get(key), kleer.get(key))
    assert set(merge.kleer_ahead) == {k for k in {*hubspot, *kleer} if merge.values.get(k) != hubspot.get(k)}


@given(RECORDS, RECORDS, SIDES)
def test_merging_again_after_both_sides_hold_the_result_changes_nothing(
    hubspot: dict[str, str], kleer: dict[str, str], winner: Side
) -> None:
    first = three_way_merge(None, hubspot, kleer, winner=winner).values
    again = three_way_merge(first, first, first, winner=winner)
    assert again.values == first and not again.conflicts and not again.kleer_ahead


@given(RECORDS, RECORDS)
def test_without_a_base_every_difference_is_a_conflict(hubspot: dict[str, str], kleer: dict[str, str]) -> None:
    merge = three_way_merge(None, hubspot, kleer)
    assert set(merge.conflicts) == {k for k in {*hubspot, *kleer} if hubspot.get(k) != kleer.get(k)}
    assert merge.values == hubspot


def test_hubspot_edit_and_unpushed_kleer_change_of_other_fields_both_survive() -> None:
    base = {"name": "Old AB", "phone": "1"}
    merge = three_way_merge(base, {"name": "Renamed AB", "phone": "1"}, {"name": "Old AB", "phone": "2"})
    assert merge.values == {"name": "Renamed AB", "phone": "2"}
    assert merge.conflicts == () and merge.kleer_ahead == ("phone",)


def test_a_field_one_side_lacks_is_left_out_when_that_side_changed_it() -> None:
    merge = three_way_merge({"days": 30}, {}, {"days": 30})
    assert merge.values == {} and merge.conflicts == ()
