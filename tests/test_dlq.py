"""`streamotion dlq`: list, count by reason and re-publish a pipeline's dead letters (real broker);
re-published events keep their identity, so the sink stores each once however often they come back
(real PostgreSQL, through the sink's write)."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from streamotion.cli import app
from streamotion.dlq import REPUBLISHED_HEADER
from streamotion.events import Event
from tests.ingest_helpers import make_pipeline, read_all
from tests.test_identity import _batch_from

runner = CliRunner()

JETSTREAM_POST = {
    "did": "did:plc:abc",
    "time_us": 1_760_000_000_000_000,
    "kind": "commit",
    "commit": {
        "operation": "create",
        "collection": "app.bsky.feed.post",
        "rkey": "rk1",
        "record": {"text": "back from the dead letters", "createdAt": "2025-10-09T09:00:00Z"},
    },
}


def _dlq(*args: str):
    result = runner.invoke(app, ["dlq", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def _setup(kafka, tmp_path):
    """Five events on the raw topic; the job refused three (and one garbage record), a producer
    dead-lettered a post it could not convert then (and a broken message)."""
    from streamotion_ingest.publisher import Publisher
    from streamotion_jobs.job import dead_letter_messages

    p, path, topics = make_pipeline(
        kafka,
        tmp_path,
        [
            {"name": "api", "type": "http", "http": {"tokenSecret": "t"}},
            {"name": "sky", "type": "bluesky", "bluesky": {}},
        ],
        partitions=1,
    )
    events = [
        Event(id=f"e{i}", source="api", platform="http", text=f"text {i}", created_at="2026-03-01T12:00:00Z")
        for i in range(5)
    ]
    pub = Publisher(kafka.bootstrap, topics["raw"], topics["deadLetter"], pipeline=p.name, source="api")
    for e in events:
        pub.publish(e)
    assert pub.close(30) == 0
    raw = read_all(kafka.bootstrap, topics["raw"], expect=5)
    refused = [m for m in raw if json.loads(m.value())["id"] in ("e2", "e3", "e4")]
    dead = pd.DataFrame(
        {
            "kafka_topic": [m.topic() for m in refused] + [topics["raw"]],
            "kafka_partition": [m.partition() for m in refused] + [0],
            "kafka_offset": [m.offset() for m in refused] + [99],
            "error": ["model refused the text: 422 Unprocessable Entity"] * 3 + ["not JSON: Expecting value"],
            "payload": [m.value().decode() for m in refused] + ["garbage"],
        }
    )
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    for key, value in dead_letter_messages(dead):
        producer.produce(topics["deadLetter"], key=key, value=value)
    assert producer.flush(30) == 0
    sky = Publisher(kafka.bootstrap, topics["raw"], topics["deadLetter"], pipeline=p.name, source="sky")
    sky.dead_letter("could not convert the payload: KeyError: 'time_us'", json.dumps(JETSTREAM_POST))
    sky.dead_letter("jetstream message is not JSON: Expecting value", "{broken json")
    assert sky.close(30) == 0
    written = [m for m in raw if m not in refused]  # what the job stored before
    return p, path, topics, written


def test_dlq_list_count_and_republish_dedup_by_identity(kafka, tmp_path, postgres, pg_schema):
    from streamotion_jobs.sinks.postgres import PostgresSink

    _, path, topics, written = _setup(kafka, tmp_path)
    common = ["--pipeline", str(path), "--bootstrap", kafka.bootstrap]

    counts = json.loads(_dlq("count", *common, "--json"))
    assert counts == {
        "job: model refused the text: N Unprocessable Entity": 3,
        "job: not JSON: Expecting value": 1,
        "producer: could not convert the payload: KeyError: 'time_us'": 1,
        "producer: jetstream message is not JSON: Expecting value": 1,
    }
    listed = _dlq("list", *common, "--stage", "producer")
    assert [line.split("\t")[:3] for line in listed.splitlines()] == [
        ["0:4", "producer", "sky"],
        ["0:5", "producer", "sky"],
    ]
    ranged = [
        json.loads(line)
        for line in _dlq("list", *common, "--from-offset", "1", "--to-offset", "2", "--json").splitlines()
    ]
    assert [(d["dlq_offset"], d["stage"]) for d in ranged] == [(1, "job"), (2, "job")]
    assert ranged[0]["topic"] == topics["raw"] and ranged[0]["offset"] == 3  # where the job read it
    assert json.loads(ranged[0]["payload"])["id"] == "e3"

    refused = runner.invoke(app, ["dlq", "republish", *common])
    assert refused.exit_code == 2 and "--all" in refused.output  # nothing chosen: nothing done

    out = _dlq("republish", *common, "--reason", "model refused")
    assert "re-published 3 of 3" in out
    out = _dlq("republish", *common, "--all")  # again (a second operator, a retry): no duplicates land
    assert "re-published 5 of 6" in out and "skipped 0:5: still invalid: not JSON" in out

    raw = read_all(kafka.bootstrap, topics["raw"], expect=13)
    again = [m for m in raw if dict(m.headers() or []).get(REPUBLISHED_HEADER)]
    assert len(again) == 8
    keys = sorted((m.key() or b"").decode() for m in again)
    assert keys == [
        "",
        *sorted(["api:http:e2", "api:http:e3", "api:http:e4"] * 2),
        "sky:bluesky:at://did:plc:abc/app.bsky.feed.post/rk1",
    ]
    origin = {dict(m.headers())[REPUBLISHED_HEADER].decode() for m in again}
    assert origin == {f"{topics['deadLetter']}:0:{o}" for o in (0, 1, 2, 3, 4)}

    sink = PostgresSink(postgres.dsn, schema=pg_schema, log=lambda *_: None)
    sink.open()
    try:
        assert sink.write(_batch_from(written, 0))  # what the job had stored
        # each re-publication as the job reads it, in later micro-batches
        assert sink.write(_batch_from([m for m in again if m.offset() < 8], 1))  # --reason (3)
        assert sink.write(_batch_from([m for m in again if m.offset() >= 8], 2))  # --all (5)
        with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
            ids = sorted(r[0] for r in conn.execute("SELECT event_id FROM events"))
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    finally:
        sink.close()
    assert ids == [
        "api:http:e0",
        "api:http:e1",
        "api:http:e2",
        "api:http:e3",
        "api:http:e4",
        "sky:bluesky:at://did:plc:abc/app.bsky.feed.post/rk1",
    ]
    assert dead == 1  # the garbage record is judged again by the job: still a dead letter


def test_dlq_dry_run_publishes_nothing(kafka, tmp_path):
    _, path, topics, _ = _setup(kafka, tmp_path)
    out = _dlq("republish", "--pipeline", str(path), "--bootstrap", kafka.bootstrap, "--all", "--dry-run")
    assert "would re-publish 5 of 6" in out
    assert len(read_all(kafka.bootstrap, topics["raw"], timeout=5)) == 5


def test_dlq_missing_topic_is_a_clear_error(kafka, tmp_path):
    import yaml

    from tests.ingest_helpers import pipeline_doc

    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump(
            pipeline_doc([{"name": "a", "type": "replay", "replay": {}}], bootstrap=kafka.bootstrap)
        )
    )
    result = runner.invoke(app, ["dlq", "count", "--pipeline", str(path)])
    assert result.exit_code == 1 and "not found" in result.output
