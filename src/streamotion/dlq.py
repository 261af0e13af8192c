"""Dead letters a user can act on: read a pipeline's dead-letter topic, count by reason, re-publish.

Producers dead-letter platform payloads they cannot turn into events (``stage: producer``, with the
source's name); the job dead-letters raw-topic records it cannot process (``stage: job``, with the
record's topic, partition and offset, the payload being the record's value). Once the cause is
fixed, :func:`republish` puts them back on the raw topic:

- a job letter's payload goes back as it was, keyed by its identity (``source:platform:id``) when
  it has one, and the job judges it again;
- a producer letter's payload goes through its source's conversion again (the producer's code
  judges it: still invalid letters are reported, not published) and the source's filters.

Re-published events keep their identity, so the sinks store each event once however often it is
re-published. Each re-published record names its dead letter in the ``streamotion-republished-from``
header (``dlq-topic:partition:offset``).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from streamotion.events import DeadLetter, Event, event_key

REPUBLISHED_HEADER = "streamotion-republished-from"


@dataclass
class Letter:
    """One record of the dead-letter topic."""

    partition: int
    offset: int
    letter: DeadLetter | None  # None: the record is not a DeadLetter document
    raw: str

    @property
    def reason(self) -> str:
        return self.letter.reason if self.letter else "(not a dead-letter document)"

    @property
    def stage(self) -> str:
        return self.letter.stage if self.letter else "?"

    def as_dict(self) -> dict[str, Any]:
        doc = json.loads(self.letter.model_dump_json()) if self.letter else {"raw": self.raw}
        # the letter's own topic/partition/offset (job letters) are the raw record's position
        return {"dlq_partition": self.partition, "dlq_offset": self.offset, **doc}


@dataclass
class Selection:
    """Which dead letters: a substring of the reason, a stage, a partition, an offset range (inclusive)."""

    reason: str | None = None
    stage: str | None = None
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None

    def matches(self, letter: Letter) -> bool:
        if self.partition is not None and letter.partition != self.partition:
            return False
        if self.from_offset is not None and letter.offset < self.from_offset:
            return False
        if self.to_offset is not None and letter.offset > self.to_offset:
            return False
        if self.stage is not None and letter.stage != self.stage:
            return False
        return self.reason is None or self.reason.lower() in letter.reason.lower()


def read(
    bootstrap: str, topic: str, selection: Selection | None = None, timeout: float = 60.0
) -> list[Letter]:
    """The topic's dead letters up to its end when called (every partition, oldest first)."""
    from confluent_kafka import TopicPartition

    from streamotion.kafka_range import RangeTimeout, range_consumer, read_range

    selection = selection or Selection()
    consumer = range_consumer(bootstrap, "dlq")
    out: list[Letter] = []
    deadline = time.monotonic() + timeout
    try:
        metadata = consumer.list_topics(topic, timeout=15).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise ValueError(f"dead-letter topic {topic} not found on {bootstrap}")
        for partition in sorted(metadata.partitions):
            if selection.partition is not None and partition != selection.partition:
                continue
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=15)
            start = max(low, selection.from_offset or 0)
            end = high if selection.to_offset is None else min(high, selection.to_offset + 1)
            try:
                for msg in read_range(consumer, topic, partition, start, end, deadline):
                    letter = _letter(partition, msg.offset(), msg.value())
                    if selection.matches(letter):
                        out.append(letter)
            except RangeTimeout:
                raise TimeoutError(f"reading {topic} took longer than {timeout:g}s") from None
    finally:
        consumer.close()
    return out


def _letter(partition: int, offset: int, value: bytes | None) -> Letter:
    raw = (value or b"").decode("utf-8", "replace")
    try:
        letter = DeadLetter.model_validate_json(raw)
    except ValueError:
        letter = None
    return Letter(partition, offset, letter, raw)


_NUMBERS = re.compile(r"\d+")


def reason_group(reason: str) -> str:
    """Reasons that differ only in numbers (line 12, char 40, offsets) count together."""
    return _NUMBERS.sub("N", reason.strip())[:200]


def count(letters: list[Letter]) -> list[tuple[str, int]]:
    """(reason, dead letters) by reason group, most frequent first."""
    return Counter(reason_group(f"{x.stage}: {x.reason}") for x in letters).most_common()


@dataclass
class Republished:
    published: list[Letter] = field(default_factory=list)
    skipped: list[tuple[Letter, str]] = field(default_factory=list)


def republish(
    pipeline, bootstrap: str, letters: list[Letter], *, dead_letter_topic: str, dry_run: bool = False
) -> Republished:
    """Put the dead letters back on the pipeline's raw topic (see the module's docstring)."""
    from streamotion.naming import topic_names

    raw_topic = topic_names(pipeline)["raw"]
    result = Republished()
    records: list[tuple[Letter, bytes, str | None]] = []
    for letter in letters:
        try:
            value, key = _record(pipeline, letter)
        except _Skip as skip:
            result.skipped.append((letter, str(skip)))
            continue
        records.append((letter, value, key))
    if dry_run or not records:
        result.published = [r[0] for r in records]
        return result

    from confluent_kafka import Producer

    from streamotion.security.clients import confluent_config

    producer = Producer({**confluent_config(bootstrap), "enable.idempotence": True, "acks": "all"})
    errors: list[str] = []

    for letter, value, key in records:

        def report(err, _msg, letter=letter):
            if err is None:
                result.published.append(letter)
            else:
                errors.append(f"{letter.partition}:{letter.offset}: {err}")

        origin = f"{dead_letter_topic}:{letter.partition}:{letter.offset}".encode()
        producer.produce(
            raw_topic, value=value, key=key, headers=[(REPUBLISHED_HEADER, origin)], on_delivery=report
        )
        producer.poll(0)
    left = producer.flush(60)
    if left or errors:
        raise RuntimeError(f"{left} record(s) not acknowledged; errors: {errors[:5]}")
    return result


class _Skip(Exception):
    pass


def _record(pipeline, letter: Letter) -> tuple[bytes, str | None]:
    """(value, key) to publish for one dead letter, or _Skip(why)."""
    if letter.letter is None:
        raise _Skip("not a dead-letter document")
    dead = letter.letter
    if dead.stage == "job":
        return dead.payload.encode(), _identity(dead.payload)
    return _reconverted(pipeline, dead)


def _identity(payload: str) -> str | None:
    """The identity of an event payload, also one this contract version does not fully accept."""
    try:
        return Event.model_validate_json(payload).key
    except ValueError:
        pass
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if isinstance(doc, dict) and all(
        isinstance(doc.get(k), str) and doc[k] for k in ("source", "platform", "id")
    ):
        return event_key(doc["source"], doc["platform"], doc["id"])
    return None


def _reconverted(pipeline, dead: DeadLetter) -> tuple[bytes, str]:
    from streamotion.components import ComponentMissing, component

    try:
        filters, reconvert = component("source_filters"), component("reconvert")
    except ComponentMissing as exc:  # a jobs-only image
        raise _Skip(f"producer dead letters need the ingest component ({exc.why})") from None

    source = next((s for s in pipeline.spec.sources if s.name == dead.source), None)
    if source is None:
        raise _Skip(f"the pipeline has no source {dead.source!r} any more")
    item = reconvert(source, dead.payload)
    if item is None:
        raise _Skip("not an event (nothing to publish)")
    if not isinstance(item, Event):
        raise _Skip(f"still invalid: {item.reason}")
    kept, reason = filters.of(source).apply(item)
    if kept is None:
        raise _Skip(f"dropped by the source's {reason} filter")
    return kept.to_json(), kept.key
