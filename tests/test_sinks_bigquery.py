"""BigQuery write path from the executors (#14) and backfill at scale, against the real bqemulator,
Spark (local, with task retries), PostgreSQL, Kafka and the model service.

What bqemulator 1.4.0 runs and these tests therefore cover: load jobs into per-partition staging
tables, the multi-statement script with ``BEGIN/COMMIT TRANSACTION``, ``IF``, ``DECLARE/SET``,
``CREATE TEMP TABLE``, ``MERGE`` (matched updates and inserts), and the rollback of a failed
script. What it does NOT cover (real BigQuery only; see the docs' "Sinks and tables"):

* bytes: the emulator reports ``totalBytesProcessed`` = 0 and no ``totalBytesBilled``, so the
  partition pruning of the ``created_at`` / ``window_start`` range filters and the bytes figures in
  the commit's stats are not measured here (the stats' keys are);
* child jobs: the emulator runs a script as one job and lists no child jobs;
* concurrency: the emulator runs scripts one at a time, so BigQuery's abort of a transaction that
  conflicts with a concurrent one (and the sink's retry of it) is exercised only with a stand-in
  client (``test_a_conflicting_commit_is_retried``), not by the server;
* query parameters inside scripts: the emulator binds none, so the script inlines its values as
  escaped literals (``bind``) on both;
* temp tables outlive their script on the emulator; their names carry the batch's suffix;
* the emulator rejects ``SET (a, b) = (SELECT AS STRUCT ...)``, several ``ADD COLUMN`` in one
  ``ALTER TABLE``, and replaces a script variable named like a column in ``UPDATE SET``: the sink
  uses one variable / one column per statement and ``v_*`` variable names on both.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pandas as pd
import pytest

from tests.test_jobs import BASE, make_events, pg_count, pg_rows, pg_sink, pipeline

US = 1_000_000


@pytest.fixture(scope="module")
def spark():
    from streamotion_jobs.spark import session

    # local[2, 3]: two threads, a failed task retried up to 3 times (as on a cluster)
    s = session("streamotion-bq-tests", master="local[2,3]")
    yield s
    s.stop()


@pytest.fixture
def bq_env(bigquery_emulator, monkeypatch):
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator.host)
    return bigquery_emulator


def info(query_id: str, batch_id: int, offsets=None, pipeline_name: str = "test/p"):
    """The batch metadata the job passes (``streamotion_jobs.sinks.BatchInfo`` where it exists)."""
    fields = dict(
        pipeline=pipeline_name,
        query_id=query_id,
        batch_id=batch_id,
        window_s=60.0,
        watermark_s=120.0,
        now_us=int(time.time() * US),
        offsets=offsets or {},
    )
    try:
        from streamotion_jobs.sinks import BatchInfo
    except ImportError:
        return SimpleNamespace(**fields)
    return BatchInfo(**fields)


def classified(events, model_version: str = "m1") -> pd.DataFrame:
    """transform.CLASSIFIED_SCHEMA rows for test events (a fixed classification)."""
    rows = []
    for k, e in enumerate(events):
        emotion = ("joy", "anger", "fear")[k % 3]
        rows.append(
            {
                "event_id": e.key,
                "id": e.id,
                "source": e.source,
                "platform": e.platform,
                "channel": e.channel,
                "author": e.author,
                "text": e.text,
                "clean_text": e.text.lower(),
                "lang": e.lang,
                "created_at_us": int(e.created_at.timestamp() * US),
                "ingested_at_us": int(e.created_at.timestamp() * US),
                "url": None,
                "hashtags": [w[1:] for w in e.text.split() if w.startswith("#")],
                "terms": [w for w in e.text.lower().split() if w.isalpha()][:3],
                "text_length": len(e.text),
                "kafka_topic": "raw",
                "kafka_partition": k % 2,
                "kafka_offset": k,
                "emotion": emotion,
                "score": 0.25 + (k % 4) / 8,
                "scores": json.dumps({emotion: 0.25 + (k % 4) / 8}),
                "sentiment": "positive" if emotion == "joy" else "negative",
                "sentiment_index": 0.5 if emotion == "joy" else -0.5,
                "model_version": model_version,
                "classified_at_us": int(time.time() * US),
                "labels": None,
            }
        )
    return pd.DataFrame(rows)


DEAD_COLUMNS = ["kafka_topic", "kafka_partition", "kafka_offset", "error", "payload"]


def no_dead() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in DEAD_COLUMNS})


def spark_frames(spark, events: pd.DataFrame, dead: pd.DataFrame, partitions: int):
    from streamotion_jobs.transform import CLASSIFIED_SCHEMA, arrow_safe

    ev = spark.createDataFrame(arrow_safe(events.copy()), schema=CLASSIFIED_SCHEMA).repartition(partitions)
    dl = spark.createDataFrame(
        arrow_safe(dead.copy()),
        schema="kafka_topic string, kafka_partition int, kafka_offset long, error string, payload string",
    ).coalesce(1)
    return ev, dl


def rows(client, sql: str) -> list[tuple]:
    return [tuple(r) for r in client.query(sql).result()]


def assert_aggregates_equal_group_by(client, ds: str) -> None:
    """Every stored aggregate equals a GROUP BY over the non-late event rows."""
    checks = [
        (
            f"SELECT window_start, source, channel, lang, emotion, events, ROUND(score_sum, 6), "
            f"ROUND(sentiment_index_sum, 6), ROUND(mean_score, 6) FROM `{ds}.emotion_window` ORDER BY 1, 2, 3, 4, 5",
            f"SELECT window_start, source, IFNULL(channel, ''), IFNULL(lang, ''), emotion, COUNT(*), "
            f"ROUND(SUM(score), 6), ROUND(SUM(sentiment_index), 6), ROUND(AVG(score), 6) FROM `{ds}.events` "
            f"WHERE NOT late GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
        ),
        (
            f"SELECT window_start, hashtag, events FROM `{ds}.hashtag_window` ORDER BY 1, 2",
            f"SELECT window_start, h, COUNT(*) FROM `{ds}.events`, UNNEST(hashtags) AS h WHERE NOT late "
            f"GROUP BY 1, 2 ORDER BY 1, 2",
        ),
        (
            f"SELECT window_start, lang, term, events FROM `{ds}.term_window` ORDER BY 1, 2, 3",
            f"SELECT window_start, IFNULL(lang, ''), w, COUNT(*) FROM `{ds}.events`, UNNEST(terms) AS w "
            f"WHERE NOT late GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        ),
        (
            f"SELECT window_start, author, events, ROUND(text_length_sum, 6) FROM `{ds}.author_activity` "
            f"ORDER BY 1, 2",
            f"SELECT window_start, author, COUNT(*), ROUND(SUM(text_length), 6) FROM `{ds}.events` "
            f"WHERE NOT late AND author IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2",
        ),
    ]
    for stored, group_by in checks:
        got, want = rows(client, stored), rows(client, group_by)
        assert want, f"nothing to compare: {group_by}"
        assert got == want, f"{stored}\n{got[:5]}\n!=\n{want[:5]}"


# ------------------------------------------------------------------------------ write path
def test_batch_is_staged_by_the_executors_and_committed_exactly_once_across_task_retries_and_replays(
    spark, bq_env, monkeypatch
):
    from streamotion_jobs.sinks import bigquery as bq

    sink = bq.BigQuerySink(bq_env.project, "ex_" + uuid.uuid4().hex[:8], log=lambda *_: None)
    sink.open()
    client = bq_env.client()
    events = classified(make_events(40, base=datetime.now(UTC) - timedelta(minutes=30)))
    dead = pd.DataFrame(
        [
            {
                "kafka_topic": "raw",
                "kafka_partition": 0,
                "kafka_offset": 900 + i,
                "error": "bad",
                "payload": "x",
            }
            for i in range(3)
        ]
    )
    ev, dl = spark_frames(spark, events, dead, partitions=3)

    # the first attempt of partition 0's task dies right AFTER its load job: Spark retries it, and
    # the retry's WRITE_TRUNCATE load replaces (never appends to) that partition's staging table
    original = bq.staging_writer

    def flaky_writer(conf, kind, client=None):
        inner = original(conf, kind, client)

        def write(frames):
            from pyspark import TaskContext

            out = list(inner(frames))
            ctx = TaskContext.get()
            if kind == "e" and ctx.partitionId() == 0 and ctx.attemptNumber() == 0:
                raise RuntimeError("executor lost after its load job")
            yield from out

        return write

    monkeypatch.setattr(bq, "staging_writer", flaky_writer)
    q = str(uuid.uuid4())
    batch = info(q, 0, offsets={"raw": {0: 20, 1: 20}})
    sink.stage(ev, dl, batch)  # succeeds: only a retry of partition 0 can have loaded its rows
    staged = [t.table_id for t in client.list_tables(sink.ds) if t.table_id.startswith("_staging_")]
    assert len([t for t in staged if t.startswith("_staging_e_")]) == 3  # one per partition
    in_staging = sum(rows(client, f"SELECT COUNT(*) FROM `{sink.ds}.{t}`")[0][0] for t in staged)
    assert in_staging == 40 + 3  # the retried partition's rows once, not twice
    stats = sink.commit(batch)
    assert stats is not None
    assert (stats["events"], stats["inserted"], stats["dead_letters"]) == (40, 40, 3)
    assert stats["load_jobs"] == 4 and stats["script_jobs"] == 1 and stats["jobs"] == 5
    assert {"bytes_processed", "bytes_billed", "child_jobs"} <= stats.keys()
    # the staging tables are gone after the commit
    assert not [t for t in client.list_tables(sink.ds) if t.table_id.startswith("_staging_")]
    ds = sink.ds
    assert rows(client, f"SELECT COUNT(*), COUNT(DISTINCT event_id) FROM `{ds}.events`") == [(40, 40)]
    assert rows(client, f"SELECT COUNT(*) FROM `{ds}.dead_letters`") == [(3,)]

    # a replay of the same batch (the job restarted before its checkpoint commit): skipped
    monkeypatch.setattr(bq, "staging_writer", original)
    sink.stage(ev, dl, batch)
    assert sink.commit(batch) is None
    assert rows(client, f"SELECT COUNT(*) FROM `{ds}.events`") == [(40,)]
    assert rows(client, f"SELECT COUNT(*) FROM `{ds}.dead_letters`") == [(3,)]
    assert rows(client, f"SELECT COUNT(*) FROM `{ds}.batches`") == [(1,)]
    assert_aggregates_equal_group_by(client, ds)
    # the ledger keeps the batch's end offsets, merged per partition; resume_offsets reads them
    later = info(q, 1, offsets={"raw": {1: 35}})
    sink.stage(*spark_frames(spark, events.iloc[:0], no_dead(), 1), later)
    assert sink.commit(later)["events"] == 0
    assert sink.resume_offsets("raw") == {0: 20, 1: 35}
    assert sink.resume_offsets("other") is None
    assert rows(client, f"SELECT offsets FROM `{ds}.batches` WHERE batch_id = 0") == [
        ('{"raw": {"0": 20, "1": 20}}',)
    ]
    # load jobs per batch are capped (BigQuery's daily load-job quota): 3 partitions, 2 load jobs
    capped = bq.BigQuerySink(bq_env.project, sink.dataset, log=lambda *_: None, max_load_jobs=2)
    more = classified(make_events(9, start=100, base=datetime.now(UTC) - timedelta(minutes=20)))
    stats = capped.stage(*spark_frames(spark, more, no_dead(), 3), info(q, 2)) or capped.commit(info(q, 2))
    assert (stats["load_jobs"], stats["inserted"]) == (2, 9)


def test_aggregates_equal_a_group_by_over_non_late_rows_after_concurrent_and_repeated_batches(bq_env):
    """Two jobs (two query ids) commit overlapping events into one dataset at the same time, one
    batch is committed twice, and a batch arrives for windows the watermark already closed."""
    from streamotion_jobs.sinks.bigquery import BigQuerySink

    dataset = "agg_" + uuid.uuid4().hex[:8]
    a = BigQuerySink(bq_env.project, dataset, client=bq_env.client(), log=lambda *_: None)
    b = BigQuerySink(bq_env.project, dataset, client=bq_env.client(), log=lambda *_: None)
    a.open()
    recent = datetime.now(UTC) - timedelta(minutes=20)
    first = classified(make_events(60, base=recent))
    overlap = classified(make_events(60, start=30, base=recent + timedelta(seconds=30)))  # ids e30..e89
    qa, qb = str(uuid.uuid4()), str(uuid.uuid4())
    a.stage_pandas(first, no_dead(), info(qa, 0))
    b.stage_pandas(overlap, no_dead(), info(qb, 0))
    results: dict[str, dict | None] = {}

    def commit(name, sink, i):
        results[name] = sink.commit(i)

    threads = [
        threading.Thread(target=commit, args=("a", a, info(qa, 0))),
        threading.Thread(target=commit, args=("b", b, info(qb, 0))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results["a"] and results["b"]
    assert results["a"]["inserted"] + results["b"]["inserted"] == 90  # e0..e89, each once
    # the same batch again (a replay): skipped, nothing added twice
    a.stage_pandas(first, no_dead(), info(qa, 0))
    assert a.commit(info(qa, 0)) is None
    # an old batch: its windows are final (the watermark passed them): stored late, not aggregated
    old = classified(make_events(12, start=500, base=recent - timedelta(hours=3)))
    a.stage_pandas(old, no_dead(), info(qa, 1))
    stats = a.commit(info(qa, 1))
    assert stats["late"] == 12 and stats["inserted"] == 12
    client = bq_env.client()
    ds = a.ds
    assert rows(client, f"SELECT COUNT(*), COUNT(DISTINCT event_id), COUNTIF(late) FROM `{ds}.events`") == [
        (102, 102, 12)
    ]
    assert_aggregates_equal_group_by(client, ds)
    # the means come from the sums (views) and equal AVG over the rows
    assert rows(
        client,
        f"SELECT ROUND(SUM(mean_score * events), 6) FROM `{ds}.v_emotion_window`",
    ) == rows(client, f"SELECT ROUND(SUM(score), 6) FROM `{ds}.events` WHERE NOT late")


def test_a_dataset_from_before_executor_writes_migrates_and_keeps_its_aggregates(bq_env):
    """An older release's dataset (no sums, no pipeline_state, its watermark only in batches):
    open() adds the columns and fills the sums; the first script reads the old ledger's watermark."""
    from streamotion_jobs.sinks.bigquery import BigQuerySink

    client = bq_env.client()
    dataset = "old_" + uuid.uuid4().hex[:8]
    ds = f"{bq_env.project}.{dataset}"
    client.create_dataset(ds)
    client.query(
        f"""CREATE TABLE `{ds}.emotion_window` (window_start TIMESTAMP NOT NULL, window_end TIMESTAMP NOT NULL,
            source STRING NOT NULL, channel STRING NOT NULL, lang STRING NOT NULL, emotion STRING NOT NULL,
            events INT64 NOT NULL, mean_score FLOAT64 NOT NULL, mean_sentiment_index FLOAT64 NOT NULL,
            updated_at TIMESTAMP)"""
    ).result()
    window = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    client.query(
        f"""INSERT INTO `{ds}.emotion_window` VALUES (TIMESTAMP '{window.isoformat()}',
            TIMESTAMP '{(window + timedelta(minutes=1)).isoformat()}', 'reddit-a', '', 'en', 'joy', 4, 0.5, 0.25,
            CURRENT_TIMESTAMP())"""
    ).result()
    client.query(
        f"""CREATE TABLE `{ds}.batches` (query_id STRING NOT NULL, batch_id INT64 NOT NULL, events INT64 NOT NULL,
            late_events INT64 NOT NULL, dead_letters INT64 NOT NULL, watermark TIMESTAMP,
            committed_at TIMESTAMP NOT NULL)"""
    ).result()
    # the old ledger's watermark: 30 minutes ago (every window before it is final)
    client.query(
        f"""INSERT INTO `{ds}.batches` VALUES ('old', 7, 4, 0, 0,
            TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 30 MINUTE), CURRENT_TIMESTAMP())"""
    ).result()
    sink = BigQuerySink(bq_env.project, dataset, client=bq_env.client(), log=lambda *_: None)
    sink.open()
    assert rows(client, f"SELECT score_sum, sentiment_index_sum FROM `{ds}.emotion_window`") == [(2.0, 1.0)]
    old = classified(make_events(3, base=window + timedelta(seconds=5)))  # that closed window: late
    new = classified(make_events(3, start=3, base=datetime.now(UTC) - timedelta(minutes=5)))
    sink.stage_pandas(pd.concat([old, new], ignore_index=True), no_dead(), info("q-new", 0))
    stats = sink.commit(info("q-new", 0))
    assert stats["late"] == 3 and stats["inserted"] == 6
    assert rows(client, f"SELECT SUM(events) FROM `{ds}.emotion_window`") == [(4 + 3,)]


def test_a_conflicting_commit_is_retried(bq_env):
    """BigQuery aborts one of two transactions that modify the same table concurrently ("Transaction
    is aborted due to concurrent update against table ..."); the sink runs the whole script again
    (its ledger check makes that safe). The emulator serializes scripts, so the first attempt's
    abort is played by a client that fails it the way BigQuery reports it."""
    from google.api_core.exceptions import BadRequest
    from streamotion_jobs.sinks.bigquery import BigQuerySink

    real = bq_env.client()

    class AbortsOnce:
        def __init__(self):
            self.scripts = 0

        def query(self, sql, **kw):
            if "BEGIN TRANSACTION" in sql:
                self.scripts += 1
                if self.scripts == 1:
                    raise BadRequest("Transaction is aborted due to concurrent update against table x.events")
            return real.query(sql, **kw)

        def __getattr__(self, name):
            return getattr(real, name)

    flaky = AbortsOnce()
    sink = BigQuerySink(bq_env.project, "cf_" + uuid.uuid4().hex[:8], client=flaky, log=lambda *_: None)
    sink.open()
    events = classified(make_events(5, base=datetime.now(UTC) - timedelta(minutes=3)))
    sink.stage_pandas(events, no_dead(), info("q", 0))
    stats = sink.commit(info("q", 0))
    assert stats["script_attempts"] == 2 and stats["inserted"] == 5
    assert rows(real, f"SELECT COUNT(*) FROM `{sink.ds}.events`") == [(5,)]
    # any other error is not retried
    flaky.scripts = 0

    def broken(sql, **kw):
        raise BadRequest("Syntax error")

    flaky.query = broken
    sink.stage_pandas(events, no_dead(), info("q", 1))
    with pytest.raises(BadRequest):
        sink.commit(info("q", 1))


# ------------------------------------------------------------------------------ backfill
def test_kafka_bounds_are_per_partition_timestamps_in_milliseconds():
    """Spark 4.0.0's Kafka source (apache/spark@v4.0.0:docs/streaming/structured-streaming-kafka-integration.md,
    "startingOffsetsByTimestamp" / "endingOffsetsByTimestamp"): a JSON string
    ``{"topicA": {"0": 1000, "1": 1000}}`` of epoch milliseconds per TopicPartition; the offset used
    is the earliest whose timestamp is >= the given one; with no such offset the ending offset is
    latest, and the starting one follows ``startingOffsetsByTimestampStrategy`` ("error" by
    default; the backfill sets "latest": nothing to read in that partition)."""
    from streamotion_jobs.backfill import kafka_time_bounds

    start, end = datetime(2026, 3, 1, 12, tzinfo=UTC), datetime(2026, 3, 1, 13, tzinfo=UTC)
    starting, ending = kafka_time_bounds("raw.t", [0, 1, 2], start, end, before_s=600, after_s=120)
    assert json.loads(starting) == {
        "raw.t": {"0": 1772366400000 - 600_000, "1": 1772366400000 - 600_000, "2": 1772366400000 - 600_000}
    }
    assert json.loads(ending) == {"raw.t": {p: 1772370000000 + 120_000 for p in ("0", "1", "2")}}


def produce_at(kafka, topic: str, events, published: datetime) -> None:
    """Publish events with the Kafka timestamp ``published`` (CreateTime set by the producer)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 5})
    for e in events:
        producer.produce(
            topic, key=e.key.encode(), value=e.to_json(), timestamp=int(published.timestamp() * 1000)
        )
    assert producer.flush(30) == 0


def test_backfill_from_kafka_reads_only_the_offsets_of_its_time_range(
    spark, kafka, model_server, postgres, pg_schema, monkeypatch
):
    """Three hours of the raw topic; a backfill of one half hour reads the records published in it
    (plus maxFutureSkew before and the watermark after), located by their timestamps — not the
    topic from its earliest offset."""
    from streamotion_jobs.backfill import run_backfill

    from streamotion.naming import topic_names

    p = pipeline("k" + uuid.uuid4().hex[:8], [pg_sink(pg_schema)])
    names = topic_names(p)
    kafka.create_topic(names["raw"], partitions=2)
    monkeypatch.setenv("STREAMOTION_KAFKA_BOOTSTRAP", kafka.bootstrap)
    os.environ["STREAMOTION_PG_DSN"] = postgres.dsn
    groups = []
    # recent hours (the broker's time retention would delete records stamped months ago)
    origin = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    for h in range(3):
        base = origin + timedelta(hours=h)
        group = make_events(20, start=100 * h, base=base, step_s=60)  # created over 20 minutes
        produce_at(kafka, names["raw"], group, published=base + timedelta(minutes=1))
        groups.append(group)
    start, end = origin + timedelta(hours=1), origin + timedelta(hours=1, minutes=30)
    result = run_backfill(p, start, end, model=model_server.url, source="kafka", spark=spark)
    assert result.records_read == 20, result.as_dict()  # the second hour's records, none of the others
    assert result.events == 20 and result.written == 20
    first = {int(p): lo for p, (lo, _) in result.kafka_offsets.items()}
    assert min(first.values()) > 0  # did not start at the earliest offset
    assert sum(hi - lo for lo, hi in result.kafka_offsets.values()) == 20
    ids = {r[0] for r in pg_rows(postgres, pg_schema, "SELECT event_id FROM event_scores")}
    assert ids == {e.key for e in groups[1]}


def test_backfill_reads_a_bigquery_only_pipeline_with_per_slice_queries(spark, bq_env, model_server):
    """No PostgreSQL sink: the executors read the BigQuery events table in time slices (one query
    each, filtered on the partitioning column) and the scores land in BigQuery."""
    from streamotion_jobs.backfill import run_backfill
    from streamotion_jobs.sinks import Batch
    from streamotion_jobs.sinks.bigquery import BigQuerySink

    dataset = "bo_" + uuid.uuid4().hex[:8]
    p = pipeline(
        "o" + uuid.uuid4().hex[:8],
        [{"type": "bigquery", "bigquery": {"project": bq_env.project, "dataset": dataset}}],
    )
    bq = BigQuerySink(bq_env.project, dataset, log=lambda *_: None)
    bq.open()
    events = make_events(30, base=BASE, step_s=60)
    assert bq.write(Batch(str(uuid.uuid4()), 0, classified(events), no_dead(), 60.0, 120.0))
    result = run_backfill(
        p, BASE + timedelta(minutes=5), BASE + timedelta(minutes=25), model=model_server.url, spark=spark
    )
    assert (result.source, result.events, result.written) == ("sink", 20, 20)
    got = {r[0] for r in rows(bq_env.client(), f"SELECT event_id FROM `{bq.ds}.event_scores`")}
    assert got == {e.key for e in events[5:25]}


def test_backfill_run_twice_replaces_scores_in_postgres_and_bigquery(
    spark, bq_env, postgres, pg_schema, model_server
):
    """Both sinks: the events are read by the executors in time slices (PostgreSQL first), scored
    once, written from the executors; a second run updates the (event, model version) rows it
    finds instead of adding rows — including rows a first run left with other values."""
    from streamotion_jobs.backfill import run_backfill
    from streamotion_jobs.sinks.bigquery import BigQuerySink
    from streamotion_jobs.sinks.postgres import PostgresSink

    dataset = "bf_" + uuid.uuid4().hex[:8]
    sinks = [
        pg_sink(pg_schema),
        {"type": "bigquery", "bigquery": {"project": bq_env.project, "dataset": dataset}},
    ]
    p = pipeline("b" + uuid.uuid4().hex[:8], sinks)
    os.environ["STREAMOTION_PG_DSN"] = postgres.dsn
    events = make_events(45, base=BASE, step_s=60)  # 12:00 .. 12:44
    frame = classified(events, model_version="live")
    pg = PostgresSink(postgres.dsn, schema=pg_schema, log=lambda *_: None)
    bq = BigQuerySink(bq_env.project, dataset, log=lambda *_: None)
    from streamotion_jobs.sinks import Batch

    for sink in (pg, bq):
        sink.open()
        assert sink.write(Batch(str(uuid.uuid4()), 0, frame, no_dead(), 60.0, 120.0))
    start, end = BASE + timedelta(minutes=10), BASE + timedelta(minutes=40)
    first = run_backfill(p, start, end, model=model_server.url, spark=spark)
    assert first.events == 30 and first.written == 30
    client = bq_env.client()
    ds = bq.ds
    assert pg_count(postgres, pg_schema, "SELECT count(*) FROM event_scores") == 30
    assert rows(client, f"SELECT COUNT(*) FROM `{ds}.event_scores`") == [(30,)]
    # tamper with the stored scores: a re-run must overwrite them
    with pg.connect() as conn:
        conn.execute("UPDATE event_scores SET emotion = 'stale', score = -1")
    client.query(f"UPDATE `{ds}.event_scores` SET emotion = 'stale', score = -1 WHERE TRUE").result()
    second = run_backfill(p, start, end, model=model_server.url, spark=spark)
    assert second.events == 30 and second.written == 30
    assert pg_rows(
        postgres,
        pg_schema,
        "SELECT count(*), count(DISTINCT event_id), count(*) FILTER (WHERE emotion = 'stale') "
        "FROM event_scores",
    ) == [(30, 30, 0)]
    assert rows(
        client,
        f"SELECT COUNT(*), COUNT(DISTINCT event_id), COUNTIF(emotion = 'stale') FROM `{ds}.event_scores`",
    ) == [(30, 30, 0)]
    # the same scores in both sinks
    pg_scores = sorted(pg_rows(postgres, pg_schema, "SELECT event_id, emotion FROM event_scores"))
    assert pg_scores == sorted(rows(client, f"SELECT event_id, emotion FROM `{ds}.event_scores`"))
    assert not pg_count(postgres, pg_schema, "SELECT count(*) FROM event_scores_staging")
    assert not [t for t in client.list_tables(ds) if t.table_id.startswith("_staging_")]
    assert {e.key for e in events[10:40]} == {r[0] for r in pg_scores}
