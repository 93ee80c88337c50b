"""The relay passes over the events nobody consumes without decoding them; what it publishes is unchanged."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from libs.events.envelope import NewEvent, RecordedEvent
from libs.events.kafka import DEFAULT_PARTITIONS, PREVIOUS_POSITION_HEADER, header, partition_for
from libs.events.relay import Relay, RelayConfig
from libs.events.store import _READ_OF_TYPES_SQL, AppendRequest, PostgresEventStore, TypeFilter
from services.topics import OUTBOUND_CHANGES, all_topic_names, make_router, topic_name
from sim.broker import TansuBroker

pytestmark = pytest.mark.slow


async def test_read_wire_of_types_gives_the_wanted_as_published_and_moves_past_the_rest(
    store: PostgresEventStore,
) -> None:
    await store.append_batch(
        [AppendRequest(f"s/{i}", [NewEvent("Skipped" if i % 3 else "Wanted", {"i": i})]) for i in range(9)]
    )
    everything = await store.read_all(0, 100)

    async def read(after: int, limit: int, wanted: Callable[[str], bool]) -> tuple[list[RecordedEvent], int]:
        wired, last = await store.read_wire_of_types(after, limit, TypeFilter(wanted))
        assert all(w.metadata == RecordedEvent.from_json(w.wire).metadata for w in wired)
        return [RecordedEvent.from_json(w.wire) for w in wired], last

    wanted, last = await read(0, 5, lambda t: t == "Wanted")
    assert [e.data["i"] for e in wanted] == [0, 3]
    assert wanted == [e for e in everything[:5] if e.type == "Wanted"]
    assert last == everything[4].position
    assert await read(everything[-1].position, 5, lambda t: True) == ([], everything[-1].position)
    none, last = await read(everything[0].position, 2, lambda t: t == "Wanted")
    assert (none, last) == ([], everything[2].position)  # a page of skipped events still moves the reader on


async def test_a_type_filter_asks_once_per_type_and_the_server_leaves_out_what_it_refused(
    store: PostgresEventStore,
) -> None:
    await store.append_batch(
        [AppendRequest(f"s/{i}", [NewEvent("Skipped" if i % 3 else "Wanted", {"i": i})]) for i in range(9)]
    )
    asked: list[str] = []
    types = TypeFilter(lambda t: asked.append(t) is None and t == "Wanted")
    first, last = await store.read_wire_of_types(0, 5, types)
    second, end = await store.read_wire_of_types(last, 5, types)
    assert [orjson.loads(e.wire)["data"]["i"] for e in first + second] == [0, 3, 6]
    assert asked == ["Wanted", "Skipped"] and types.refused == ["Skipped"]
    assert end == (await store.read_all(0, 100))[-1].position
    async with store.pool.acquire() as conn:  # what the server sends of a refused type: position and type
        rows = await conn.fetch(_READ_OF_TYPES_SQL, 0, 9, types.refused)
    assert [(r["type"], r["data"] is None, r["event_id"] is None) for r in rows[:2]] == [
        ("Wanted", False, False), ("Skipped", True, True)]


async def _publish_all(store: PostgresEventStore, broker: TansuBroker, prefix: str, batch_size: int) -> Relay:
    """A relay that has published the whole log, ``batch_size`` events a read."""
    relay = Relay(
        store,
        make_router(prefix),  # type: ignore[arg-type]
        RelayConfig(bootstrap_servers=broker.bootstrap_servers, topics=all_topic_names(prefix),
                    batch_size=batch_size),
    )
    await relay.start()
    try:
        while await relay.publish_once():
            pass
    finally:
        await relay._close_producer()
    return relay


async def test_the_relay_publishes_exactly_the_routed_events_with_their_chain_and_checkpoints_past_the_rest(
    store: PostgresEventStore, pool: asyncpg.Pool, broker: TansuBroker
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    # Routed changes interleaved with HubSpot...Upserted facts nobody consumes, and a run of facts alone.
    requests = []
    for i in range(40):
        event_type = "KleerClientChanged" if i % 2 == 0 and i < 30 else "HubSpotCompanyUpserted"
        requests.append(AppendRequest(f"c1/kleer-client/{i % 7}", [NewEvent(event_type, {"i": i})]))
    await store.append_batch(requests)
    everything = await store.read_all(0, 100)
    relay = await _publish_all(store, broker, prefix, batch_size=4)
    assert relay.published_position == everything[-1].position  # past the trailing unrouted run too
    assert await pool.fetchval("SELECT position FROM relay_state WHERE relay = 'relay'") == everything[-1].position

    routed = [e for e in everything if e.type == "KleerClientChanged"]
    published = [(partition, position, link) for partition, _, position, link in
                 await _messages(broker, topic_name(OUTBOUND_CHANGES, prefix), len(routed))]
    assert sorted(p for _, p, _ in published) == [e.position for e in routed]
    previous: dict[int, int] = {}
    for event in routed:  # each message links to the one before it in its partition, skipped events aside
        partition = partition_for(event.stream, DEFAULT_PARTITIONS)
        assert (partition, event.position, previous.get(partition, -1)) in published
        previous[partition] = event.position
    last_positions = dict(
        await pool.fetch("SELECT partition, last_position FROM relay_partitions WHERE relay = 'relay'")
    )
    assert last_positions == previous


async def test_events_past_one_record_batch_go_out_in_order_and_the_saved_offsets_are_the_brokers(
    store: PostgresEventStore, pool: asyncpg.Pool, broker: TansuBroker
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    filler = "x" * 2_000  # ~2 KB a message: 600 fill about five 256 KB record batches
    await store.append_batch(
        [AppendRequest(f"c1/kleer-client/{i % 50}", [NewEvent("KleerClientChanged", {"i": i, "f": filler})])
         for i in range(600)]
    )
    everything = await store.read_all(0, 1_000)
    await _publish_all(store, broker, prefix, batch_size=400)

    topic = topic_name(OUTBOUND_CHANGES, prefix)
    messages = await _messages(broker, topic, len(everything))
    in_partition: dict[int, list[tuple[int, int]]] = {}  # (offset, position) in each partition
    for partition, offset, position, link in messages:  # log order in each partition, each linked to the last
        chain = in_partition.setdefault(partition, [])
        assert link == (chain[-1][1] if chain else -1)
        chain.append((offset, position))
    assert sorted(m[2] for m in messages) == [e.position for e in everything]
    saved = {r["partition"]: (r["last_offset"], r["last_position"]) for r in await pool.fetch(
        "SELECT partition, last_offset, last_position FROM relay_partitions WHERE relay = 'relay' AND topic = $1",
        topic)}
    assert saved == {p: chain[-1] for p, chain in in_partition.items()}


async def _messages(broker: TansuBroker, topic: str, expected: int) -> list[tuple[int, int, int, int]]:
    """(partition, offset, position, previous-position header) of the topic's messages, once ``expected``
    arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(DEFAULT_PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: list[tuple[int, int, int, int]] = []
        deadline = time.monotonic() + 30
        while len(found) < expected and time.monotonic() < deadline:
            for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                for message in batch:
                    link = header(message, PREVIOUS_POSITION_HEADER)
                    found.append((tp.partition, message.offset, RecordedEvent.from_json(message.value).position,
                                  int(link or b"-2")))
        return found
    finally:
        await consumer.stop()
