"""The job's distributed write path (issue #14): no event row on the driver, PostgreSQL staged from
the executors and committed once per batch, offsets in the ledger.

Real Kafka, Spark (local and local-cluster), PostgreSQL and the model service, as in test_jobs.py
(whose helpers and module fixtures this module reuses).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_jobs import (
    AGG_CHECKS,
    BASE,
    MALFORMED,
    JobThread,
    assert_aggregates_match,
    assert_events_exact,
    make_events,
    new_job,
    pg_count,
    pg_rows,
    pg_sink,
    pipeline,
    produce,
    wait_for,
)


@pytest.fixture(scope="module")
def spark():
    from streamotion_jobs.spark import session

    s = session("streamotion-tests", master="local[2]")
    yield s
    s.stop()


@pytest.fixture
def topics(kafka):
    """Fresh raw and dead-letter topics for a pipeline with a fresh name."""
    from streamotion.naming import topic_names

    name = "t" + uuid.uuid4().hex[:8]

    def create(p):
        names = topic_names(p)
        kafka.create_topic(names["raw"], partitions=2)
        kafka.create_topic(names["deadLetter"], partitions=1)
        return names

    create.name = name
    return create


# ------------------------------------------------------------------------------------- pure parts
@settings(deadline=None)  # the first example imports the job module
@given(
    st.lists(st.dictionaries(st.integers(0, 7), st.integers(0, 10**6), max_size=8), min_size=1, max_size=3),
    st.sets(st.integers(0, 7), min_size=1),
)
def test_resume_position_is_the_lowest_ledger_offset_and_earliest_for_unknown_partitions(ledgers, partitions):
    """Spark's Kafka source refuses specific starting offsets that do not name every partition of the
    topic, and reads -2 as earliest (apache/spark v4.0.0 connector/kafka-0-10-sql
    KafkaOffsetReaderAdmin.fetchSpecificOffsets: "you must specify all TopicPartitions")."""
    from streamotion_jobs.job import resume_position

    doc = resume_position(ledgers, sorted(partitions))
    assert set(doc) == {str(p) for p in partitions}  # Spark wants every partition of the topic
    for p in partitions:
        known = [ledger[p] for ledger in ledgers if p in ledger]
        assert doc[str(p)] == (min(known) if known else -2)


@settings(deadline=None)
@given(
    st.lists(st.dictionaries(st.integers(0, 3), st.integers(0, 100), max_size=4), min_size=1, max_size=3),
    st.dictionaries(st.integers(0, 3), st.integers(0, 100), min_size=1),
)
def test_resume_position_reads_a_partition_whose_ledger_is_past_the_topics_end_from_earliest(ledgers, ends):
    """A ledger offset past the topic's end offset belongs to an older topic of the same name (the
    topic was created again): that partition starts from earliest (-2), and the job says so. Left at
    the ledger's offset, Spark would fail the first batch (apache/spark v4.0.0 connector/kafka-0-10-sql
    KafkaOffsetReaderAdmin.getOffsetRangesFromResolvedOffsets: until < from reports data loss,
    KafkaExceptions.partitionOffsetChanged)."""
    from streamotion_jobs.job import resume_position

    logged: list[str] = []
    doc = resume_position(ledgers, ends, log=logged.append)
    assert set(doc) == {str(p) for p in ends}
    reset = set()
    for p, end in ends.items():
        known = [ledger[p] for ledger in ledgers if p in ledger]
        if known and max(known) > end:
            reset.add(p)
            assert doc[str(p)] == -2
        else:
            assert doc[str(p)] == (min(known) if known else -2) and doc[str(p)] <= end
    assert len(logged) == len(reset)
    assert all("created again" in line for line in logged)


def test_a_new_query_on_a_recreated_topic_starts_where_the_new_topic_begins(kafka, tmp_path):
    """starting_offsets() against a real broker: partition 0's ledger offset (10) lies past the new
    topic's end (3), so it starts from earliest; partition 1's (2) is within the topic (4 records)."""
    from confluent_kafka import Producer
    from streamotion_jobs.job import StreamingJob

    from tests.test_jobs_units import _job_cfg

    topic = "recreated." + uuid.uuid4().hex[:8]
    kafka.create_topic(topic, partitions=2)
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    for partition, n in ((0, 3), (1, 4)):
        for _ in range(n):
            producer.produce(topic, value=b"x", partition=partition)
    assert producer.flush(30) == 0

    class Ledger:
        name = "postgres"

        def resume_offsets(self, t):
            return {0: 10, 1: 2} if t == topic else None

    cfg = _job_cfg(tmp_path)
    cfg.bootstrap, cfg.topics = kafka.bootstrap, {**cfg.topics, "raw": topic}
    logged: list[str] = []
    job = StreamingJob(cfg, None, sinks=[Ledger()], log=logged.append, lag_interval_s=None)
    job.checkpoint_has_offsets = lambda: False
    assert json.loads(job.starting_offsets()) == {topic: {"0": -2, "1": 2}}
    assert any("partition 0" in line and "end offset 3" in line for line in logged)


def test_the_job_alone_reports_a_recreated_topic_and_does_not_start_a_query_bound_to_fail(kafka, tmp_path):
    """Without the operator (a topic reached through bootstrapServers, `streamotion local`): the
    topic's end offsets (real broker: 3 and 4 records) lie below what the sinks' ledger recorded
    (10 in partition 0), which only a topic created again does. The job reports it (the report the
    operator turns into TopicRecreated) and, with a checkpoint that points past the end too, does
    not start the query Spark would stop at its first batch ("Partition <tp>'s offset was changed",
    apache/spark v4.0.0 connector/kafka-0-10-sql KafkaOffsetReaderAdmin.getOffsetRangesFromResolvedOffsets);
    it retries until a fresh checkpoint is given. A topic that is not behind is not reported."""
    import threading

    from confluent_kafka import Producer
    from streamotion_jobs.job import StreamingJob, TopicRecreatedError

    from streamotion import naming
    from tests.test_jobs_units import _job_cfg

    topic = "recreated." + uuid.uuid4().hex[:8]
    kafka.create_topic(topic, partitions=2)
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    for partition, n in ((0, 3), (1, 4)):
        for _ in range(n):
            producer.produce(topic, value=b"x", partition=partition)
    assert producer.flush(30) == 0

    class Ledger:
        name = "postgres"
        offsets = {0: 10, 1: 2}

        def open(self):
            pass

        def close(self):
            pass

        def resume_offsets(self, t):
            return dict(self.offsets) if t == topic else None

    cfg = _job_cfg(tmp_path)
    cfg.bootstrap, cfg.topics = kafka.bootstrap, {**cfg.topics, "raw": topic}
    logged: list[str] = []
    ledger = Ledger()
    job = StreamingJob(cfg, None, sinks=[ledger], log=logged.append, lag_interval_s=None)
    written: list[dict] = []
    job.report.write = written.append
    started: list[bool] = []
    job.start = lambda available_now=False: started.append(available_now)
    job.checkpoint_has_offsets = lambda: True
    with pytest.raises(TopicRecreatedError, match="fresh checkpoint"):
        job.run(threading.Event(), max_failures=0)
    assert started == [], "a query was started on a checkpoint past the topic's end"
    state = json.loads(written[-1][naming.JOB_QUERY_KEY])
    assert state["topicRecreated"] is True
    assert "partition 0: recorded 10, the topic ends at 3" in state["message"]
    assert "partition 1" not in state["message"]  # 2 is within the topic's 4 records
    # within the topic's end: nothing to report
    ledger.offsets = {0: 3, 1: 4}
    assert job.check_topic() is None


offsets_maps = st.dictionaries(
    st.sampled_from(["a", "b"]),
    st.dictionaries(st.integers(0, 5), st.integers(0, 10**9), max_size=6),
    max_size=2,
)


@settings(deadline=None)
@given(offsets_maps, offsets_maps, offsets_maps)
def test_merged_ledger_offsets_are_the_furthest_per_partition_in_any_order(a, b, c):
    from streamotion_jobs.sinks.postgres import merge_offsets

    one = merge_offsets(merge_offsets(merge_offsets({}, a), b), c)
    other = merge_offsets(merge_offsets(merge_offsets({}, c), a), b)
    assert one == other
    for topic in set(a) | set(b) | set(c):
        for p in {p for m in (a, b, c) for p in m.get(topic, {})}:
            assert one[topic][str(p)] == max(m[topic][p] for m in (a, b, c) if p in m.get(topic, {}))


# ------------------------------------------------------------------------------------- the sink
def _batch(batch_id: int, ids, query: str = "q1", minutes: int = 0, dead: int = 0):
    from tests.test_jobs_units import _batch as unit_batch

    return unit_batch(batch_id, ids, query=query, minutes=minutes, dead=dead)


def test_a_retried_partition_replaces_its_staged_rows_and_a_lost_stage_fails_the_commit(
    spark, postgres, pg_schema
):
    """Staging from Spark partitions: a second attempt of a batch's staging (a retried task) leaves
    only its own rows; staged rows that vanished (an unlogged table after a crash) fail the commit
    instead of committing a partial batch."""
    from streamotion_jobs.job import EVENT_COLUMNS
    from streamotion_jobs.sinks import BatchInfo
    from streamotion_jobs.sinks.postgres import PostgresSink
    from streamotion_jobs.transform import CLASSIFIED_SCHEMA

    sink = PostgresSink(postgres.dsn, schema=pg_schema, log=lambda *_: None)
    sink.open()
    first, second = _batch(0, range(0, 12)), _batch(0, range(100, 108), dead=2)
    info = BatchInfo("test/p", "q1", 0, 60.0, 60.0, int(time.time() * 1e6), {"t": {0: 10, 1: 20}})

    def frames(b):
        events = spark.createDataFrame(b.events[EVENT_COLUMNS], CLASSIFIED_SCHEMA).repartition(3)
        dead = b.dead_letters[["kafka_topic", "kafka_partition", "kafka_offset", "error", "payload"]]
        dead_df = spark.createDataFrame(
            dead, "kafka_topic string, kafka_partition int, kafka_offset long, error string, payload string"
        )
        return events, dead_df

    sink.stage(*frames(first), info)
    sink.stage(*frames(second), info)  # the batch staged again: each partition replaced its rows
    with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
        parts = conn.execute("SELECT count(DISTINCT part) FROM events_staging").fetchone()[0]
        assert parts > 1  # rows came from several partitions, each tagged with its own
        conn.execute("DELETE FROM events_staging WHERE ctid IN (SELECT ctid FROM events_staging LIMIT 1)")
    with pytest.raises(RuntimeError, match="staged 8 events"):
        sink.commit(info)
    with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM batches").fetchone()[0] == 0
    sink.stage(*frames(second), info)  # the micro-batch's retry
    stats = sink.commit(info)
    assert stats["postgres_inserted"] == 8
    assert sink.resume_offsets("t") == {0: 10, 1: 20}
    with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
        ids = {r[0] for r in conn.execute("SELECT id FROM events").fetchall()}
        assert ids == {f"u{i}" for i in range(100, 108)}
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM events_staging").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM dead_letters_staging").fetchone()[0] == 0
        (offsets,) = conn.execute("SELECT offsets FROM batches").fetchone()
        assert offsets == {"t": {"0": 10, "1": 20}}
    # the ledger has the batch: staged again and committed again, nothing changes
    sink.stage(*frames(second), info)
    assert sink.commit(info) is None
    with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 8
        assert conn.execute("SELECT count(*) FROM events_staging").fetchone()[0] == 0
    sink.close()


def test_job_metrics_time_each_sink_write_and_count_failures(spark, postgres, pg_schema, tmp_path):
    """One timed write per sink and micro-batch (stage from the executors + commit), a replay
    skipped but still timed, an unreachable sink raised (the batch fails and is retried) and counted."""
    import psycopg
    from streamotion_jobs.job import EVENT_COLUMNS, StreamingJob
    from streamotion_jobs.sinks import BatchInfo
    from streamotion_jobs.sinks.postgres import PostgresSink
    from streamotion_jobs.transform import CLASSIFIED_SCHEMA

    from streamotion.dev.procs import free_port
    from tests.test_jobs_units import _job_cfg

    def frames(b):
        events = spark.createDataFrame(b.events[EVENT_COLUMNS], CLASSIFIED_SCHEMA)
        dead = spark.createDataFrame(
            [], "kafka_topic string, kafka_partition int, kafka_offset long, error string, payload string"
        )
        return events, dead

    def info(batch_id):
        return BatchInfo("ns1/metrics", "q1", batch_id, 60.0, 60.0, int(time.time() * 1e6))

    good = PostgresSink(postgres.dsn, schema=pg_schema, log=lambda *_: None)
    good.open()
    job = StreamingJob(_job_cfg(tmp_path), None, sinks=[good], log=lambda *_: None, lag_interval_s=None)
    reg, labels = job.metrics.registry, {"namespace": "ns1", "pipeline": "metrics", "sink": "postgres"}
    assert reg.get_sample_value("streamotion_job_sink_errors_total", labels) == 0  # present before a write
    assert job._write(good, *frames(_batch(0, range(0, 5))), info(0)) is True
    assert job._write(good, *frames(_batch(0, range(0, 5))), info(0)) is False  # a replay: skipped
    assert reg.get_sample_value("streamotion_job_sink_write_seconds_count", labels) == 2
    assert reg.get_sample_value("streamotion_job_sink_errors_total", labels) == 0
    good.close()
    # a sink that cannot be reached: the write raises (the batch fails and is retried) and is counted
    bad = PostgresSink(f"host=127.0.0.1 port={free_port()} dbname=x user=x", connect_timeout=2)
    with pytest.raises(Exception) as err:
        job._write(bad, *frames(_batch(1, range(5, 10))), info(1))
    assert "connection" in str(err.value).lower() or isinstance(err.value, psycopg.OperationalError)
    assert reg.get_sample_value("streamotion_job_sink_errors_total", labels) == 1
    assert reg.get_sample_value("streamotion_job_sink_write_seconds_count", labels) == 3


def test_ledger_offsets_resume_from_the_furthest_committed_per_partition(postgres, pg_schema):
    from streamotion_jobs.sinks.postgres import PostgresSink

    sink = PostgresSink(postgres.dsn, schema=pg_schema, log=lambda *_: None)
    sink.open()
    assert sink.resume_offsets("t") is None  # an empty ledger
    for batch_id, offsets in enumerate([{"t": {0: 5, 1: 7}}, {"t": {1: 9}}, {"t": {0: 3}, "u": {0: 1}}]):
        batch = _batch(batch_id, range(batch_id * 5, batch_id * 5 + 5))
        batch.offsets = offsets
        assert sink.write(batch) is True
    assert sink.resume_offsets("t") == {0: 5, 1: 9}
    assert sink.resume_offsets("u") == {0: 1}
    assert sink.resume_offsets("other") is None
    sink.close()


def test_an_empty_first_batch_leaves_the_watermark_unset(postgres, pg_schema):
    """A query's first micro-batch can be empty (the topic had no records yet): its commit must not
    set the watermark (PostgreSQL's least() skips NULLs: it once became now - delay, and every
    event after it was late)."""
    from streamotion_jobs.sinks.postgres import PostgresSink

    sink = PostgresSink(postgres.dsn, schema=pg_schema, log=lambda *_: None)
    sink.open()
    assert sink.write(_batch(0, range(0, 0), query="a")) is True
    assert sink.write(_batch(0, range(0, 0), query="b")) is True
    assert sink.write(_batch(1, range(0, 10), query="a")) is True
    with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE NOT late").fetchone()[0] == 10
        assert conn.execute("SELECT sum(events) FROM emotion_window").fetchone()[0] == 10
        assert conn.execute("SELECT watermark FROM batches WHERE query_id = 'b'").fetchone()[0] is None
    sink.close()


def test_migration_0005_keeps_an_older_databases_aggregates_and_watermark(postgres, pg_schema):
    """An existing database (migrations 1-4, aggregates stored as means, a ledger without offsets):
    the means read the same through the new views, and the first commit takes the watermark from the
    old ledger (a late event for a final window stays out of the aggregates)."""
    from psycopg import sql
    from streamotion_jobs.sinks.postgres import PostgresSink, migrations

    with postgres.connect() as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, text in migrations():
            if version < 5:
                conn.execute(text)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
        conn.execute(
            "INSERT INTO emotion_window VALUES (%s, %s, 's', '', 'en', 'joy', 4, 0.625, 0.25, now())",
            (BASE, BASE + timedelta(minutes=1)),
        )
        conn.execute(
            "INSERT INTO author_activity VALUES (%s, %s, 'a0', 3, 20.0, now())",
            (BASE, BASE + timedelta(minutes=1)),
        )
        conn.execute(
            "INSERT INTO batches (query_id, batch_id, events, late_events, dead_letters, watermark, committed_at) "
            "VALUES ('old', 0, 4, 0, 0, %s, now())",
            (BASE + timedelta(minutes=30),),
        )
    sink = PostgresSink(postgres.dsn, schema=pg_schema, log=lambda *_: None)
    sink.open()
    with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
        row = conn.execute("SELECT events, mean_score, mean_sentiment_index FROM emotion_window").fetchone()
        assert row == (4, pytest.approx(0.625), pytest.approx(0.25))
        assert conn.execute("SELECT mean_text_length FROM author_activity").fetchone()[0] == pytest.approx(
            20.0
        )
    # window 12:00 is final under the old ledger's watermark (12:30): a late event, stored, not counted
    assert sink.write(_batch(1, range(0, 3), minutes=0)) is True
    assert sink.write(_batch(2, range(3, 6), minutes=40)) is True  # on time: 12:40
    with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE late").fetchone()[0] == 3
        assert conn.execute("SELECT sum(events) FROM emotion_window").fetchone()[0] == 4 + 3
        (wm,) = conn.execute("SELECT watermark FROM sink_state").fetchone()
        assert wm >= BASE + timedelta(minutes=30)
    sink.close()


# ------------------------------------------------------------------------------------- the job
def _ledger_end(postgres, schema: str) -> dict[str, dict[str, int]]:
    """The furthest end offset per partition, per query id, in the ledger."""
    out: dict[str, dict[str, int]] = {}
    for query_id, offsets in pg_rows(postgres, schema, "SELECT query_id, offsets FROM batches"):
        for parts in (offsets or {}).values():
            for p, o in parts.items():
                out.setdefault(query_id, {})[p] = max(o, out.get(query_id, {}).get(p, 0))
    return out


def test_a_deleted_checkpoint_resumes_from_the_ledger_without_gap_duplicate_or_reclassification(
    spark, kafka, model_server, postgres, pg_schema, topics, tmp_path
):
    """Spark's Kafka source uses ``startingOffsets`` only when a query starts without offsets in its
    checkpoint (apache/spark v4.0.0 docs/streaming/structured-streaming-kafka-integration.md:
    "startingOffsets ... only applies when a new query is started, and that resuming will always pick
    up from where the query left off"): the job sets it from the ledger, as JSON per partition."""
    p = pipeline(topics.name, [pg_sink(pg_schema)], maxEventsPerTrigger=50)
    assert p.spec.processing.starting_offsets == "earliest"
    names = topics(p)
    os.environ["STREAMOTION_PG_DSN"] = postgres.dsn
    first, second = make_events(120), make_events(70, start=120)
    produce(kafka, names["raw"], first, MALFORMED[:2])
    checkpoint = tmp_path / "ckpt"
    new_job(p, spark, kafka, model_server.url, checkpoint).run(available_now=True, max_failures=2)
    assert pg_count(postgres, pg_schema, "SELECT count(*) FROM events") == len(first)
    shutil.rmtree(checkpoint)  # the checkpoint is gone (a lost volume, a changed query)
    produce(kafka, names["raw"], second)
    job = new_job(p, spark, kafka, model_server.url, checkpoint)
    job.run(available_now=True, max_failures=2)
    read = sum(progress["numInputRows"] for progress in job.query.recentProgress)
    assert read == len(second), "the new query read (and classified) records the ledger already had"
    assert_events_exact(postgres, pg_schema, {e.key for e in first + second})
    assert_aggregates_match(postgres, pg_schema)
    assert pg_count(postgres, pg_schema, "SELECT count(*) FROM dead_letters") == 2
    assert pg_count(postgres, pg_schema, "SELECT count(DISTINCT query_id) FROM batches") == 2
    assert pg_count(postgres, pg_schema, "SELECT sum(events) FROM batches") == len(first) + len(second)
    ends = sorted(sum(e.values()) for e in _ledger_end(postgres, pg_schema).values())
    assert ends == [len(first) + 2, len(first) + 2 + len(second)]  # each query's end offsets, summed


def test_two_jobs_writing_one_sink_at_once_keep_aggregates_equal_to_a_group_by(
    spark, kafka, model_server, postgres, pg_schema, topics, tmp_path
):
    """Two jobs (a blue/green restart, a zombie driver) on the same topic and sink, each with its own
    checkpoint: every event once, and the aggregates equal a GROUP BY over the non-late event rows."""
    p = pipeline(topics.name, [pg_sink(pg_schema)], maxEventsPerTrigger=40, window="1m", watermark="1m")
    names = topics(p)
    os.environ["STREAMOTION_PG_DSN"] = postgres.dsn
    rounds = [
        make_events(60, start=100 * r, base=BASE + timedelta(minutes=2 * r), step_s=2) for r in range(4)
    ]
    late = make_events(5, start=900, base=BASE)  # window 12:00 is final by the last round
    blue = new_job(p, spark, kafka, model_server.url, tmp_path / "blue")
    # a session of its own: Spark refuses a second active query of the same name in one session
    green = new_job(p, spark.newSession(), kafka, model_server.url, tmp_path / "green")
    every = [e for r in rounds for e in r] + late
    with JobThread(blue) as jb, JobThread(green) as jg:
        for events in [*rounds, late]:
            produce(kafka, names["raw"], events)
            time.sleep(1.5)

        def both_done():
            ends = _ledger_end(postgres, pg_schema)
            done = [sum(e.values()) for e in ends.values()]
            return (len(done) == 2 and min(done) == len(every)) or done

        wait_for(both_done, timeout=300, what="both jobs through every record", job=jb)
        assert jg.error is None
    assert_events_exact(postgres, pg_schema, {e.key for e in every})
    assert_aggregates_match(postgres, pg_schema)
    # each event inserted (and aggregated) by exactly one of the two jobs
    assert pg_count(postgres, pg_schema, "SELECT sum(events) FROM batches") == len(every)
    assert pg_count(postgres, pg_schema, "SELECT count(DISTINCT query_id) FROM batches") == 2


ROW_COLUMNS = (
    "event_id, id, source, platform, channel, author, text, clean_text, lang, created_at, ingested_at, url, "
    "hashtags, terms, text_length, emotion, score, scores, sentiment, sentiment_index, model_version, "
    "window_start, window_end, late, kafka_topic, kafka_partition, kafka_offset, labels"
)


def test_local_cluster_writes_what_local_writes_and_no_event_row_reaches_the_driver(
    spark, kafka, model_server, postgres, pg_schema, topics, tmp_path
):
    """The job on local-cluster[2,1,1024] (two executor JVMs, their own Python workers) writes
    exactly the rows and aggregates the job on local[2] writes, from the same records (duplicates
    and malformed ones included); and it does so with spark.driver.maxResultSize=1m while one
    micro-batch carries more than that in event rows: collecting them on the driver would fail the batch."""
    import yaml

    other = pg_schema[:40] + "_local"
    cluster_p = pipeline(topics.name, [pg_sink(pg_schema)], maxEventsPerTrigger=1000)
    local_p = pipeline(topics.name, [pg_sink(other)], maxEventsPerTrigger=1000)
    names = topics(cluster_p)
    os.environ["STREAMOTION_PG_DSN"] = postgres.dsn
    events = make_events(400)
    # 1,900 characters: under the test model service's MODEL_MAX_TEXT_CHARS (2,000), so none is refused
    long = [
        e.model_copy(update={"text": ((e.text + " ") * (1 + 1900 // len(e.text)))[:1900]}) for e in events
    ]
    produce(kafka, names["raw"], long + long[:25], MALFORMED[:3])  # 25 sent twice
    assert sum(len(e.text) for e in long) * 2 > 1.4 * 2**20  # text and clean text: > 1.4 MiB of rows

    spec_file = tmp_path / "pipeline.yaml"
    spec_file.write_text(yaml.safe_dump(cluster_p.model_dump(mode="json", by_alias=True, exclude_none=True)))
    env = {
        **os.environ,
        "STREAMOTION_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "STREAMOTION_MODEL_URL": model_server.url,
        "STREAMOTION_PG_DSN": postgres.dsn,
    }
    argv = [
        sys.executable,
        "-m",
        "streamotion_jobs.main",
        "--pipeline",
        str(spec_file),
        "--master",
        "local-cluster[2,1,1024]",
        "--checkpoint",
        str(tmp_path / "cluster-ckpt"),
        "--available-now",
        "--no-dead-letter-topic",
        "--metrics-port",
        "0",
        "--conf",
        "spark.driver.maxResultSize=1m",
        "--conf",
        "spark.task.maxFailures=1",
    ]
    log = tmp_path / "cluster.log"
    with log.open("w") as out:
        cluster = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # meanwhile, the same records on local[2] in this process
        job = new_job(local_p, spark, kafka, model_server.url, tmp_path / "local-ckpt")
        job.dead_letter_topic = False
        job.run(available_now=True, max_failures=2)
        cluster.wait(600)  # --available-now: it exits once through the topic
    finally:
        cluster.terminate()
        try:
            cluster.wait(60)
        except subprocess.TimeoutExpired:
            cluster.kill()
    text = log.read_text()
    assert cluster.returncode == 0 and "maxResultSize" not in text, text[-3000:]
    try:
        assert_events_exact(postgres, pg_schema, {e.key for e in events})
        assert_aggregates_match(postgres, pg_schema)
        order = f"SELECT {ROW_COLUMNS} FROM events ORDER BY event_id"
        assert pg_rows(postgres, pg_schema, order) == pg_rows(postgres, other, order)
        for table, (stored, _) in AGG_CHECKS.items():
            assert pg_rows(postgres, pg_schema, stored) == pg_rows(postgres, other, stored), table
        dead = "SELECT kafka_topic, kafka_partition, kafka_offset, reason, payload FROM dead_letters ORDER BY 1, 2, 3"
        assert len(pg_rows(postgres, pg_schema, dead)) == 3
        assert pg_rows(postgres, pg_schema, dead) == pg_rows(postgres, other, dead)
    finally:
        with postgres.connect(autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')
