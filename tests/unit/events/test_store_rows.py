"""Decoding rows of the event log (no database: rows are plain tuples here)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from libs.events.envelope import EventDataError, RecordedEvent, wire_json
from libs.events.store import event_from_row as _record


def _record_by_init(row: tuple[object, ...]) -> RecordedEvent:
    """The row decoded through RecordedEvent's own constructor."""
    metadata = str(row[6])
    return RecordedEvent(row[0], row[1], row[2], row[3], row[4], orjson.loads(str(row[5])),  # type: ignore[arg-type]
                         {} if metadata == "{}" else orjson.loads(metadata), row[7])  # type: ignore[arg-type]


def _row(metadata: dict[str, str]) -> tuple[object, ...]:
    data = {"name": "Nordic Timber AB", "city": "Göteborg", "rows": [1, 2.5, None]}
    return (
        42, uuid.uuid4(), "c1/kleer-client/7", 3, "KleerClientChanged",
        orjson.dumps(data).decode(), orjson.dumps(metadata).decode(), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


@pytest.mark.parametrize("metadata", [{}, {"correlation_id": "c-1", "actor": "poller"}])
def test_a_row_decodes_to_the_same_event_as_the_constructor_builds(metadata: dict[str, str]) -> None:
    row = _row(metadata)
    event = _record(row)
    assert type(event) is RecordedEvent
    assert event == _record_by_init(row)
    assert event.metadata == metadata and event.data["rows"] == [1, 2.5, None]
    assert event.to_json() == _record_by_init(row).to_json()


def test_a_decoded_event_is_still_frozen_and_owns_its_dicts() -> None:
    first, second = _record(_row({})), _record(_row({}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.position = 7  # type: ignore[misc]
    first.metadata["actor"] = "someone"
    assert second.metadata == {}


def test_an_envelope_from_kafka_decodes_to_the_same_event_and_refuses_data_that_is_not_an_object() -> None:
    event = _record(_row({"correlation_id": "c-1"}))
    again = RecordedEvent.from_json(event.to_json())
    assert again == event and type(again) is RecordedEvent
    with pytest.raises(dataclasses.FrozenInstanceError):
        again.version = 9  # type: ignore[misc]
    wire = orjson.loads(event.to_json())
    for field in ("data", "metadata"):
        with pytest.raises(EventDataError, match="must be JSON objects"):
            RecordedEvent.from_json(orjson.dumps({**wire, field: [["name", "x"]]}))


@pytest.mark.parametrize("metadata", [{}, {"correlation_id": "c-1", "actor": "poller"}])
@pytest.mark.parametrize("stream", ["c1/kleer-client/7", 'c1/kleer-client/"Åre\\\\ & \u2028"'])
def test_the_wire_form_of_a_row_is_the_events_own(metadata: dict[str, str], stream: str) -> None:
    row = (*_row(metadata)[:2], stream, *_row(metadata)[3:])
    wire = wire_json(*row)  # type: ignore[arg-type]
    event = _record(row)
    assert orjson.loads(wire) == orjson.loads(event.to_json())
    assert RecordedEvent.from_json(wire) == event
