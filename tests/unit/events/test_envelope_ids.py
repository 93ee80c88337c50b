"""New event ids: version 7 UUIDs, time-ordered, unique."""

from __future__ import annotations

import time
import uuid

from libs.events.envelope import NewEvent, new_event_id


def test_a_new_event_id_is_a_version_7_uuid_carrying_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    event_id = NewEvent("T", {}).event_id
    after = time.time_ns() // 1_000_000
    assert event_id.version == 7 and event_id.variant == uuid.RFC_4122
    assert before <= event_id.int >> 80 <= after


def test_ids_made_in_later_milliseconds_sort_later_and_none_repeat() -> None:
    first = new_event_id()
    deadline = time.monotonic() + 1
    while (later := new_event_id()).int >> 80 == first.int >> 80 and time.monotonic() < deadline:
        pass
    assert first < later
    many = [new_event_id() for _ in range(20_000)]
    assert len(set(many)) == len(many)
