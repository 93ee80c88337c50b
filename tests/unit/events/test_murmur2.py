"""Our murmur2 is Kafka's (as aiokafka computes it): the partition of every stream stays where it was."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from libs.events.kafka import murmur2, partition_for


def test_murmur2_agrees_with_aiokafka_on_every_length_and_byte() -> None:
    rng = random.Random(7)
    samples = [bytes(rng.randrange(256) for _ in range(n)) for n in range(0, 80) for _ in range(40)]
    samples += [bytes([b]) * n for b in (0, 0x7F, 0x80, 0xFF) for n in range(0, 12)]
    for data in samples:
        assert murmur2(data) == aiokafka_murmur2(data), data


@pytest.mark.parametrize("stream", ["c1/kleer-client/7", "bench/kleer-line_item/1234-row-2", "å/ö/€"])
def test_a_stream_keeps_its_partition(stream: str) -> None:
    for partitions in (1, 3, 4, 12):
        assert partition_for(stream, partitions) == (aiokafka_murmur2(stream.encode()) & 0x7FFFFFFF) % partitions
