"""The lake sink (Delta Lake 4.0.0 on Spark 4.0.0): real Spark with Delta's jars from Maven Central,
real Kafka and the model service for the job kill test, a second reader (the ``deltalake`` package,
delta-rs) for what the tables hold; the operator's rendering of the object-store settings.

The same sink on an S3-compatible store with the real s3a connector: tests/test_sinks_lake_s3.py
(it shares this module's helpers). gs is tested as rendered only.
"""

from __future__ import annotations

import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from streamotion import lake
from streamotion.api.models import API_VERSION
from streamotion.api.validate import parse

ROOT = Path(__file__).resolve().parent.parent
BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
US = 1_000_000


def lake_pipeline(name: str, location: str, max_events: int = 40, **lake_fields) -> object:
    return parse(
        {
            "apiVersion": API_VERSION,
            "kind": "StreamPipeline",
            "metadata": {"name": name, "namespace": "test"},
            "spec": {
                "kafka": {"partitions": 2},
                "sources": [{"name": "a", "type": "http", "http": {"tokenSecret": "t"}}],
                "processing": {
                    "trigger": "500ms",
                    "window": "1m",
                    "watermark": "2m",
                    "maxEventsPerTrigger": max_events,
                },
                "sinks": [{"type": "lake", "lake": {"location": location, **lake_fields}}],
            },
        }
    )


def _fresh_jvm() -> None:
    """Delta's jars join the driver's classpath only when its JVM starts (spark.jars.packages): an
    earlier test module's session leaves PySpark's JVM running without them ('JavaPackage' object is
    not callable). Stop it and its gateway, so the next session starts a JVM of its own."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()
    if SparkContext._gateway is not None:
        SparkContext._gateway.shutdown()
        SparkContext._gateway = None
        SparkContext._jvm = None
    SparkSession._instantiatedSession = None
    SparkSession._activeSession = None


@pytest.fixture(scope="module")
def spark():
    from streamotion_jobs.spark import session

    _fresh_jvm()
    p = lake_pipeline("unit", "/unused")
    from streamotion_jobs.spark import pipeline_conf

    s = session("streamotion-lake-tests", master="local[2]", extra=pipeline_conf(p))
    yield s
    s.stop()


def classified(ids: range, base: datetime = BASE, source_of=lambda i: ("a", "b")[i % 2]) -> pd.DataFrame:
    rows = []
    for i in ids:
        created = base + timedelta(seconds=10 * i)
        rows.append(
            {
                "event_id": f"{source_of(i)}:http:e{i}",
                "id": f"e{i}",
                "source": source_of(i),
                "platform": "http",
                "channel": None if i % 3 == 0 else f"c{i % 2}",
                "author": None if i % 5 == 0 else f"u{i % 3}",
                "text": f"text {i} #tag{i % 2}",
                "clean_text": f"text {i}",
                "lang": "en" if i % 4 else None,
                "created_at_us": int(created.timestamp() * US),
                "ingested_at_us": int(created.timestamp() * US) + 1000,
                "url": None,
                "hashtags": [f"tag{i % 2}"],
                "terms": ["text", f"w{i % 3}"],
                "text_length": 10 + i % 7,
                "kafka_topic": "raw",
                "kafka_partition": i % 2,
                "kafka_offset": i,
                "emotion": ("joy", "anger", "neutral")[i % 3],
                "score": 0.5 + (i % 5) / 10,
                "scores": "{}",
                "sentiment": "positive",
                "sentiment_index": (i % 3) - 1.0,
                "model_version": "tiny",
                "classified_at_us": int(created.timestamp() * US) + 2000,
                "labels": [("joy", "anger", "neutral")[i % 3]],
            }
        )
    return pd.DataFrame(rows)


def frames(spark, pdf: pd.DataFrame, dead: int = 0, dead_from: int = 1000):
    from streamotion_jobs.job import DEAD_LETTER_COLUMNS
    from streamotion_jobs.transform import CLASSIFIED_SCHEMA

    events = spark.createDataFrame(pdf, CLASSIFIED_SCHEMA)
    dead_rows = [("raw", 0, dead_from + k, "bad json", "{") for k in range(dead)]
    dead_df = spark.createDataFrame(
        dead_rows, "kafka_topic string, kafka_partition int, kafka_offset long, error string, payload string"
    ).select(*DEAD_LETTER_COLUMNS)
    return events, dead_df


def info(query: str, batch: int, offsets=None):
    from streamotion_jobs.sinks import BatchInfo

    return BatchInfo(
        pipeline="test/unit",
        query_id=query,
        batch_id=batch,
        window_s=60.0,
        watermark_s=120.0,
        now_us=int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * US),
        offsets=offsets or {},
    )


def read(location: str, table: str, storage_options: dict | None = None) -> pd.DataFrame:
    """The table as a second reader sees it: delta-rs (``deltalake``), not Spark."""
    from deltalake import DeltaTable

    return DeltaTable(f"{location}/{table}", storage_options=storage_options).to_pandas()


def assert_aggregates_match(location: str, storage_options: dict | None = None) -> None:
    """Every stored aggregate equals a GROUP BY over the on-time event rows (read with deltalake)."""

    def table(name: str) -> pd.DataFrame:
        return read(location, name, storage_options)

    events = table("events")
    on_time = events[~events["late"]].copy()
    on_time["channel"] = on_time["channel"].fillna("")
    on_time["lang"] = on_time["lang"].fillna("")
    emotion = table("emotion_window")
    keys = ["window_start", "source", "channel", "lang", "emotion"]
    want = on_time.groupby(keys).agg(events=("event_id", "size"), sum_score=("score", "sum")).reset_index()
    got = emotion.sort_values(keys).reset_index(drop=True)
    want = want.sort_values(keys).reset_index(drop=True)
    assert (
        got[[*keys, "events"]].astype(str).values.tolist()
        == want[[*keys, "events"]].astype(str).values.tolist()
    )
    assert got["sum_score"].round(9).tolist() == want["sum_score"].round(9).tolist()
    tags = on_time.explode("hashtags").groupby(["window_start", "hashtags"]).size()
    stored = table("hashtag_window").set_index(["window_start", "hashtag"])["events"]
    assert sorted(stored.items()) == sorted(tags.items())
    authors = on_time[on_time["author"].notna()].groupby(["window_start", "author"]).size()
    stored = table("author_activity").set_index(["window_start", "author"])["events"]
    assert sorted(stored.items()) == sorted(authors.items())


def test_replays_and_a_crash_between_writes_leave_every_event_and_aggregate_once(spark, tmp_path):
    """A batch replayed after a crash anywhere between its writes (here: after the events and aggregates
    writes, before the ledger row; aggregates every batch) completes without counting anything twice:
    the events MERGE keeps one row per event id and Delta skips the aggregate MERGEs it has the batch's
    txnAppId/txnVersion for (delta-io/delta v4.0.0 DeltaCommand.scala hasBeenExecuted;
    MergeIntoCommand.scala); a new query (checkpoint lost) re-sending stored events adds none; a late
    event is stored but leaves final windows alone. A second reader (deltalake) sees the same rows."""
    from streamotion_jobs.sinks.lake import LakeSink

    location = str(tmp_path / "lake")
    sink = LakeSink(location, "test/unit", spark=spark, maintenance_interval_s=0, aggregate_interval_s=0)
    sink.open()
    q = str(uuid.uuid4())
    events, dead = frames(spark, classified(range(0, 30)), dead=2)
    sink.stage(events, dead, info(q, 0, {"raw": {0: 15, 1: 15}}))
    stats = sink.commit(info(q, 0, {"raw": {0: 15, 1: 15}}))
    assert stats["lake_inserted"] == 30 and stats["lake_dead_letters"] == 2

    # batch 1 crashes after its data writes, before its ledger row
    second = classified(range(30, 60))
    crashing = LakeSink(location, "test/unit", spark=spark, maintenance_interval_s=0, aggregate_interval_s=0)
    crashing.open()

    def crash(*_a, **_k):
        raise RuntimeError("driver killed")

    crashing._append_ledger = crash
    events, dead = frames(spark, second, dead=1, dead_from=2000)
    crashing.stage(events, dead, info(q, 1, {"raw": {0: 31, 1: 31}}))
    with pytest.raises(RuntimeError, match="driver killed"):
        crashing.commit(info(q, 1, {"raw": {0: 31, 1: 31}}))
    assert len(read(location, "events")) == 60  # the MERGE committed, the ledger did not

    # the restarted job replays batch 1 (same query id and batch id): nothing written twice
    restarted = LakeSink(location, "test/unit", spark=spark, maintenance_interval_s=0, aggregate_interval_s=0)
    restarted.open()
    assert restarted.resume_offsets("raw") == {0: 15, 1: 15}
    events, dead = frames(spark, second, dead=1, dead_from=2000)
    restarted.stage(events, dead, info(q, 1, {"raw": {0: 31, 1: 31}}))
    stats = restarted.commit(info(q, 1, {"raw": {0: 31, 1: 31}}))
    assert stats is not None and stats["lake_inserted"] == 30  # the rows batch 1 inserted, read back by tag
    restarted.stage(events, dead, info(q, 1))
    assert restarted.commit(info(q, 1)) is None  # in the ledger now: skipped
    assert restarted.resume_offsets("raw") == {0: 31, 1: 31}

    # a new query (its checkpoint lost) re-sends 10 stored events and 5 new ones, one of them late
    q2 = str(uuid.uuid4())
    late_base = BASE - timedelta(seconds=10 * 900 + 3600)  # e900 an hour before e0: its window is final
    again = pd.concat(
        [classified(range(50, 60)), classified(range(60, 64)), classified(range(900, 901), base=late_base)]
    )
    events, dead = frames(spark, again)
    restarted.stage(events, dead, info(q2, 0))
    stats = restarted.commit(info(q2, 0))
    assert stats["lake_inserted"] == 5 and stats["lake_late"] == 1

    stored = read(location, "events")
    assert len(stored) == 65 and stored["event_id"].is_unique
    assert set(stored["event_id"]) == {f"{('a', 'b')[i % 2]}:http:e{i}" for i in [*range(64), 900]}
    assert stored["late"].sum() == 1
    assert len(read(location, "dead_letters")) == 3  # two of batch 0, one of batch 1, once each
    assert_aggregates_match(location)
    # partitioned by event date and source (Delta's metadata, as delta-rs reads it)
    from deltalake import DeltaTable

    assert DeltaTable(f"{location}/events").metadata().partition_columns == ["event_date", "source"]
    # Spark reads the same rows as delta-rs
    spark_ids = {
        r[0] for r in spark.read.format("delta").load(f"{location}/events").select("event_id").collect()
    }
    assert spark_ids == set(stored["event_id"])

    # `streamotion lake daily`: PostgreSQL's daily views from the lake (deltalake, no Spark)
    import json

    from typer.testing import CliRunner

    from streamotion.cli import app

    result = CliRunner().invoke(app, ["lake", "daily", location, "--days", "0", "--json"])
    assert result.exit_code == 0, result.output
    views = json.loads(result.output)
    assert sum(r["events"] for r in views["v_emotion_daily"]) == 65
    days = {(r["day"][:10], r["source"]) for r in views["v_sentiment_daily"]}
    assert days == {("2026-03-01", "a"), ("2026-03-01", "b")}
    for day, source in days:
        shares = [
            r["share"] for r in views["v_sentiment_daily"] if (r["day"][:10], r["source"]) == (day, source)
        ]
        assert abs(sum(shares) - 1) < 1e-9


def test_aggregates_merged_at_an_interval_are_completed_after_a_crash_and_at_stop(
    spark, tmp_path, monkeypatch
):
    """aggregateInterval: the events of every batch at once, the aggregates of several batches in one
    MERGE per table. Whatever a crash leaves out (a round never run; a round that reached only some
    tables) is completed from each table's own transaction version (Delta's SetTransaction actions,
    delta-io/delta v4.0.0 spark/src/main/scala/org/apache/spark/sql/delta/SnapshotState.scala
    ``transactions``, what OptimisticTransaction.txnVersion reads to skip a write): nothing lost,
    nothing counted twice. After the first batch a process commits, new events are appended (an
    anti-join instead of a MERGE): a re-sent event is still stored once."""
    from streamotion_jobs.sinks import lake as lake_sink
    from streamotion_jobs.sinks.lake import AGGREGATES, LakeSink, _txn_versions

    location = str(tmp_path / "lake")
    q = str(uuid.uuid4())
    app = f"streamotion:test/unit:{q}"

    def commit(sink, batch: int, ids) -> dict:
        events, dead = frames(spark, classified(ids))
        sink.stage(events, dead, info(q, batch))
        return sink.commit(info(q, batch))

    first = LakeSink(location, "test/unit", spark=spark, maintenance_interval_s=0, aggregate_interval_s=3600)
    first.open()
    assert commit(first, 0, range(0, 20))["lake_events_write"] == "merge"  # the first batch here
    stats = commit(first, 1, range(20, 40))
    assert stats["lake_events_write"] == "append" and stats["lake_aggregated"] == 0
    assert all(len(read(location, t)) == 0 for t in AGGREGATES)  # not due yet
    # killed: no close(); the next process completes the aggregates from the ledger when it opens
    second = LakeSink(location, "test/unit", spark=spark, maintenance_interval_s=0, aggregate_interval_s=3600)
    second.open()
    assert_aggregates_match(location)
    assert {t: _txn_versions(spark, f"{location}/{t}").get(app) for t in AGGREGATES} == dict.fromkeys(
        AGGREGATES, 1
    )

    assert commit(second, 2, range(40, 60))["lake_inserted"] == 20
    # batch 3 re-sends five events of batch 2 (a producer retry): appended once
    stats = commit(second, 3, [*range(55, 60), *range(60, 80)])
    assert stats["lake_events_write"] == "append" and stats["lake_inserted"] == 20
    # batch 4's round reaches three tables, then the process dies before its ledger row
    second.aggregate_interval_s = 0
    merge = lake_sink._merge_aggregate

    def dies_on_terms(session, uri, table, *args, **kwargs):
        if table == "term_window":
            raise RuntimeError("executor lost")
        return merge(session, uri, table, *args, **kwargs)

    monkeypatch.setattr(lake_sink, "_merge_aggregate", dies_on_terms)
    with pytest.raises(RuntimeError, match="executor lost"):
        commit(second, 4, range(80, 100))
    monkeypatch.setattr(lake_sink, "_merge_aggregate", merge)
    versions = {t: _txn_versions(spark, f"{location}/{t}").get(app) for t in AGGREGATES}
    assert versions == {**dict.fromkeys(AGGREGATES, 4), "term_window": 1}

    third = LakeSink(location, "test/unit", spark=spark, maintenance_interval_s=0, aggregate_interval_s=3600)
    third.open()  # term_window: batches 2 and 3 (the ledger's); the others already have batch 4
    versions = {t: _txn_versions(spark, f"{location}/{t}").get(app) for t in AGGREGATES}
    assert versions == {**dict.fromkeys(AGGREGATES, 4), "term_window": 3}
    stats = commit(third, 4, range(80, 100))  # the replay: its events are there, read back by their tag
    assert stats["lake_inserted"] == 20 and stats["lake_aggregated"] == 0
    third.close()  # the stop completes term_window with batch 4
    assert _txn_versions(spark, f"{location}/term_window").get(app) == 4
    stored = read(location, "events")
    assert len(stored) == 100 and stored["event_id"].is_unique
    assert_aggregates_match(location)
    terms = read(location, "term_window")
    assert terms["events"].sum() == sum(len(t) for t in stored["terms"])  # every term once, none twice


def test_aggregate_rounds_run_beside_the_stream_and_a_failed_round_is_retried(spark, tmp_path, monkeypatch):
    """With an aggregateInterval the aggregates are merged by a thread of the driver beside the stream:
    a micro-batch's commit does not wait for a round in progress (here, one stuck in a MERGE), and a
    round that fails is retried at the next interval from what each table's transaction records say it
    has: nothing lost, nothing counted twice."""
    import threading

    from streamotion_jobs.sinks import lake as lake_sink
    from streamotion_jobs.sinks.lake import AGGREGATES, LakeSink, _txn_versions

    location = str(tmp_path / "lake")
    q = str(uuid.uuid4())
    app = f"streamotion:test/unit:{q}"
    merge = lake_sink._merge_aggregate
    stuck, release, unstuck, attempts = threading.Event(), threading.Event(), threading.Event(), []

    def stuck_then_lost(session, uri, table, *args, **kwargs):
        if table == "hashtag_window" and not attempts:
            attempts.append(table)
            stuck.set()
            release.wait(120)
            unstuck.set()
            raise RuntimeError("executor lost")
        return merge(session, uri, table, *args, **kwargs)

    def commit(sink, batch: int, ids) -> dict:
        events, dead = frames(spark, classified(ids))
        sink.stage(events, dead, info(q, batch))
        return sink.commit(info(q, batch))

    def versions() -> dict:
        return {t: _txn_versions(spark, f"{location}/{t}").get(app) for t in AGGREGATES}

    monkeypatch.setattr(lake_sink, "_merge_aggregate", stuck_then_lost)
    sink = LakeSink(location, "test/unit", spark=spark, maintenance_interval_s=0, aggregate_interval_s=1)
    sink.open()
    try:
        commit(sink, 0, range(0, 20))
        assert stuck.wait(300), "no aggregate round after the first batch"
        # the round merging batch 0 is stuck in its hashtag MERGE: the next batch is committed anyway
        stats = commit(sink, 1, range(20, 40))
        assert not unstuck.is_set(), "the commit waited for the aggregate round"
        assert stats["lake_inserted"] == 20 and stats["lake_aggregated"] == 0
        assert versions()["hashtag_window"] is None
        release.set()  # that MERGE fails; the next round merges batches 0 and 1 where they lack
        wait(lambda: versions() == dict.fromkeys(AGGREGATES, 1) or versions(), 300, "the retried round")
    finally:
        release.set()
        sink.close()
    assert attempts == ["hashtag_window"]
    stored = read(location, "events")
    assert len(stored) == 40 and stored["event_id"].is_unique
    assert_aggregates_match(location)
    hashtags = read(location, "hashtag_window")
    assert hashtags["events"].sum() == sum(len(h) for h in stored["hashtags"])  # each once, none twice


def test_aggregate_merge_reads_only_the_windows_it_adds_to(spark):
    """An aggregate MERGE restricts its target to the window days and to the first..last window start of
    what it adds (Delta skips the day's other files by their window_start statistics, so a MERGE does
    not read more as the day's table grows); the bounds are UTC instants whatever the session's zone.
    Upstream, delta-io/delta v4.0.0: spark/src/main/scala/org/apache/spark/sql/delta/commands/merge/
    ClassicMergeExecutor.scala prunes the target with ``deltaTxn.filterFiles(getTargetOnlyPredicates)``
    (commands/MergeIntoCommandBase.scala: the condition's conjuncts on target columns only), and
    stats/DataSkippingReader.scala collects statistics for the first 32 columns
    (``DATA_SKIPPING_NUM_INDEXED_COLS_DEFAULT_VALUE``): window_start must be among them."""
    from pyspark.sql import functions as F
    from streamotion_jobs.sinks.lake import AGGREGATES, Windows

    for ddl, _, _ in AGGREGATES.values():
        columns = [c.strip().split()[0] for c in ddl.split(",")]
        assert columns.index("window_start") < 32

    starts = [BASE + timedelta(minutes=m) for m in range(-3, 4)]
    rows = spark.createDataFrame(
        [(s, m % 2 == 0) for m, s in enumerate(starts)], "window_start timestamp, late boolean"
    )
    windows = Windows.from_row(rows.agg(*Windows.columns(~F.col("late"))).collect()[0])
    on_time = [s for m, s in enumerate(starts) if m % 2]
    assert windows.days == (BASE.date(),)
    assert (windows.first_us, windows.last_us) == (
        int(on_time[0].timestamp() * US),
        int(on_time[-1].timestamp() * US),
    )
    zone = spark.conf.get("spark.sql.session.timeZone")
    try:
        spark.conf.set("spark.sql.session.timeZone", "America/New_York")
        target = rows.withColumn("window_date", F.lit(BASE.date())).alias("t")
        kept = target.where(windows.target_filter())
        got = sorted(r[0] for r in kept.select(F.unix_micros("window_start")).collect())
    finally:
        spark.conf.set("spark.sql.session.timeZone", zone)
    assert got == [int(s.timestamp() * US) for s in starts[1:-1]]  # the range, late rows inside it too


def test_maintenance_compacts_the_written_days_and_keeps_every_row(spark, tmp_path):
    """OPTIMIZE bin-packs the small files a 5-second trigger leaves; rows unchanged; VACUUM runs."""
    from deltalake import DeltaTable
    from streamotion_jobs.sinks.lake import LakeSink

    location = str(tmp_path / "lake")
    sink = LakeSink(location, "test/unit", spark=spark, maintenance_interval_s=0, retention_hours=168)
    sink.open()
    q = str(uuid.uuid4())
    for batch in range(2):  # two batches: at least two files in each partition to compact
        events, dead = frames(spark, classified(range(batch * 10, batch * 10 + 10)))
        sink.stage(events, dead, info(q, batch))
        sink.commit(info(q, batch))
    before = len(DeltaTable(f"{location}/events").file_uris())
    sink._maintain(force=True)
    after = len(DeltaTable(f"{location}/events").file_uris())
    assert after < before, (before, after)
    assert after == 2  # one file per (event_date, source) partition: one day, two sources
    assert len(read(location, "events")) == 20


def test_killed_job_restarts_without_duplicates_and_another_reader_sees_the_rows(
    kafka, model_server, tmp_path
):
    """The job as a child process, killed (SIGKILL) mid-stream and restarted from its checkpoint: every
    event exactly once in the Delta table, the aggregates a GROUP BY over it, read with deltalake."""
    from streamotion.dev.procs import Process
    from streamotion.events import Event
    from streamotion.naming import topic_names

    location = str(tmp_path / "lake")
    # three micro-batches of 100: killed after the first committed one, two plus the new events after
    p = lake_pipeline(
        "lk" + uuid.uuid4().hex[:6],
        location,
        max_events=100,
        maintenanceInterval="0s",
        aggregateInterval="5s",
    )
    names = topic_names(p)
    kafka.create_topic(names["raw"], partitions=2)
    kafka.create_topic(names["deadLetter"], partitions=1)
    spec_file = tmp_path / "pipeline.yaml"
    spec_file.write_text(yaml.safe_dump(p.model_dump(mode="json", by_alias=True, exclude_none=True)))

    def make(n: int, start: int) -> list[Event]:
        return [
            Event(
                id=f"e{i}",
                source="a",
                platform="http",
                author=f"u{i % 3}",
                text=f"I love this so much #day{i % 2}",
                created_at=BASE + timedelta(seconds=i),
            )
            for i in range(start, start + n)
        ]

    def produce(events: list[Event]) -> None:
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True})
        for e in events:
            producer.produce(names["raw"], key=e.key.encode(), value=e.to_json())
        assert producer.flush(30) == 0

    def count(table: str = "events") -> int:
        try:
            rows = read(location, table)
        except Exception:  # not created yet
            return 0
        return int(rows["events"].sum()) if table == "_ledger" else len(rows)

    def on_time() -> int:
        rows = read(location, "events")
        return int((~rows["late"]).sum())

    def aggregated() -> int:
        return int(read(location, "emotion_window")["events"].sum())

    env = {
        **os.environ,
        "STREAMOTION_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "STREAMOTION_MODEL_URL": model_server.url,
    }
    argv = [
        sys.executable,
        "-m",
        "streamotion_jobs.main",
        "--pipeline",
        str(spec_file),
        "--master",
        "local[1]",
        "--checkpoint",
        str(tmp_path / "ckpt"),
        "--metrics-port",
        "0",
    ]
    first, second = make(240, 0), make(60, 240)
    produce(first)
    proc = Process.start("job", argv, log_path=tmp_path / "job1.log", env=env)
    try:
        wait(lambda: count() > 0 or (proc.check_alive(), count()), 400, "the first micro-batch")
    finally:
        proc.kill()  # SIGKILL, mid-stream
    assert count() < len(first), "the job finished before it could be killed mid-stream"
    produce(second)
    proc = Process.start("job", argv, log_path=tmp_path / "job2.log", env=env)
    try:
        # the ledger row is each batch's last write; the aggregates (here every 5 s) are completed
        # when the job starts (the killed one's), every 5 s, and when no micro-batch comes any more
        wait(
            lambda: count("_ledger") == 300 or (proc.check_alive(), count(), count("_ledger")),
            600,
            "every event after the restart",
        )
        wait(
            lambda: aggregated() == on_time() or (proc.check_alive(), aggregated(), on_time()),
            120,
            "the aggregates of the last micro-batches (the idle merge)",
        )
    finally:
        proc.stop(timeout=30)
    events = read(location, "events")
    assert events["event_id"].is_unique
    assert set(events["event_id"]) == {e.key for e in first + second}
    assert events["emotion"].notna().all()
    assert_aggregates_match(location)
    ledger = read(location, "_ledger")
    assert ledger["query_id"].nunique() == 1 and ledger["events"].sum() == 300


def wait(predicate, timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last is True:
            return
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}; last: {last}")


# ------------------------------------------------------------------------------- rendering
def test_s3a_and_gs_settings_are_rendered_with_credentials_by_reference_only(shared):
    """Upstream rule (kubeflow/spark-operator v2.5.2 api/v1beta2/sparkapplication_types.go
    Dependencies.ExcludePackages, passed as spark-submit's --exclude-packages by
    internal/controller/sparkapplication/submission.go): deps.excludePackages leaves the AWS SDK
    bundle out of hadoop-aws's resolution; the upstream CRD's schema has the field."""
    from streamotion_operator.builders.spark import spark_application
    from streamotion_operator.config import OperatorConfig

    s3 = lake_pipeline(
        "s3",
        "s3a://bucket/lake",
        credentialsSecret="lake-keys",
        endpoint="http://minio:9000",
        pathStyleAccess=True,
        region="eu-west-1",
    )
    app = spark_application(s3, OperatorConfig())["spec"]
    conf = app["sparkConf"]
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert conf["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://minio:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-1"
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"] == lake.S3A_ENV_PROVIDER
    # S3A's own AWS SDK modules instead of the SDK bundle (tests/test_sinks_lake_s3.py)
    assert app["deps"] == {
        "packages": [f"org.apache.hadoop:hadoop-aws:{lake.HADOOP_VERSION}", *lake.S3A_PACKAGES[1:]],
        "excludePackages": ["software.amazon.awssdk:bundle", "io.netty:*"],
    }
    crd = yaml.safe_load(
        (shared / "crds" / "spark-operator-2.5.2" / "sparkoperator.k8s.io_sparkapplications.yaml").read_text()
    )
    (v1beta2,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta2"]
    deps = v1beta2["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["deps"]["properties"]
    for field in ("packages", "excludePackages"):
        assert (deps[field]["type"], deps[field]["items"]) == ("array", {"type": "string"})
    for role in ("driver", "executor"):  # executors write the files: both get the keys, by reference
        env = {e["name"]: e for e in app[role]["env"]}
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
            "name": "lake-keys",
            "key": "accessKeyId",
        }
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "lake-keys"
        assert all("value" not in e or not e["name"].startswith("AWS_") for e in app[role]["env"])
    wi = spark_application(lake_pipeline("s3wi", "s3a://bucket/lake"), OperatorConfig())["spec"]
    assert wi["sparkConf"]["spark.hadoop.fs.s3a.aws.credentials.provider"] == lake.S3A_WEB_IDENTITY_PROVIDER
    assert not [e for e in wi["executor"]["env"] if e["name"].startswith("AWS_")]

    gs = spark_application(
        lake_pipeline("gs", "gs://bucket/lake", credentialsSecret="gcs-key"), OperatorConfig()
    )
    spec = gs["spec"]
    assert spec["deps"] == {"jars": [lake.GCS_CONNECTOR_JAR]}
    assert (
        spec["sparkConf"]["spark.hadoop.fs.gs.impl"]
        == "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFileSystem"
    )
    assert {"name": "lake-gcs-key", "secret": {"secretName": "gcs-key"}} in spec["volumes"]
    for role in ("driver", "executor"):
        env = {e["name"]: e.get("value") for e in spec[role]["env"]}
        assert env["GOOGLE_APPLICATION_CREDENTIALS"] == f"{lake.GCS_KEY_DIR}/key.json"
        assert {"name": "lake-gcs-key", "mountPath": lake.GCS_KEY_DIR, "readOnly": True} in spec[role][
            "volumeMounts"
        ]
    local = spark_application(lake_pipeline("loc", "/data/lake"), OperatorConfig())["spec"]
    assert "deps" not in local and "spark.hadoop.fs.s3a.impl" not in local["sparkConf"]


def test_s3a_default_credential_chain_reads_the_environment_but_has_no_web_identity():
    """Upstream rule (apache/hadoop 3.4.1 core-default.xml, in pyspark 4.0.0's hadoop-client-api jar):
    fs.s3a.aws.credentials.provider's default chain has the AWS SDK's EnvironmentVariableCredentialsProvider
    (our Secret's keys as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) but no web identity provider, so
    Workload Identity (IRSA) needs the provider named explicitly, as the operator renders it."""
    import zipfile
    from xml.etree import ElementTree

    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    (api,) = jars.glob("hadoop-client-api-*.jar")
    assert api.name == f"hadoop-client-api-{lake.HADOOP_VERSION}.jar"  # hadoop-aws must match it
    with zipfile.ZipFile(api) as z:
        root = ElementTree.fromstring(z.read("core-default.xml"))
    props = {p.findtext("name"): (p.findtext("value") or "") for p in root.iter("property")}
    chain = [c.strip() for c in props["fs.s3a.aws.credentials.provider"].split(",") if c.strip()]
    assert lake.S3A_ENV_PROVIDER in chain
    assert lake.S3A_WEB_IDENTITY_PROVIDER not in chain
    assert props["fs.s3a.path.style.access"] == "false"  # S3-compatible stores need pathStyleAccess


def test_delta_release_is_the_one_built_for_the_jobs_spark():
    """Upstream rule (delta-io/delta v4.0.0 build.sbt: SPARK_MASTER_VERSION = "4.0.0", Scala 2.13): the
    pinned Delta release (PyPI delta-spark and the Maven jar) is 4.0.0 while the job runs pyspark 4.0.0."""
    from importlib.metadata import version

    import pyspark

    assert pyspark.__version__ == "4.0.0"
    assert version("delta-spark") == lake.DELTA_VERSION == "4.0.0"
    assert lake.DELTA_PACKAGE == "io.delta:delta-spark_2.13:4.0.0"
    dockerfile = (ROOT / "jobs" / "Dockerfile").read_text()
    assert f"delta-spark_2.13-{lake.DELTA_VERSION}.jar" in dockerfile
