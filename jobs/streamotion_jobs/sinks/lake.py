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

Exactly once, per micro-batch (:meth:`LakeSink.commit`), in this order, so that a replay after a crash
between any two writes completes the batch and counts nothing twice:

1. events, each row tagged with the batch's (query_id, batch_id): after a batch this process committed
   (nothing of the next can be stored yet: one writer per pipeline) the rows whose event_id is not in
   the batch's event days are found by an anti-join and appended; otherwise (the first batch after
   open or after a failure, possibly a replay) a MERGE on event_id inserts the missing ones: idempotent
   by itself, and an insert-nothing MERGE commits nothing (delta-io/delta v4.0.0
   OptimisticTransaction.scala ``commitIfNeeded``);
2. aggregates: with ``aggregate_interval_s`` 0, in the commit (the kept rows of this batch); else every
   ``aggregate_interval_s`` by a thread of the driver beside the stream (a round: the micro-batches do
   not wait for it; it reads the rows of the batches in the ledger back by their tags). Each aggregate
   table, a MERGE of the sums of the on-time rows of every batch of the query it does not have yet,
   under Delta's transaction identifiers ``txnAppId`` = ``streamotion:<pipeline>:<query
   id>`` and ``txnVersion`` = the last batch id merged: Delta records them with the commit and skips a
   later write whose version is not above the recorded one (spark/.../commands/DeltaCommand.scala
   ``hasBeenExecuted``, MergeIntoCommand.scala; the session's ``spark.databricks.delta.write.txnAppId``
   / ``txnVersion``). What each table has is read back from those records (``_txn_versions``) when the
   sink opens and after a failure, and what the ledger has but a table lacks is merged then and when
   the job stops;
3. dead letters: MERGE on (topic, partition, offset), idempotent by its key;
4. the ledger row, with the batch's end offsets (the job resumes from them when its checkpoint is
   gone) and its watermark (late = the event's window ended at or before it, as in PostgreSQL): a
   batch in the ledger is skipped whole.

The driver's state (watermark, offsets, last batch per query) is read from the ledger when the sink
opens and after a failure. One job writes a pipeline's tables (Delta's optimistic concurrency refuses
a second writer's conflicting MERGE rather than duplicating rows).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
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
# the events columns the aggregates read (aggregate_source), and the late flag
AGGREGATE_COLUMNS = (
    "window_start",
    "window_end",
    "source",
    "channel",
    "lang",
    "emotion",
    "score",
    "sentiment_index",
    "hashtags",
    "terms",
    "author",
    "text_length",
    "late",
)
TXN_APP_ID_CONF = "spark.databricks.delta.write.txnAppId"
TXN_VERSION_CONF = "spark.databricks.delta.write.txnVersion"


def _schema(spark, ddl: str):
    return spark.createDataFrame([], ddl).schema


def _sql_date(d) -> str:
    return f"DATE'{d.isoformat()}'"


def _sql_timestamp(us: int) -> str:
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))
    return f"TIMESTAMP'{t:%Y-%m-%d %H:%M:%S.%f}+00:00'"


@dataclass(frozen=True)
class Windows:
    """The windows of a set of on-time rows: their days (the target's partitions) and the first and last
    window start (microseconds): what an aggregate MERGE reads of its table. With the range, Delta skips
    the files of the day's other windows by their window_start statistics, so a MERGE does not read more
    as the day's table grows (delta-io/delta v4.0.0 commands/merge/ClassicMergeExecutor.scala filters
    the target's files by the condition's target-only predicates, ``getTargetOnlyPredicates`` in
    MergeIntoCommandBase.scala; statistics cover the first 32 columns, DataSkippingReader.scala
    ``DATA_SKIPPING_NUM_INDEXED_COLS_DEFAULT_VALUE``)."""

    days: tuple = ()
    first_us: int | None = None
    last_us: int | None = None

    @staticmethod
    def columns(on_time) -> list:
        """Aggregate expressions (over the rows, with ``on_time`` a boolean column) that :meth:`of` takes."""
        from pyspark.sql import functions as F

        start = F.when(on_time, F.col("window_start"))
        return [
            F.collect_set(F.to_date(start)).alias("window_days"),
            F.min(F.unix_micros(start)).alias("first_window_us"),
            F.max(F.unix_micros(start)).alias("last_window_us"),
        ]

    @classmethod
    def from_row(cls, row) -> Windows:
        days = tuple(sorted(d for d in row["window_days"] or () if d))
        return cls(days, row["first_window_us"], row["last_window_us"])

    def target_filter(self) -> str:
        out = _days_filter("t.window_date", self.days)
        if self.first_us is not None and self.last_us is not None:
            out += (
                f" AND t.window_start >= {_sql_timestamp(self.first_us)}"
                f" AND t.window_start <= {_sql_timestamp(self.last_us)}"
            )
        return out


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
        aggregate_interval_s: float = 60.0,
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
        self._chain: tuple[str, int] | None = None  # the batch last committed here
        self.aggregate_interval_s = aggregate_interval_s
        self._aggregated: dict[str, dict[str, int]] | None = None
        self._aggregated_at = time.monotonic()
        # _lock: a commit and the driver's state (ledger batches, watermark, offsets); _round_lock: the
        # aggregate tables and what they have (_aggregated). Taken in this order, never the other way.
        self._lock = threading.RLock()
        self._round_lock = threading.RLock()
        self._rounds: tuple[threading.Event, threading.Thread] | None = None

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
        with self._lock:
            self._state = None
            self._chain = None
            self._load_state()
        with self._round_lock:
            self._aggregated = None
        n = self.flush_aggregates()  # the rounds a crash left out (their batches are in the ledger)
        if n:
            self.log(f"lake: {n} aggregate table(s) brought up to the ledger's last batch")
        if self.aggregate_interval_s > 0 and self._rounds is None:
            stop = threading.Event()
            thread = threading.Thread(
                target=self._round_loop, args=(stop,), name="lake-aggregates", daemon=True
            )
            self._rounds = (stop, thread)
            thread.start()

    def _round_loop(self, stop: threading.Event) -> None:
        """Every ``aggregate_interval_s``, beside the stream (its micro-batches do not wait for it): merge
        into each aggregate table the batches in the ledger it lacks. A failed round is retried at the
        next interval from what the tables' own transaction records say they have."""
        tick = min(self.aggregate_interval_s, 1.0)
        while not stop.wait(tick):
            if self.aggregate_interval_s <= 0:
                return  # every micro-batch's commit merges its aggregates now
            if time.monotonic() - self._aggregated_at < self.aggregate_interval_s:
                continue
            try:
                n = self.flush_aggregates(stop)
                if n:
                    self.log(f"lake: aggregate round: {n} table(s) brought up to date")
            except Exception as exc:  # the next round (or the next start) merges them
                with self._round_lock:
                    self._aggregated = None
                    self._aggregated_at = time.monotonic()
                self.log(f"lake: aggregate round failed: {type(exc).__name__}: {exc}")

    def _ledger_batches(self) -> dict[str, int]:
        """The last committed batch per query (a copy, taken between commits)."""
        with self._lock:
            return dict(self._load_state()["batches"])

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
        with self._lock:
            return self._commit_locked(info)

    def _commit_locked(self, info: BatchInfo) -> dict | None:
        staged = self._staged.pop((info.query_id, info.batch_id), None)
        if staged is None:
            raise RuntimeError(f"lake: batch {info.batch_id} of query {info.query_id} was not staged")
        state = self._load_state()
        if state["batches"].get(info.query_id, -1) >= info.batch_id:
            return None  # in the ledger: a replay of a committed batch
        # the previous batch of this query committed here, with no failure since: nothing of this batch
        # can be in the tables yet (one writer per pipeline), so its new events are found by an anti-join
        # and appended; otherwise (the first batch after open or after a failure: possibly the replay of
        # a batch that crashed between its writes) MERGE on the event id and read back by the batch's tag
        fast = self._chain == (info.query_id, info.batch_id - 1)
        self._chain = None
        try:
            stats = self._commit(*staged, info, state, fast)
        except BaseException:
            # what was written is not known: the state and ledger (and, when this batch ran a round, what
            # the aggregate tables have) are read again
            self._state = None
            if self.aggregate_interval_s <= 0:
                with self._round_lock:
                    self._aggregated = None
            raise
        self._chain = (info.query_id, info.batch_id)
        return stats

    def _commit(self, events, dead, info: BatchInfo, state: dict, fast: bool) -> dict:
        from pyspark.sql import functions as F

        started = time.monotonic()
        steps: dict[str, float] = {}
        mark = started

        def step(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            steps[name] = round(now - mark, 3)
            mark = now

        # not kept: the summary is one cheap aggregate, and the rows are read once more, by the anti-join
        # (whose result is kept) or the MERGE; caching them costs more than that second read
        prepared = self._prepare(events, info, state["watermark_us"])
        new, windows = None, Windows()
        try:
            summary = prepared.agg(
                F.collect_set("event_date").alias("days"), F.max("created_at").alias("latest")
            ).collect()[0]
            days, latest = sorted(summary["days"] or []), summary["latest"]
            step("summary_s")
            inserted = late = 0
            if days:
                if fast:
                    new = self._append_new_events(prepared, days)
                else:
                    self._merge_events(prepared, days)
                    new = self._read_back(
                        info.query_id, info.batch_id - 1, info.batch_id, days, columns=AGGREGATE_COLUMNS
                    )
                step("events_s")
                counts = new.agg(
                    F.count(F.lit(1)).alias("n"),
                    F.count(F.when(F.col("late"), True)).alias("late"),
                    *Windows.columns(~F.col("late")),
                ).collect()[0]
                inserted, late = int(counts["n"]), int(counts["late"])
                windows = Windows.from_row(counts)
            step("counts_s")
            dead_n, rounds = self._merge_side_tables(info, dead, new, windows)
            step("aggregates_s" if rounds else "dead_letters_s")
        finally:
            if new is not None:
                new.unpersist()
        latest_us = None if latest is None else int(latest.timestamp() * US)
        watermark_us = _watermark_after(state["watermark_us"], latest_us, info.watermark_s, info.now_us)
        self._append_ledger(info, inserted, late, dead_n, watermark_us)
        step("ledger_s")
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
            "lake_aggregated": rounds,
            "lake_events_write": "append" if fast else "merge",
            "lake_steps": steps,
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

    # ------------------------------------------------------------------------ events
    def _merge_events(self, prepared, days) -> None:
        """Insert the batch's events whose id is not stored yet (the batch's event days only). A MERGE on
        the event id is idempotent by itself: a replay inserts nothing twice, and the rows an earlier
        attempt inserted keep its batch tag."""
        from delta.tables import DeltaTable

        condition = (
            f"t.{_days_filter('event_date', days)} AND t.event_date = s.event_date "
            "AND t.source = s.source AND t.event_id = s.event_id"
        )
        (
            DeltaTable.forPath(self.spark, self.uri("events"))
            .alias("t")
            .merge(prepared.alias("s"), condition)
            .whenNotMatchedInsertAll()
            .execute()
        )

    def _append_new_events(self, prepared, days):
        """The rows a MERGE would insert, in one pass and a plain commit: the batch's events whose id is
        not stored yet (an anti-join with the event days of the table's current version), kept, then
        appended. The table is read at a fixed version, so recomputing the kept rows (a lost block) gives
        the same rows after the append."""
        from pyspark import StorageLevel

        uri = self.uri("events")
        version = _snapshot(self.spark, uri).version()
        stored = (
            self.spark.read.format("delta")
            .option("versionAsOf", version)
            .load(uri)
            .where(_days_filter("event_date", days))
            .select("event_date", "source", "event_id")
        )
        keys = ["event_date", "source", "event_id"]
        new = prepared.join(stored, keys, "left_anti").select(*prepared.columns)
        new = new.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            new.write.format("delta").mode("append").save(uri)
        except BaseException:
            new.unpersist()
            raise
        return new

    def _read_back(self, query_id: str, after: int, through: int, days=None, columns=None):
        """The event rows the query's batches ``after`` < batch <= ``through`` inserted (in this attempt or
        in one that crashed after its events write: the rows carry their batch's tag), kept."""
        from pyspark import StorageLevel

        where = f"query_id = '{query_id}' AND batch_id > {after} AND batch_id <= {through}"
        if days:
            where = f"{_days_filter('event_date', days)} AND {where}"
        rows = self.spark.read.format("delta").load(self.uri("events")).where(where)
        if columns:
            rows = rows.select(*columns)
        return rows.persist(StorageLevel.MEMORY_AND_DISK)

    # ------------------------------------------------------------------------ aggregates, dead letters
    def _session(self, table: str):
        """A session of its own per table written side by side (the same SparkContext): the transaction
        identifiers of a MERGE are session settings."""
        if table not in self._sessions:
            self._sessions[table] = self.spark.newSession()
        return self._sessions[table]

    def aggregated(self) -> dict[str, dict[str, int]]:
        """Per aggregate table, the last batch merged per transaction app id: the ``txn`` actions of the
        table's current snapshot (Delta's own record, so it is right whatever crashed where). Read when
        the sink opens and after a failure; kept up to date by the merges."""
        if self._aggregated is None:
            self._aggregated = {table: _txn_versions(self.spark, self.uri(table)) for table in AGGREGATES}
        return self._aggregated

    def _merge_side_tables(self, info: BatchInfo, dead, new, windows: Windows) -> tuple[int, int]:
        """The dead letters' MERGE and, with aggregates every batch (interval 0; else the round thread
        merges them beside the stream), the aggregates' MERGEs of every batch of this query not merged
        into each table yet, side by side (``new``: this batch's inserted rows, kept, and
        ``windows`` their on-time windows: used when the batch is a table's only one pending).
        Returns (dead letters, aggregate tables merged)."""

        def dead_letters() -> int:
            return _merge_dead_letters(self._session("dead_letters"), self.uri("dead_letters"), dead, info)

        if self.aggregate_interval_s > 0:
            return dead_letters(), 0
        with self._round_lock:
            work = self._lacking({info.query_id: info.batch_id})
            sources = (
                {} if new is None else {(info.query_id, info.batch_id - 1, info.batch_id): (new, windows)}
            )
            dead_n = self._merge_rounds(work, sources, dead_letters)
            self._aggregated_at = time.monotonic()
        return dead_n, len(work)

    def _lacking(self, batches: dict[str, int]) -> list[tuple[str, str, int, int]]:
        """(table, query id, last batch the table has, last batch) for every aggregate table that lacks
        batches of a query (``batches``: the last batch per query)."""
        done = self.aggregated()
        return [
            (table, query_id, done[table].get(self.app_id(query_id), -1), last)
            for query_id, last in sorted(batches.items())
            for table in AGGREGATES
            if done[table].get(self.app_id(query_id), -1) < last
        ]

    def _merge_rounds(self, work, sources: dict, side=None) -> int:
        """The aggregate MERGEs of ``work`` (from :meth:`_lacking`), side by side with ``side`` (another
        write returning a count), the rows of each distinct batch range read once (unless in
        ``sources``). Returns what ``side`` returned (0 without it)."""
        from concurrent.futures import ThreadPoolExecutor

        read = self._shared_sources([(q, after, through) for _, q, after, through in work], sources)

        def run(item) -> int:
            if item is None:
                return side()
            table, query_id, after, through = item
            rows, windows = sources[(query_id, after, through)]
            self._merge_aggregate_range(self._session(table), table, query_id, through, rows, windows)
            return 0

        items = [*work, None] if side is not None else work
        if not items:
            return 0
        try:
            with ThreadPoolExecutor(len(items), thread_name_prefix="lake-merges") as pool:
                return sum(pool.map(run, items))
        finally:
            for rows in read:
                rows.unpersist()

    def _shared_sources(self, ranges, sources: dict) -> list:
        """Read back, once per distinct (query, after, through) not in ``sources``, the rows of those
        batches and their on-time window days (one read shared by every table that lacks the same
        batches). Returns the DataFrames read (kept: the caller unpersists them)."""
        from pyspark.sql import functions as F

        read = []
        for key in dict.fromkeys(ranges):
            if key in sources:
                continue
            rows = self._read_back(*key, columns=AGGREGATE_COLUMNS)
            read.append(rows)
            sources[key] = (rows, Windows.from_row(rows.agg(*Windows.columns(~F.col("late"))).collect()[0]))
        return read

    def _merge_aggregate_range(
        self, session, table: str, query_id: str, through: int, rows, windows: Windows
    ) -> None:
        """MERGE into ``table`` the sums of the on-time ``rows`` (the query's batches the table lacks, up
        to ``through``) under transaction version ``through``: Delta skips it when the table has that
        version or a later one for the query, so a replay adds nothing twice. Only the target's rows of
        the ``windows`` are read."""
        if windows.days:
            _merge_aggregate(
                session,
                self.uri(table),
                table,
                rows.where("NOT late"),
                windows,
                self.app_id(query_id),
                through,
            )
        self._aggregated[table][self.app_id(query_id)] = through

    def flush_aggregates(self, stop: threading.Event | None = None) -> int:
        """Merge every batch in the ledger that an aggregate table does not have yet (a round; the pending
        rounds after a crash or before a stop). Returns the tables merged (0 when ``stop`` is set)."""
        batches = self._ledger_batches()
        with self._round_lock:
            if stop is not None and stop.is_set():
                return 0
            work = self._lacking(batches)
            if work:
                self._merge_rounds(work, {})
            self._aggregated_at = time.monotonic()
        return len(work)

    def close(self) -> None:
        """A stopping job merges what the aggregates lack (after a round in progress; best effort: on a
        SIGTERM Spark may be gone already; then the next start does)."""
        if self._rounds is not None:
            stop, thread = self._rounds
            stop.set()
            thread.join(600)
            self._rounds = None
        if self._state is None or self._spark is None:
            return
        try:
            n = self.flush_aggregates()
            if n:
                self.log(f"lake: {n} aggregate table(s) brought up to the last committed batch")
        except Exception as exc:  # the next start completes them (from the ledger and the tables' txns)
            self.log(f"lake: aggregates not completed at stop: {type(exc).__name__}: {exc}")

    def _append_ledger(self, info: BatchInfo, inserted: int, late: int, dead: int, watermark_us) -> None:
        """The batch's ledger row, its last write: a replay of a batch in the ledger is skipped (the
        driver's state says so; after a failure it is read from the ledger again)."""
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
            .coalesce(1)
            .write.format("delta")
            .mode("append")
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
        with self._round_lock:  # an OPTIMIZE of an aggregate table would conflict with a round's MERGE
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


def _days_filter(column: str, days) -> str:
    return f"{column} IN ({', '.join(_sql_date(d) for d in days)})"


def _snapshot(spark, uri: str):
    """The table's current Delta snapshot (JVM object; DeltaLog.update: delta-io/delta v4.0.0
    spark/src/main/scala/org/apache/spark/sql/delta/SnapshotManagement.scala)."""
    jvm = spark._jvm
    none = jvm.scala.Option.empty()
    return jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, uri).update(
        False, none, none
    )


def _txn_versions(spark, uri: str) -> dict[str, int]:
    """The table's transaction versions by app id (Delta's ``SetTransaction`` actions of the current
    snapshot: delta-io/delta v4.0.0 spark/.../SnapshotState.scala ``transactions``, the map
    OptimisticTransaction.txnVersion reads to skip a write). Through the JVM: delta-spark has no Python
    API for it."""
    jvm = spark._jvm
    none = jvm.scala.Option.empty()
    snapshot = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, uri).update(
        False, none, none
    )
    it = snapshot.transactions().iterator()
    out: dict[str, int] = {}
    while it.hasNext():
        pair = it.next()
        out[str(pair._1())] = int(pair._2())
    return out


def _merge_aggregate(
    session, uri: str, table: str, on_time, windows: Windows, app_id: str, version: int
) -> None:
    """MERGE one aggregate table under transaction identifiers (``session``'s own settings); only the
    target's files of the ``windows`` are read."""
    from delta.tables import DeltaTable

    _, keys, sums = AGGREGATES[table]
    condition = " AND ".join(
        [windows.target_filter(), "t.window_date = s.window_date"] + [f"t.{k} = s.{k}" for k in keys]
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


def _merge_dead_letters(session, uri: str, dead, info: BatchInfo) -> int:
    """MERGE the batch's dead letters on (topic, partition, offset): idempotent by its key."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    n = dead.count() if info.dead_letters is None else info.dead_letters
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
    condition = (
        "t.kafka_topic = s.kafka_topic AND t.kafka_partition = s.kafka_partition "
        "AND t.kafka_offset = s.kafka_offset"
    )
    (
        DeltaTable.forPath(session, uri)
        .alias("t")
        .merge(rows.alias("s"), condition)
        .whenNotMatchedInsertAll()
        .execute()
    )
    return n


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
            optimizer = optimizer.where(_days_filter("event_date", days))
        elif table in AGGREGATES and window_days:
            optimizer = optimizer.where(_days_filter("window_date", window_days))
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
