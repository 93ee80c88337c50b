from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.records import RecordRef


def test_a_record_reference_round_trips_through_its_stream() -> None:
    ref = RecordRef.parse("kleer:client:123")
    assert ref.stream("acme") == "acme/kleer-client/123"
    assert RecordRef.from_stream("acme/kleer-client/123") == ("acme", ref)
    assert str(ref) == "kleer:client:123"


@pytest.mark.parametrize("text", ["kleer:client", "mars:client:1", "kleer:client:a/b", ""])
def test_bad_references_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError):
        RecordRef.parse(text)


@given(
    st.sampled_from(["kleer", "hubspot"]),
    st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True),
    st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True),
)
def test_any_valid_reference_round_trips(system: str, kind: str, record_id: str, connection: str) -> None:
    ref = RecordRef(system, kind, record_id)
    assert RecordRef.parse(str(ref)) == ref
    assert RecordRef.from_stream(ref.stream(connection)) == (connection, ref)
