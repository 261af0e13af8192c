"""Helpers of the ingest tests: pipelines on the test broker, consuming topics."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, TopicPartition

from streamotion.api.validate import parse
from streamotion.naming import topic_names


def pipeline_doc(
    sources: list[dict[str, Any]], name: str | None = None, bootstrap: str | None = None
) -> dict:
    name = name or f"p{uuid.uuid4().hex[:8]}"
    spec: dict[str, Any] = {
        "sources": sources,
        "sinks": [{"type": "postgres", "postgres": {"host": "pg", "credentialsSecret": "pg"}}],
    }
    if bootstrap:
        spec["kafka"] = {"bootstrapServers": bootstrap}
    return {
        "apiVersion": "streamotion.io/v1alpha2",
        "kind": "StreamPipeline",
        "metadata": {"name": name, "namespace": "test"},
        "spec": spec,
    }


def make_pipeline(kafka, tmp_path: Path, sources: list[dict], partitions: int = 3):
    """(pipeline, file, topics) with the raw and dead-letter topics created on the broker."""
    doc = pipeline_doc(sources, bootstrap=kafka.bootstrap)
    p = parse(doc)
    topics = topic_names(p)
    kafka.create_topic(topics["raw"], partitions=partitions)
    kafka.create_topic(topics["deadLetter"], partitions=1)
    path = tmp_path / f"{p.name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return p, path, topics


def read_all(
    bootstrap: str, topic: str, expect: int | None = None, timeout: float = 60, settle: float = 0.5
) -> list:
    """Every message of a topic from the beginning; waits for ``expect`` messages if given, else until idle."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"t-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    md = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    out: list = []
    deadline = time.monotonic() + timeout
    idle_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                if expect is None and time.monotonic() - idle_since > 2:
                    break
                if expect is not None and len(out) >= expect and time.monotonic() - idle_since > settle:
                    break
                continue
            if m.error():
                continue
            out.append(m)
            idle_since = time.monotonic()
            if expect is not None and settle == 0 and len(out) >= expect:
                break
    finally:
        c.close()
    return out


def values(msgs) -> list[dict]:
    return [json.loads(m.value()) for m in msgs]


def run_source(p, name: str, bootstrap: str) -> int:
    """Run source ``name`` of pipeline ``p`` to its end (a finite replay, say) as its producer
    Deployment would; the number of events it published (every one acknowledged by Kafka)."""
    from streamotion_ingest.context import Context, find_source
    from streamotion_ingest.run import make_publisher, pump

    publisher = make_publisher(p, name, bootstrap)
    ctx = Context(pipeline=p.name, source=find_source(p, name), metrics=publisher.metrics)
    try:
        return pump(ctx, publisher)
    finally:
        assert publisher.close(60) == 0
