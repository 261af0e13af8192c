"""Where a restarted producer resumes: the cursors of its source's last records on the raw topic.

Each event a streaming source publishes carries the source's cursor in the ``streamotion-cursor``
header (Jetstream ``time_us``, Mastodon timeline and status id, X post id, replay pass). The raw
topic is the pipeline's durable memory, so a new pod (nothing local survives) reads the tail of
every partition backwards, in growing windows, until it finds records of its source (keys
``<source>:...``, see :func:`streamotion.events.event_key`), and resumes from their cursors.
"""

from __future__ import annotations

import time

from streamotion_ingest.publisher import CURSOR_HEADER


class ResumeUnavailable(RuntimeError):
    """Kafka could not be read: the caller retries (starting without a cursor could lose events)."""


FIRST_WINDOW = 256  # records read per partition at first; x4 each round while none is found
MAX_SCAN = 200_000  # per partition: a source silent for longer than this starts without a cursor


def last_cursors(
    bootstrap: str,
    topic: str,
    source: str,
    *,
    first_window: int = FIRST_WINDOW,
    max_scan: int = MAX_SCAN,
    timeout: float = 60.0,
) -> list[str]:
    """The cursors of ``source``'s last records: for each partition, every cursor found in the
    newest window that holds records of the source (oldest first). Empty when there are none (or
    no raw topic yet); ResumeUnavailable when Kafka cannot be read."""
    from confluent_kafka import KafkaException, TopicPartition

    from streamotion.kafka_range import range_consumer

    prefix = f"{source}:".encode()
    consumer = range_consumer(
        bootstrap, "resume", **{"auto.offset.reset": "earliest", "fetch.max.bytes": 8 * 1024 * 1024}
    )
    deadline = time.monotonic() + timeout
    found: list[str] = []
    try:
        metadata = consumer.list_topics(topic, timeout=min(timeout, 15)).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return []
        for partition in sorted(metadata.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=min(timeout, 15)
            )
            end, window, scanned = high, first_window, 0
            while end > low and scanned < max_scan and time.monotonic() < deadline:
                start = max(low, end - window)
                cursors = _scan(consumer, topic, partition, start, end, prefix, deadline)
                scanned += end - start
                if cursors:
                    found.extend(cursors)
                    break
                end, window = start, window * 4
    except KafkaException as exc:
        raise ResumeUnavailable(f"could not read the tail of {topic}: {exc}") from None
    finally:
        consumer.close()
    return found


def _scan(
    consumer, topic: str, partition: int, start: int, end: int, prefix: bytes, deadline: float
) -> list[str]:
    """Cursors of the records with ``prefix`` keys in offsets [start, end) of one partition (those
    read so far when the deadline passes)."""
    from streamotion.kafka_range import RangeTimeout, read_range

    out: list[str] = []
    try:
        for msg in read_range(consumer, topic, partition, start, end, deadline):
            key = msg.key()
            if key and key.startswith(prefix):
                for name, value in msg.headers() or ():
                    if name == CURSOR_HEADER and value:
                        out.append(value.decode("utf-8", "replace"))
    except RangeTimeout:
        pass
    return out
