"""The streaming job: Kafka raw topic -> parse + validate (dead letters) -> clean, hashtags, terms ->
classify (batched model calls per partition) -> sentiment -> every sink, exactly once per event.

Each micro-batch runs in ``foreachBatch`` and stays distributed: the records are parsed and
classified on the executors (``mapInPandas``, persisted for the batch), split into events
(deduplicated by event id with a window function) and dead letters, the dead letters published to
Kafka from the executors, and each sink stages its rows from the executors before the driver commits
the batch (see :mod:`streamotion_jobs.sinks`). The driver handles only counts, offsets and the
ledger. Any failure — the model service staying down, a sink unreachable — fails the micro-batch;
:meth:`StreamingJob.run` restarts the query from its checkpoint with backoff, which replays the same
offsets. A new query (no checkpoint offsets) starts from the sinks' ledger offsets.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd

from streamotion.events import DeadLetter
from streamotion.security.acls import job_group_prefix
from streamotion.security.clients import confluent_config, spark_kafka_options
from streamotion_jobs.config import JobConfig
from streamotion_jobs.metrics import JobMetrics, LagMonitor
from streamotion_jobs.report import SinkReport
from streamotion_jobs.sinks import BatchInfo, Sink
from streamotion_jobs.transform import CLASSIFIED_SCHEMA, PROCESSED_SCHEMA, now_us, processor


def build_sinks(cfg: JobConfig, log=print) -> list[Sink]:
    """The pipeline's sinks in ``spec.sinks`` order (the job's report to the operator is by index)."""
    from streamotion_jobs.config import postgres_dsn

    pipeline = f"{cfg.pipeline.namespace}/{cfg.pipeline.name}"
    sinks: list[Sink] = []
    for spec in cfg.pipeline.spec.sinks:
        if spec.postgres is not None:
            from streamotion_jobs.sinks.postgres import PostgresSink

            pg = spec.postgres
            sinks.append(PostgresSink(postgres_dsn(pg), schema=pg.schema_, log=log))
        elif spec.bigquery is not None:
            from streamotion_jobs.sinks.bigquery import BigQuerySink

            bq = spec.bigquery
            # the ledger's offsets scoped to this pipeline (a dataset may hold several pipelines')
            sinks.append(BigQuerySink(bq.project, bq.dataset, bq.location, log=log, pipeline=pipeline))
        elif spec.lake is not None:
            from streamotion_jobs.config import parse_duration
            from streamotion_jobs.sinks.lake import LakeSink

            lk = spec.lake
            sinks.append(
                LakeSink(
                    lk.location,
                    pipeline,
                    log=log,
                    maintenance_interval_s=parse_duration(lk.maintenance_interval),
                    retention_hours=parse_duration(lk.retention) / 3600,
                    aggregate_interval_s=parse_duration(lk.aggregate_interval),
                )
            )
    return sinks


def dead_letter_messages(dead: pd.DataFrame) -> list[tuple[str, bytes]]:
    """(key, DeadLetter JSON) per invalid record; the key topic:partition:offset lets readers dedup."""
    out = []
    for r in dead.to_dict("records"):
        payload = r.get("payload")
        letter = DeadLetter(
            reason=str(r["error"]),
            stage="job",
            payload=""
            if payload is None or (isinstance(payload, float) and payload != payload)
            else str(payload),
            topic=r["kafka_topic"],
            partition=int(r["kafka_partition"]),
            offset=int(r["kafka_offset"]),
        )
        out.append(
            (
                f"{r['kafka_topic']}:{int(r['kafka_partition'])}:{int(r['kafka_offset'])}",
                letter.model_dump_json().encode(),
            )
        )
    return out


class StreamingJob:
    def __init__(
        self,
        cfg: JobConfig,
        spark,
        sinks: list[Sink] | None = None,
        log: Callable[[str], None] = print,
        dead_letter_topic: bool = True,
        per_row_model_calls: bool = False,
        metrics: JobMetrics | None = None,
        lag_interval_s: float | None = 5.0,
    ) -> None:
        self.cfg = cfg
        self.spark = spark
        self.log = log
        self.sinks = sinks if sinks is not None else build_sinks(cfg, log=log)
        self.dead_letter_topic = dead_letter_topic
        self.per_row_model_calls = per_row_model_calls  # the ancestors' pattern (benchmark only)
        # streamotion_job_* (served by main.py); counted here whether served or not
        self.metrics = metrics or JobMetrics(cfg.pipeline.namespace, cfg.pipeline.name, log=log)
        self.metrics.sink_names(sink.name for sink in self.sinks)
        # the sinks' state for the operator's SinksReady, by index in spec.sinks (build_sinks' order);
        # written to the <pipeline>-job-report ConfigMap in a pod, a no-op elsewhere
        self.report = SinkReport.for_pipeline(cfg.pipeline, [sink.name for sink in self.sinks])
        self.lag_interval_s = lag_interval_s
        self._lag: LagMonitor | None = None
        self.query = None
        self._query_id: str | None = None
        self._query_started = threading.Event()
        self.batches_written = 0
        self.last_progress: dict = {}

    # ------------------------------------------------------------------------ the query
    def read_stream(self):
        cfg = self.cfg
        reader = (
            self.spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", cfg.bootstrap)
            .options(**spark_kafka_options())  # the job's own identity (security.clients)
            .option("subscribe", cfg.topics["raw"])
            .option("startingOffsets", self.starting_offsets())
            .option("maxOffsetsPerTrigger", str(cfg.max_events_per_trigger))
            .option("groupIdPrefix", job_group_prefix(cfg.pipeline))  # the job's group ACL (security.acls)
            .option("minPartitions", str(max(1, self.spark.sparkContext.defaultParallelism)))
        )
        return reader.load().select("key", "value", "topic", "partition", "offset")

    def starting_offsets(self) -> str:
        """Where a NEW query starts (Spark ignores it when the checkpoint has offsets): the sinks'
        ledger offsets when they have any, so a job whose checkpoint is gone neither re-classifies
        ledgered batches (``earliest``) nor skips the gap (``latest``); else ``processing.startingOffsets``."""
        if self.checkpoint_has_offsets():
            return self.cfg.starting_offsets
        topic = self.cfg.topics["raw"]
        ledgers = [o for o in (sink.resume_offsets(topic) for sink in self.sinks) if o]
        if not ledgers:
            return self.cfg.starting_offsets
        doc = resume_position(ledgers, topic_end_offsets(self.cfg.bootstrap, topic), log=self.log)
        self.log(
            f"starting offsets of a new query from the ledger (unused when the checkpoint has offsets): {doc}"
        )
        return json.dumps({topic: doc})

    def check_topic(self) -> str | None:
        """Whether the raw topic ends before offsets the sinks' ledgers recorded: only a topic deleted
        and created again (with fewer records since) does that, so the job sees it without the
        operator (a topic reached through bootstrapServers, `streamotion local`). Reports it
        (TopicRecreated on the pipeline) and returns the message; None when the topic is not behind
        or no sink keeps a ledger."""
        topic = self.cfg.topics["raw"]
        ledgers = [o for o in (sink.resume_offsets(topic) for sink in self.sinks) if o]
        if not ledgers:
            return None
        behind = topic_behind(ledgers, topic_end_offsets(self.cfg.bootstrap, topic))
        if not behind:
            return None
        message = (
            f"topic {topic} ends before offsets the sinks recorded ("
            + ", ".join(
                f"partition {p}: recorded {a}, the topic ends at {b}" for p, (a, b) in sorted(behind.items())
            )
            + "): it was deleted and created again"
        )
        self.report.topic_recreated(message)
        self.log(message)
        return message

    def checkpoint_has_offsets(self) -> bool:
        """Whether the checkpoint has an offset log (Hadoop's file system: local, s3a://, gs://...)."""
        jvm = self.spark.sparkContext._jvm
        path = jvm.org.apache.hadoop.fs.Path(self.cfg.checkpoint.rstrip("/") + "/offsets")
        fs = path.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration())
        return bool(fs.exists(path)) and len(fs.listStatus(path)) > 0

    def start(self, available_now: bool = False):
        writer = self.read_stream().writeStream.foreachBatch(self._on_batch)
        writer = writer.option("checkpointLocation", self.cfg.checkpoint).queryName(
            f"streamotion-{self.cfg.pipeline.namespace}-{self.cfg.pipeline.name}"
        )
        if available_now:
            writer = writer.trigger(availableNow=True)
        else:
            writer = writer.trigger(processingTime=f"{int(self.cfg.trigger_s * 1000)} milliseconds")
        self._query_started.clear()
        self.query = writer.start()
        self._query_id = str(self.query.id)  # stable across restarts from the same checkpoint
        self._query_started.set()
        return self.query

    def _on_batch(self, df, batch_id: int) -> None:
        self._query_started.wait(60)
        if not self._query_id:  # never written under a made-up id: the batch fails and is retried
            raise RuntimeError(f"micro-batch {batch_id}: the streaming query's id is not known")
        self.process_batch(df, int(batch_id), self._query_id)

    # ------------------------------------------------------------------------ one micro-batch
    def process_batch(self, df, batch_id: int, query_id: str) -> dict:
        """One micro-batch, distributed: records parsed and classified on the executors (kept for the
        batch), dead letters published and every sink staged from the executors, then each sink's
        commit on the driver. The driver receives only counts and offsets."""
        from pyspark import StorageLevel

        started = time.monotonic()
        cfg = self.cfg
        fn = processor(
            cfg.model_url,
            cfg.sentiment_threshold,
            batch_size=cfg.model_batch_size,
            deadline_s=cfg.model_deadline_s,
            per_row=self.per_row_model_calls,
            max_future_skew_s=cfg.max_future_skew_s,
            max_length=cfg.model_max_length,
        )
        processed = df.mapInPandas(fn, PROCESSED_SCHEMA).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            counts = batch_counts(processed)
            t_processed = time.monotonic()
            info = BatchInfo(
                pipeline=f"{cfg.pipeline.namespace}/{cfg.pipeline.name}",
                query_id=query_id,
                batch_id=batch_id,
                window_s=cfg.window_s,
                watermark_s=cfg.watermark_s,
                now_us=now_us(),
                offsets=counts["offsets"],
                dead_letters=counts["dead_letters"],
            )
            events, dead = split_batch(processed)
            if self.dead_letter_topic and counts["dead_letters"]:
                publish_dead_letters(dead, cfg.bootstrap, cfg.topics["deadLetter"])
            written = [sink.name for sink in self.sinks if self._write(sink, events, dead, info)]
            distinct = 0
            if written:  # a batch every sink had written before (a replay) is not counted again
                distinct, latency = latency_histogram(events, time.time())
                self.metrics.batch_counted(distinct, counts["dead_letters"], latency)
                if counts["dropped_fields"]:
                    self.metrics.unknown_fields_dropped(counts["dropped_fields"])
                    names = dropped_field_names(processed)
                    self.log(
                        f"batch {batch_id}: fields unknown to this job's contract dropped: "
                        + ", ".join(f"{name[:64]!r} ({n})" for name, n in names)
                    )
        finally:
            processed.unpersist()
        self.batches_written += 1
        stats = {
            "batch_s": time.monotonic() - started,
            "process_s": t_processed - started,
            "records": counts["events"] + counts["dead_letters"],
        }
        if counts["events"] or counts["dead_letters"]:
            self.log(
                f"batch {batch_id}: {counts['events']} valid records ({distinct} distinct events written), "
                f"{counts['dead_letters']} dead letters, written to "
                f"{', '.join(written) or 'no sink (already written)'} in {stats['batch_s']:.2f}s "
                f"(parse and classify {stats['process_s']:.2f}s)"
            )
        return stats

    def _write(self, sink: Sink, events, dead, info: BatchInfo) -> bool:
        started = time.monotonic()
        try:
            sink.stage(events, dead, info)
            done = sink.commit(info) is not None
        except Exception as exc:
            self.metrics.sink_write(sink.name, time.monotonic() - started, ok=False)
            self._report_sink(sink, exc)
            raise
        self.metrics.sink_write(sink.name, time.monotonic() - started, ok=True)
        self._report_sink(sink)
        return done

    def _report_sink(self, sink: Sink, error: BaseException | None = None) -> None:
        """Tell the operator whether ``sink`` works (by its index; never raises)."""
        index = next((i for i, s in enumerate(self.sinks) if s is sink), None)
        if index is None:
            return
        try:
            if error is None:
                self.report.ok(index)
            else:
                self.report.failing(index, error)
        except Exception as exc:  # the job never stops for its report
            self.log(f"sinks report not updated: {type(exc).__name__}: {exc}")

    def _progress(self) -> dict | None:
        query = self.query
        return query.lastProgress if query is not None else None

    # ------------------------------------------------------------------------ lifecycle
    def open_sinks(self, stop: threading.Event | None = None, backoff_max_s: float = 30) -> None:
        """Create or migrate every sink's schema, retrying while a sink is unreachable."""
        delay = 1.0
        while True:
            try:
                for sink in self.sinks:
                    try:
                        sink.open()
                    except Exception as exc:
                        self._report_sink(sink, exc)
                        raise
                    self._report_sink(sink)
                return
            except Exception as exc:
                if stop is not None and stop.is_set():
                    raise
                self.log(f"sinks not ready ({type(exc).__name__}: {exc}); retrying in {delay:.0f}s")
                for sink in self.sinks:
                    try:
                        sink.close()
                    except Exception:
                        pass
                time.sleep(delay)
                delay = min(delay * 2, backoff_max_s)

    def run(
        self,
        stop: threading.Event | None = None,
        available_now: bool = False,
        max_failures: int | None = None,
        backoff_max_s: float = 30,
    ) -> int:
        """Run until ``stop`` is set (or, with ``available_now``, until caught up); a failed query is
        restarted from its checkpoint with exponential backoff. Returns the number of restarts."""
        from pyspark.errors import StreamingQueryException

        stop = stop or threading.Event()
        self.open_sinks(stop)
        if self.lag_interval_s and self._lag is None:
            self._lag = LagMonitor(
                self.metrics, self.cfg.bootstrap, self.cfg.topics["raw"], self._progress, self.lag_interval_s
            ).start()
        failures = 0
        delay = 1.0
        while not stop.is_set():
            try:
                try:
                    recreated = self.check_topic()
                except Exception as exc:  # the check must not keep a query from starting
                    recreated = None
                    self.log(f"topic check skipped: {type(exc).__name__}: {exc}")
                if recreated and self.checkpoint_has_offsets():
                    # Spark would stop every batch ("offset was changed"): wait for a fresh checkpoint
                    raise TopicRecreatedError(
                        f"{recreated}; the checkpoint points past its end too: give the job a fresh "
                        "checkpoint (see Troubleshooting, TopicRecreated)"
                    )
                query = self.start(available_now=available_now)
            except Exception as exc:  # e.g. the ledger's offsets unreadable (a sink down): try again
                failures += 1
                self.log(
                    f"streaming query not started, retrying in {delay:.0f}s: {type(exc).__name__}: {exc}"
                )
                if max_failures is not None and failures > max_failures:
                    self.close()
                    raise
                if stop.wait(delay):
                    break
                delay = min(delay * 2, backoff_max_s)
                continue
            self.log(f"streaming query {query.id} started (checkpoint {self.cfg.checkpoint})")
            try:
                while not stop.is_set():
                    if query.awaitTermination(0.5):
                        break
                    if query.lastProgress and query.lastProgress.get("numInputRows"):
                        delay = 1.0  # progress: the next failure starts a fresh backoff
                        self.report.query_progressing()  # clears a reported topic problem
                if stop.is_set():
                    query.stop()
                    break
                if available_now:
                    break
            except StreamingQueryException as exc:
                failures += 1
                reason = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else repr(exc)
                try:  # "Partition X's offset was changed from A to B": the operator says TopicRecreated
                    self.report.query_failed(exc)
                except Exception as err:
                    self.log(f"query report not updated: {type(err).__name__}: {err}")
                self.log(f"micro-batch failed, restarting from the checkpoint in {delay:.0f}s: {reason}")
                if max_failures is not None and failures > max_failures:
                    self.close()
                    raise
                if stop.wait(delay):
                    break
                delay = min(delay * 2, backoff_max_s)
        self.close()
        return failures

    def close(self) -> None:
        if self._lag is not None:
            self._lag.stop()
            self._lag = None
        if self.query is not None and self.query.isActive:
            self.query.stop()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                pass


# ---------------------------------------------------------------------------- the batch's Spark side
DEAD_LETTER_COLUMNS = ["kafka_topic", "kafka_partition", "kafka_offset", "error", "payload"]
EVENT_COLUMNS = [c.split()[0] for c in CLASSIFIED_SCHEMA.split(", ")]


def batch_counts(processed) -> dict:
    """One small aggregate per micro-batch: valid records, dead letters, unknown fields dropped, and
    the end offset (last offset + 1) of every topic partition the batch read."""
    from pyspark.sql import functions as F

    ok = F.col("error").isNull()
    rows = (
        processed.groupBy("kafka_topic", "kafka_partition")
        .agg(
            F.max("kafka_offset").alias("last"),
            F.count(F.when(ok, True)).alias("events"),
            F.count(F.when(~ok, True)).alias("dead"),
            F.sum(F.when(ok, F.size("dropped_fields")).otherwise(0)).alias("dropped"),
        )
        .collect()
    )
    offsets: dict[str, dict[int, int]] = {}
    for r in rows:
        offsets.setdefault(r["kafka_topic"], {})[int(r["kafka_partition"])] = int(r["last"]) + 1
    return {
        "offsets": offsets,
        "events": sum(int(r["events"]) for r in rows),
        "dead_letters": sum(int(r["dead"]) for r in rows),
        "dropped_fields": sum(int(r["dropped"] or 0) for r in rows),
    }


def split_batch(processed):
    """(events, dead letters) of a processed batch, as DataFrames: one event row per event id (the
    first Kafka partition/offset wins: a producer that re-sent an event)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    first = Window.partitionBy("event_id").orderBy("kafka_partition", "kafka_offset")
    events = (
        processed.where(F.col("error").isNull())
        .withColumn("_n", F.row_number().over(first))
        .where(F.col("_n") == 1)
        .select(*EVENT_COLUMNS)
    )
    dead = processed.where(F.col("error").isNotNull()).select(*DEAD_LETTER_COLUMNS)
    return events, dead


def latency_histogram(events, now: float) -> tuple[int, list[tuple[int, int, float]]]:
    """(events, [(bucket index, observations, sum of seconds)]) of the end-to-end latency (from
    ``ingested_at``, else ``created_at``, to ``now``), bucketed by Spark (metrics.LATENCY_BUCKETS)."""
    from pyspark.sql import functions as F

    from streamotion_jobs.metrics import LATENCY_BUCKETS

    since = F.coalesce(F.col("ingested_at_us"), F.col("created_at_us"))
    seconds = F.greatest(F.lit(0.0), (F.lit(int(now * 1_000_000)) - since) / F.lit(1_000_000.0))
    bucket = F.lit(len(LATENCY_BUCKETS))
    for index in reversed(range(len(LATENCY_BUCKETS))):
        bucket = F.when(seconds <= LATENCY_BUCKETS[index], index).otherwise(bucket)
    rows = (
        events.where(since.isNotNull())
        .select(bucket.alias("b"), seconds.alias("s"))
        .groupBy("b")
        .agg(F.count(F.lit(1)).alias("n"), F.sum("s").alias("total"))
        .collect()
    )
    out = [(int(r["b"]), int(r["n"]), float(r["total"])) for r in rows]
    return sum(n for _, n, _ in out), out


def dropped_field_names(processed, limit: int = 10) -> list[tuple[str, int]]:
    """The most frequent unknown field names of the batch (for the log; a small collect)."""
    from pyspark.sql import functions as F

    rows = (
        processed.where(F.col("error").isNull())
        .select(F.explode("dropped_fields").alias("name"))
        .groupBy("name")
        .count()
        .orderBy(F.desc("count"), "name")
        .limit(limit)
        .collect()
    )
    return [(str(r["name"]), int(r["count"])) for r in rows]


def dead_letter_publisher(bootstrap: str, topic: str):
    """The ``foreachPartition`` function that publishes a partition's dead letters from its executor:
    an idempotent producer, keyed topic:partition:offset (at least once; readers dedup by key). A
    delivery failure fails the task, hence the micro-batch, which is retried."""

    def publish(rows) -> None:
        producer = None
        errors: list[str] = []

        def report(err, _msg):
            if err is not None:
                errors.append(str(err))

        chunk: list[dict] = []
        for row in rows:
            chunk.append(row.asDict())
            if len(chunk) >= 1000:
                producer = producer or _producer(bootstrap)
                _produce(producer, topic, chunk, report)
                chunk = []
        if chunk:
            producer = producer or _producer(bootstrap)
            _produce(producer, topic, chunk, report)
        if producer is None:
            return
        remaining = producer.flush(60)
        if remaining or errors:
            raise RuntimeError(f"dead letters not delivered to {topic} ({remaining} pending): {errors[:3]}")

    return publish


def _producer(bootstrap: str):
    from confluent_kafka import Producer

    return Producer({**confluent_config(bootstrap), "enable.idempotence": True, "linger.ms": 5})


def _produce(producer, topic: str, rows: list[dict], report) -> None:
    for key, value in dead_letter_messages(pd.DataFrame(rows, columns=DEAD_LETTER_COLUMNS)):
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=report)
                break
            except BufferError:  # the local queue is full: deliver some first
                producer.poll(0.5)
        producer.poll(0)


def publish_dead_letters(dead, bootstrap: str, topic: str) -> None:
    dead.foreachPartition(dead_letter_publisher(bootstrap, topic))


def topic_end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Every partition of ``topic`` and its end offset (the next offset to be written)."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    admin = AdminClient(confluent_config(bootstrap))
    meta = admin.list_topics(topic, timeout=15).topics.get(topic)
    if meta is None or meta.error is not None:
        raise RuntimeError(f"topic {topic}: {meta.error if meta else 'not found'}")
    wanted = {TopicPartition(topic, p): OffsetSpec.latest() for p in meta.partitions}
    futures = admin.list_offsets(wanted, request_timeout=15)
    return {tp.partition: int(f.result(timeout=30).offset) for tp, f in futures.items()}


class TopicRecreatedError(RuntimeError):
    """The raw topic ends before offsets the job had read and its checkpoint points past the end."""


def topic_behind(ledgers: list[dict[int, int]], ends: dict[int, int]) -> dict[int, tuple[int, int]]:
    """{partition: (highest ledger offset, end offset)} where a ledger recorded an offset past the
    topic's end offset: a topic's end offset never goes back (retention and deleted records move its
    start), so that partition belongs to a topic created again since."""
    out = {}
    for p, end in ends.items():
        known = [ledger[p] for ledger in ledgers if p in ledger]
        if known and max(known) > end:
            out[p] = (max(known), end)
    return out


def resume_position(
    ledgers: list[dict[int, int]],
    partitions: list[int] | dict[int, int],
    log: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Spark's ``startingOffsets`` for one topic from the sinks' ledgers: per partition the LOWEST end
    offset any sink recorded (a sink behind the others misses nothing; the others skip what they have
    by event id); a partition no ledger knows (added since) from its earliest offset (-2). Spark wants
    every partition of the topic in specific offsets (apache/spark v4.0.0 connector/kafka-0-10-sql
    KafkaOffsetReaderAdmin.fetchSpecificOffsets asserts "If startingOffsets contains specific offsets,
    you must specify all TopicPartitions. Use -1 for latest, -2 for earliest").

    With ``partitions`` as {partition: end offset}: a partition where any ledger's offset lies past
    the topic's end offset belongs to an older topic of the same name (a topic created again starts
    at offset 0; a topic's end offset never goes back otherwise): it is read from its earliest offset
    (-2), and ``log`` says so; the sinks skip by event id whatever they already have. Started at the
    ledger's offset instead, the query's first micro-batch would fail: Spark reports data loss when a
    partition's end is below its start (KafkaOffsetReaderAdmin.getOffsetRangesFromResolvedOffsets,
    "Partition <tp>'s offset was changed from <from> to <until>", KAFKA_DATA_LOSS.PARTITION_OFFSET_CHANGED
    with failOnDataLoss on, its default). A recreated topic that has already grown past the ledger's
    offsets is not seen here: the operator's topic-id check (TopicRecreated) is what tells."""
    ends = partitions if isinstance(partitions, dict) else {}
    out: dict[str, int] = {}
    for p in sorted(partitions):
        known = [ledger[p] for ledger in ledgers if p in ledger]
        if known and p in ends and max(known) > ends[p]:
            if log is not None:
                log(
                    f"partition {p}: the ledger's offset {max(known)} lies past the topic's end offset "
                    f"{ends[p]} (the topic was created again): reading it from its earliest offset"
                )
            out[str(p)] = -2
            continue
        out[str(p)] = min(known) if known else -2
    return out


def unknown_fields(column) -> dict[str, int]:
    """How often each unknown field was dropped, over a batch's ``dropped_fields`` lists."""
    counts: dict[str, int] = {}
    for names in column:
        if names is None or isinstance(names, float):
            continue
        for name in names:
            counts[str(name)] = counts.get(str(name), 0) + 1
    return counts


def utcnow_iso() -> str:
    return datetime.now(UTC).isoformat()


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
