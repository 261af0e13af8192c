"""Lake sink: Delta Lake tables (delta-spark 4.0.0, the release for Spark 4.0) under one location
(``s3a://``, ``gs://`` or a local path), written from the executors, exactly once per event.

Layout under ``spec.sinks[].lake.location``::

    events/            one row per event id, partitioned by event_date (UTC day of created_at) and source
    emotion_window/    window aggregates (sums and counts), partitioned by window_date
    hashtag_window/    (the same keys as PostgreSQL's tables: means derive from the sums)
    term_window/
    author_activity/
    dead_letters/      invalid records, keyed by topic/partition/offset
    _ledger/           one row per committed micro-batch: counts, watermark, end offsets

Exactly once, per micro-batch (:meth:`LakeSink.commit`), with Delta's idempotent writes: every write
of a batch carries the transaction identifier ``txnAppId`` = ``streamotion:<pipeline>:<query id>`` and
``txnVersion`` = the batch id; Delta records them in the table's log with the commit and skips a
later write whose version is not above the one recorded for that app id (delta-io/delta v4.0.0
docs/source/delta-streaming.md "Idempotent table writes in foreachBatch"; for MERGE through the
session's ``spark.databricks.delta.write.txnAppId`` / ``txnVersion``,
spark/.../commands/DeltaCommand.scala ``hasBeenExecuted``, MergeIntoCommand.scala). The writes run
in this order, so that a replay after a crash between any two of them completes the batch:

1. events: MERGE on event_id (insert when not matched; the batch's event days only), each inserted
   row tagged with the batch's (query_id, batch_id);
2. each aggregate table: MERGE of the sums and counts of exactly the rows step 1 inserted (read back
   by their batch tag, on time ones only: the replay of a batch reads the same rows, whether step 1
   ran in this attempt or in the crashed one);
3. dead letters: MERGE on (topic, partition, offset);
4. the ledger row, with the batch's end offsets (the job resumes from them when its checkpoint is
   gone) and its watermark (late = the event's window ended at or before it, as in PostgreSQL).

Only the driver's state (watermark, offsets, last batch per query) is read from the ledger, once, when
the sink opens. One job writes a pipeline's tables (Delta's optimistic concurrency refuses a second
writer's conflicting MERGE rather than duplicating rows).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from streamotion_jobs.sinks import US, BatchInfo, Sink

EVENTS_DDL = (
    "event_id string, id string, source string, platform string, channel string, author string, "
    "text string, clean_text string, lang string, created_at timestamp, ingested_at timestamp, url string, "
    "hashtags array<string>, terms array<string>, text_length int, emotion string, score double, "
    "scores string, sentiment string, sentiment_index double, model_version string, labels array<string>, "
    "classified_at timestamp, window_start timestamp, window_end timestamp, late boolean, "
    "kafka_topic string, kafka_partition int, kafka_offset long, query_id string, batch_id long, "
    "event_date date"
)
DEAD_LETTERS_DDL = (
    "kafka_topic string, kafka_partition int, kafka_offset long, reason string, payload string, "
    "query_id string, batch_id long, staged_at timestamp"
)
LEDGER_DDL = (
    "pipeline string, query_id string, batch_id long, events long, late_events long, dead_letters long, "
    "watermark timestamp, offsets array<struct<topic:string,partition:int,end_offset:long>>, "
    "committed_at timestamp"
)
_WINDOW = "window_date date, window_start timestamp, window_end timestamp"
# aggregate -> (DDL, key columns, sum columns); its source: aggregate_source()
AGGREGATES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "emotion_window": (
        f"{_WINDOW}, source string, channel string, lang string, emotion string, events long, "
        "sum_score double, sum_sentiment_index double, updated_at timestamp",
        ("window_start", "source", "channel", "lang", "emotion"),
        ("events", "sum_score", "sum_sentiment_index"),
    ),
    "hashtag_window": (
        f"{_WINDOW}, hashtag string, events long, updated_at timestamp",
        ("window_start", "hashtag"),
        ("events",),
    ),
    "term_window": (
        f"{_WINDOW}, lang string, term string, events long, updated_at timestamp",
        ("window_start", "lang", "term"),
        ("events",),
    ),
    "author_activity": (
        f"{_WINDOW}, author string, events long, sum_text_length long, updated_at timestamp",
        ("window_start", "author"),
        ("events", "sum_text_length"),
    ),
}
TXN_APP_ID_CONF = "spark.databricks.delta.write.txnAppId"
TXN_VERSION_CONF = "spark.databricks.delta.write.txnVersion"


def _schema(spark, ddl: str):
    return spark.createDataFrame([], ddl).schema


def _sql_date(d) -> str:
    return f"DATE'{d.isoformat()}'"


class LakeSink(Sink):
    name = "lake"

    def __init__(
        self,
        location: str,
        pipeline: str,
        spark=None,
        log=print,
        maintenance_interval_s: float = 3600.0,
        retention_hours: float = 168.0,
    ) -> None:
        self.location = location.rstrip("/")
        self.pipeline = pipeline
        self._spark = spark
        self.log = log
        self.maintenance_interval_s = maintenance_interval_s
        self.retention_hours = retention_hours
        self._state: dict | None = None
        self._staged: dict[tuple[str, int], tuple] = {}
        self._maintained_at = time.monotonic()
        self._days_written: set = set()
        self._sessions: dict = {}

    # ------------------------------------------------------------------------ tables
    def uri(self, table: str) -> str:
        return f"{self.location}/{table}"

    @property
    def spark(self):
        if self._spark is None:
            from pyspark.sql import SparkSession

            self._spark = SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
        return self._spark

    def app_id(self, query_id: str) -> str:
        return f"streamotion:{self.pipeline}:{query_id}"

    def open(self) -> None:
        """Create the tables that are missing (an empty Delta table with its schema and partitioning)
        and read the driver's state from the ledger."""
        from delta.tables import DeltaTable

        spark = self.spark
        tables = {
            "events": (EVENTS_DDL, ["event_date", "source"]),
            "dead_letters": (DEAD_LETTERS_DDL, []),
            "_ledger": (LEDGER_DDL, []),
            **{name: (ddl, ["window_date"]) for name, (ddl, _, _) in AGGREGATES.items()},
        }
        for table, (ddl, partitions) in tables.items():
            builder = (
                DeltaTable.createIfNotExists(spark).location(self.uri(table)).addColumns(_schema(spark, ddl))
            )
            if partitions:
                builder = builder.partitionedBy(*partitions)
            builder.execute()
        self._state = None
        self._load_state()

    def _load_state(self) -> dict:
        """Watermark (each batch's, at most its commit time minus the delay), furthest end offset per
        topic partition, last batch per query: one small aggregate over the ledger."""
        if self._state is not None:
            return self._state
        from pyspark.sql import functions as F

        ledger = self.spark.read.format("delta").load(self.uri("_ledger"))
        batches = {
            r["query_id"]: int(r["last"])
            for r in ledger.groupBy("query_id").agg(F.max("batch_id").alias("last")).collect()
        }
        watermark = ledger.agg(F.max("watermark")).collect()[0][0]
        offsets: dict[str, dict[int, int]] = {}
        rows = (
            ledger.select(F.explode("offsets").alias("o"))
            .groupBy("o.topic", "o.partition")
            .agg(F.max("o.end_offset").alias("end"))
            .collect()
        )
        for r in rows:
            offsets.setdefault(r["topic"], {})[int(r["partition"])] = int(r["end"])
        self._state = {
            "batches": batches,
            "watermark_us": None if watermark is None else int(watermark.timestamp() * US),
            "offsets": offsets,
        }
        return self._state

    # ------------------------------------------------------------------------ batches
    def stage(self, events, dead_letters, info: BatchInfo) -> None:
        """Nothing leaves the executors here: the batch's DataFrames (persisted by the job) are kept
        for :meth:`commit`, whose MERGE writes the parquet files from the executors."""
        self._staged[(info.query_id, info.batch_id)] = (events, dead_letters)

    def commit(self, info: BatchInfo) -> dict | None:
        staged = self._staged.pop((info.query_id, info.batch_id), None)
        if staged is None:
            raise RuntimeError(f"lake: batch {info.batch_id} of query {info.query_id} was not staged")
        state = self._load_state()
        if state["batches"].get(info.query_id, -1) >= info.batch_id:
            return None  # in the ledger: a replay of a committed batch
        events, dead = staged
        started = time.monotonic()
        prepared = self._prepare(events, info, state["watermark_us"])
        from pyspark.sql import functions as F

        summary = prepared.agg(
            F.collect_set("event_date").alias("days"), F.max("created_at").alias("latest")
        ).collect()[0]
        days, latest = sorted(summary["days"] or []), summary["latest"]
        if days:
            self._merge_events(prepared, days, info)
            inserted, late = self._merge_aggregates(days, info)
        else:
            inserted, late = 0, 0
        dead_n = self._merge_dead_letters(dead, info)
        latest_us = None if latest is None else int(latest.timestamp() * US)
        watermark_us = _watermark_after(state["watermark_us"], latest_us, info.watermark_s, info.now_us)
        self._append_ledger(info, inserted, late, dead_n, watermark_us)
        state["batches"][info.query_id] = info.batch_id
        state["watermark_us"] = watermark_us
        for topic, parts in info.offsets.items():
            known = state["offsets"].setdefault(topic, {})
            for p, o in parts.items():
                known[int(p)] = max(int(o), known.get(int(p), int(o)))
        self._days_written.update(days)
        self._maintain()
        return {
            "lake_s": time.monotonic() - started,
            "lake_inserted": inserted,
            "lake_late": late,
            "lake_dead_letters": dead_n,
        }

    def _prepare(self, events, info: BatchInfo, watermark_us: int | None):
        from pyspark.sql import functions as F

        window_us = int(info.window_s * US)
        start_us = F.floor(F.col("created_at_us") / F.lit(window_us)) * F.lit(window_us)
        late = F.lit(False) if watermark_us is None else (start_us + F.lit(window_us)) <= F.lit(watermark_us)
        ts = F.timestamp_micros
        return events.select(
            "event_id",
            "id",
            "source",
            "platform",
            "channel",
            "author",
            "text",
            "clean_text",
            "lang",
            ts("created_at_us").alias("created_at"),
            ts("ingested_at_us").alias("ingested_at"),
            "url",
            "hashtags",
            "terms",
            "text_length",
            "emotion",
            "score",
            "scores",
            "sentiment",
            "sentiment_index",
            "model_version",
            "labels",
            ts("classified_at_us").alias("classified_at"),
            ts(start_us.cast("long")).alias("window_start"),
            ts((start_us + F.lit(window_us)).cast("long")).alias("window_end"),
            late.alias("late"),
            "kafka_topic",
            "kafka_partition",
            "kafka_offset",
            F.lit(info.query_id).alias("query_id"),
            F.lit(info.batch_id).cast("long").alias("batch_id"),
            F.to_date(ts("created_at_us")).alias("event_date"),
        )

    def _idempotent(self, info: BatchInfo, write) -> None:
        """Run ``write`` (a MERGE) under the batch's transaction identifiers (the session's, reset after)."""
        conf = self.spark.conf
        conf.set(TXN_APP_ID_CONF, self.app_id(info.query_id))
        conf.set(TXN_VERSION_CONF, str(info.batch_id))
        try:
            write()
        finally:
            conf.unset(TXN_APP_ID_CONF)
            conf.unset(TXN_VERSION_CONF)

    def _merge_events(self, prepared, days, info: BatchInfo) -> None:
        from delta.tables import DeltaTable

        target = DeltaTable.forPath(self.spark, self.uri("events"))
        in_days = ", ".join(_sql_date(d) for d in days)
        condition = (
            f"t.event_date IN ({in_days}) AND t.event_date = s.event_date AND t.source = s.source "
            "AND t.event_id = s.event_id"
        )
        self._idempotent(
            info,
            lambda: (
                target.alias("t").merge(prepared.alias("s"), condition).whenNotMatchedInsertAll().execute()
            ),
        )

    def _session(self, table: str):
        """A session of its own per aggregate table (the same SparkContext): the transaction identifiers
        are session settings, so the aggregate MERGEs can run side by side."""
        if table not in self._sessions:
            self._sessions[table] = self.spark.newSession()
        return self._sessions[table]

    def _merge_aggregates(self, days, info: BatchInfo) -> tuple[int, int]:
        """The aggregates from exactly the rows this batch inserted (tagged with its query and batch),
        one MERGE per table, run in parallel (Delta commits each table on its own)."""
        from concurrent.futures import ThreadPoolExecutor

        from pyspark.sql import functions as F

        in_days = ", ".join(_sql_date(d) for d in days)
        tag = f"event_date IN ({in_days}) AND query_id = '{info.query_id}' AND batch_id = {info.batch_id}"
        new = self.spark.read.format("delta").load(self.uri("events")).where(tag)
        counts = new.agg(
            F.count(F.lit(1)).alias("n"), F.count(F.when(F.col("late"), True)).alias("late")
        ).collect()[0]
        if int(counts["n"]) > int(counts["late"]):

            def merge(table: str) -> None:
                session = self._session(table)
                on_time = session.read.format("delta").load(self.uri("events")).where(tag).where("NOT late")
                _merge_aggregate(
                    session,
                    self.uri(table),
                    table,
                    on_time,
                    in_days,
                    self.app_id(info.query_id),
                    info.batch_id,
                )

            with ThreadPoolExecutor(len(AGGREGATES), thread_name_prefix="lake-aggregates") as pool:
                list(pool.map(merge, AGGREGATES))
        return int(counts["n"]), int(counts["late"])

    def _merge_dead_letters(self, dead, info: BatchInfo) -> int:
        from delta.tables import DeltaTable
        from pyspark.sql import functions as F

        n = dead.count()
        if not n:
            return 0
        rows = dead.select(
            "kafka_topic",
            "kafka_partition",
            F.col("kafka_offset").cast("long").alias("kafka_offset"),
            F.col("error").alias("reason"),
            "payload",
            F.lit(info.query_id).alias("query_id"),
            F.lit(info.batch_id).cast("long").alias("batch_id"),
            F.current_timestamp().alias("staged_at"),
        )
        target = DeltaTable.forPath(self.spark, self.uri("dead_letters"))
        condition = (
            "t.kafka_topic = s.kafka_topic AND t.kafka_partition = s.kafka_partition "
            "AND t.kafka_offset = s.kafka_offset"
        )
        self._idempotent(
            info,
            lambda: target.alias("t").merge(rows.alias("s"), condition).whenNotMatchedInsertAll().execute(),
        )
        return n

    def _append_ledger(self, info: BatchInfo, inserted: int, late: int, dead: int, watermark_us) -> None:
        offsets = [
            (topic, int(p), int(o)) for topic, parts in sorted(info.offsets.items()) for p, o in parts.items()
        ]
        row = (
            self.pipeline,
            info.query_id,
            info.batch_id,
            inserted,
            late,
            dead,
            None if watermark_us is None else datetime.fromtimestamp(watermark_us / US, UTC),
            offsets,
            datetime.now(UTC),
        )
        (
            self.spark.createDataFrame([row], LEDGER_DDL)
            .write.format("delta")
            .mode("append")
            .option("txnAppId", self.app_id(info.query_id))
            .option("txnVersion", str(info.batch_id))
            .save(self.uri("_ledger"))
        )

    def resume_offsets(self, topic: str) -> dict[int, int] | None:
        parts = self._load_state()["offsets"].get(topic)
        return dict(parts) if parts else None

    # ------------------------------------------------------------------------ compaction, retention
    def _maintain(self, force: bool = False) -> None:
        """Every ``maintenance_interval_s``: OPTIMIZE (bin-packing) of the days written since the last run,
        VACUUM of files older than the retention that no table version needs."""
        if not force and (
            self.maintenance_interval_s <= 0
            or time.monotonic() - self._maintained_at < self.maintenance_interval_s
        ):
            return
        started = time.monotonic()
        stats = maintain(self.spark, self.location, self._days_written, self.retention_hours)
        self._maintained_at = time.monotonic()
        self._days_written = set()
        self.log(f"lake: maintenance in {time.monotonic() - started:.1f}s: {json.dumps(stats)}")


def aggregate_source(table: str, on_time):
    """The sums and counts of ``table`` over a batch's new on-time event rows."""
    from pyspark.sql import functions as F

    window = ("window_date", "window_start", "window_end")
    rows = on_time.withColumn("window_date", F.to_date("window_start"))
    n = F.count(F.lit(1)).alias("events")
    if table == "emotion_window":
        out = rows.groupBy(
            *window,
            "source",
            F.coalesce("channel", F.lit("")).alias("channel"),
            F.coalesce("lang", F.lit("")).alias("lang"),
            "emotion",
        ).agg(n, F.sum("score").alias("sum_score"), F.sum("sentiment_index").alias("sum_sentiment_index"))
    elif table == "hashtag_window":
        out = rows.select(*window, F.explode("hashtags").alias("hashtag")).groupBy(*window, "hashtag").agg(n)
    elif table == "term_window":
        out = (
            rows.select(
                *window, F.coalesce("lang", F.lit("")).alias("lang"), F.explode("terms").alias("term")
            )
            .groupBy(*window, "lang", "term")
            .agg(n)
        )
    else:
        out = (
            rows.where(F.col("author").isNotNull())
            .groupBy(*window, "author")
            .agg(n, F.sum("text_length").cast("long").alias("sum_text_length"))
        )
    return out.withColumn("updated_at", F.current_timestamp())


def _merge_aggregate(session, uri: str, table: str, on_time, in_days: str, app_id: str, version: int) -> None:
    """MERGE one aggregate table under the batch's transaction identifiers (``session``'s own settings)."""
    from delta.tables import DeltaTable

    _, keys, sums = AGGREGATES[table]
    condition = " AND ".join(
        [f"t.window_date IN ({in_days})", "t.window_date = s.window_date"] + [f"t.{k} = s.{k}" for k in keys]
    )
    updates = {c: f"t.{c} + s.{c}" for c in sums} | {"updated_at": "s.updated_at"}
    session.conf.set(TXN_APP_ID_CONF, app_id)
    session.conf.set(TXN_VERSION_CONF, str(version))
    try:
        (
            DeltaTable.forPath(session, uri)
            .alias("t")
            .merge(aggregate_source(table, on_time).alias("s"), condition)
            .whenMatchedUpdate(set=updates)
            .whenNotMatchedInsertAll()
            .execute()
        )
    finally:
        session.conf.unset(TXN_APP_ID_CONF)
        session.conf.unset(TXN_VERSION_CONF)


def maintain(spark, location: str, days, retention_hours: float) -> dict:
    """OPTIMIZE the events of ``days`` and the aggregates of those days, the ledger and dead letters
    whole; then VACUUM every table (files unused for ``retention_hours``). Returns files compacted."""
    from delta.tables import DeltaTable

    out: dict[str, int] = {}
    days = sorted(set(days))
    window_days = sorted({d for day in days for d in (day - timedelta(days=1), day)})
    for table in ("events", *AGGREGATES, "dead_letters", "_ledger"):
        target = DeltaTable.forPath(spark, f"{location.rstrip('/')}/{table}")
        optimizer = target.optimize()
        if table == "events" and days:
            optimizer = optimizer.where(f"event_date IN ({', '.join(_sql_date(d) for d in days)})")
        elif table in AGGREGATES and window_days:
            optimizer = optimizer.where(f"window_date IN ({', '.join(_sql_date(d) for d in window_days)})")
        metrics = optimizer.executeCompaction().collect()
        removed = metrics[0]["metrics"]["numFilesRemoved"] if metrics else 0
        out[table] = int(removed or 0)
        target.vacuum(retention_hours)
    return out


def _watermark_after(
    previous_us: int | None, latest_us: int | None, watermark_s: float, now_us: int
) -> int | None:
    """The watermark after a batch (as PostgreSQL's): its latest event time, no later than the batch's
    processing time, minus the delay; it never moves back; an empty batch keeps it."""
    if latest_us is None:
        return previous_us
    candidate = min(latest_us, now_us) - int(watermark_s * US)
    return candidate if previous_us is None else max(previous_us, candidate)
