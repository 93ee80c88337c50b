"""Change detection: only changed mapped fields make events; unchanged inputs are not even mapped."""

from __future__ import annotations

import datetime as dt

from libs.mapping.errors import MappingError
from libs.mapping.loader import default_mappings
from services.outbound.detection import Source, detect, implausible_removals, mapping_version, source_hash
from services.outbound.fingerprints import UNMAPPABLE, Seen
from services.outbound.snapshots import Snapshot

SALT = b"v1client"


def _source(
    kleer_id: str,
    raw: dict[str, object],
    fingerprint: str = "f1",
    calls: list[str] | None = None,
    date: dt.date | None = None,
) -> Source:
    def build() -> list[Snapshot]:
        if calls is not None:
            calls.append(kleer_id)
        if raw.get("broken"):
            raise MappingError("bad value", object_type="client", property="name", value=raw["broken"])
        return [Snapshot("client", kleer_id, {"kleer_id": kleer_id}, fingerprint)]

    return Source((kleer_id,), source_hash(SALT, raw), date, build, f"kleer:client:{kleer_id}", raw)


def test_an_unchanged_input_is_not_mapped_again() -> None:
    calls: list[str] = []
    raw = {"id": 1, "name": "A"}
    remembered = {"1": Seen("f1", source_hash(SALT, raw), None)}
    result = detect([_source("1", raw, calls=calls)], remembered, ["1"])
    assert (result.changed, result.rows, result.removed, calls, result.seen) == ([], [], [], [], 1)


def test_a_new_input_with_the_same_mapped_fields_only_refreshes_the_stored_hash() -> None:
    raw = {"id": 1, "name": "A", "unmapped": "changed"}
    result = detect([_source("1", raw, "f1")], {"1": Seen("f1", "old-hash", None)}, ["1"])
    assert result.changed == []
    assert [(r.kleer_id, r.fingerprint, r.source_hash) for r in result.rows] == [
        ("1", "f1", source_hash(SALT, raw))
    ]


def test_changed_mapped_fields_and_new_records_are_changes() -> None:
    result = detect(
        [_source("1", {"id": 1}, "f2"), _source("2", {"id": 2}, "f1")],
        {"1": Seen("f1", "h", None)},
        ["1", "2"],
    )
    assert [s.kleer_id for s in result.changed] == ["1", "2"]


def test_records_kleer_no_longer_lists_are_removed_but_filtered_ones_are_not() -> None:
    remembered = {"1": Seen("f", "h", None), "2": Seen("f", "h", None), "3": Seen("f", "h", None)}
    # 2 is still listed (e.g. a credit invoice now filtered out): not a removal.
    result = detect([], remembered, ["2"])
    assert sorted(result.removed) == ["1", "3"]


def test_records_before_the_history_window_are_not_removals() -> None:
    old, recent = dt.date(2020, 1, 1), dt.date(2026, 1, 1)
    remembered = {"1": Seen("f", "h", old), "2": Seen("f", "h", recent)}
    result = detect([], remembered, [], window_start=dt.date(2025, 1, 1))
    assert result.removed == ["2"]


def test_an_unmappable_record_is_reported_once_per_version_and_remembered_as_such() -> None:
    raw = {"id": 1, "broken": "x" * 3}
    first = detect([_source("1", raw)], {}, ["1"])
    assert [f.source.record for f in first.failures] == ["kleer:client:1"]
    assert [(r.fingerprint, r.source_hash) for r in first.rows] == [(UNMAPPABLE, source_hash(SALT, raw))]
    again = detect([_source("1", raw)], {"1": Seen(UNMAPPABLE, source_hash(SALT, raw), None)}, ["1"])
    assert again.failures == [] and again.changed == []


def test_the_mapping_version_changes_with_the_mappings() -> None:
    from libs.mapping.loader import parse_mappings

    custom = parse_mappings(
        "version: 1\nobjects:\n  client:\n    fields:\n      - {property: phone, remove: true}\n"
    )
    assert mapping_version(default_mappings()) == mapping_version(default_mappings())
    assert mapping_version(custom) != mapping_version(default_mappings())


def test_an_empty_kleer_list_is_not_taken_for_the_deletion_of_the_whole_book() -> None:
    remembered = {str(i): Seen("f", "h", None) for i in range(100)}
    everything_gone = detect([], remembered, [])
    assert implausible_removals(len(everything_gone.removed), everything_gone.remembered, 0.5, 20) == (
        "Kleer no longer lists 100 of the 100 records synced before"
    )
    some_gone = detect([], remembered, [str(i) for i in range(60)])
    assert implausible_removals(len(some_gone.removed), 100, 0.5, 20) is None
    assert implausible_removals(1, 1, 0.5, 20) is None  # a small book may lose its last record
