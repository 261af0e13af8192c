"""Reading a fixed offset range of a Kafka topic, partition by partition (dead letters, resume cursors).

A consumer made by :func:`range_consumer` only ``assign()``s partitions and never commits, so it
leaves no consumer-group state behind; :func:`read_range` yields the records of offsets
[start, end) of one partition and stops at the range's end (or the partition's end).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any


class RangeTimeout(TimeoutError):
    """The range could not be read before the deadline."""


def range_consumer(bootstrap: str, purpose: str, **config: Any):
    from confluent_kafka import Consumer

    from streamotion.security.clients import confluent_config

    return Consumer(
        {
            **confluent_config(bootstrap),
            "group.id": f"streamotion-{purpose}-{uuid.uuid4().hex[:8]}",  # assign() only, never commits
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            **config,
        }
    )


def read_range(consumer, topic: str, partition: int, start: int, end: int, deadline: float) -> Iterator[Any]:
    """Records of offsets [start, end) of ``topic``/``partition`` (``time.monotonic()`` deadline;
    RangeTimeout past it). The consumer is unassigned afterwards."""
    from confluent_kafka import KafkaError, TopicPartition

    if start >= end:
        return
    consumer.assign([TopicPartition(topic, partition, start)])
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    return
                continue
            if msg.offset() >= end:
                return
            yield msg
            if msg.offset() >= end - 1:
                return
        raise RangeTimeout(f"reading {topic}[{partition}] {start}..{end} timed out")
    finally:
        consumer.unassign()
