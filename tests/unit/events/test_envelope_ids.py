"""New event ids: version 7 UUIDs, time-ordered, unique; and event ids read back from the wire."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from libs.events.envelope import NewEvent, new_event_id, parse_uuid


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


def test_threads_never_share_random_bits() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(lambda _: [new_event_id() for _ in range(10_000)], range(8)))
    ids = [i for batch in batches for i in batch]
    assert len(set(ids)) == len(ids)
    assert len({i.int & ((1 << 62) - 1) for i in ids}) == len(ids)  # the random part alone, too


def test_a_forked_child_draws_random_bits_of_its_own() -> None:
    import os

    new_event_id()  # the parent has a pool of random bytes now
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next id's random part and leave
        os.write(writer, (new_event_id().int & ((1 << 74) - 1)).to_bytes(10, "big"))
        os._exit(0)
    os.close(writer)
    child = int.from_bytes(os.read(reader, 10), "big")
    os.waitpid(pid, 0)
    os.close(reader)
    assert child != new_event_id().int & ((1 << 74) - 1)


@pytest.mark.parametrize("make", [uuid.uuid4, new_event_id, uuid.uuid1])
def test_parse_uuid_reads_what_uuid_reads(make: Callable[[], uuid.UUID]) -> None:
    for _ in range(2_000):
        made = make()
        for text in (str(made), str(made).upper()):
            parsed = parse_uuid(text)
            assert parsed == made and hash(parsed) == hash(made) and str(parsed) == str(made)
            assert parsed.version == made.version and parsed.variant == made.variant


@pytest.mark.parametrize("text", [
    "", "x" * 36, "0" * 35, "0" * 37, "g" * 32 + "----", "12345678-1234-1234-1234-12345678901-",
    "{12345678-1234-5678-1234-567812345678}", "urn:uuid:12345678-1234-5678-1234-567812345678",
    "12345678123456781234567812345678", "1234567-81234-5678-1234-5678123456789",
])
def test_parse_uuid_refuses_and_accepts_what_uuid_does(text: str) -> None:
    try:
        expected: object = uuid.UUID(text)
    except ValueError:
        with pytest.raises(ValueError):
            parse_uuid(text)
    else:
        assert parse_uuid(text) == expected
