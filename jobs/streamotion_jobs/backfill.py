"""Backfill and re-scoring: a batch Spark job that re-reads a time range, classifies it again with
a given model and writes one row per event and model version (``event_scores``), beside the live
classification, so two models' results can be compared side by side (``v_model_comparison``).

The events come from a sink's events table (default: PostgreSQL, else BigQuery), read by the
executors in time slices, or from the raw Kafka topic (within its retention, for events no sink has
yet), read between the offsets of the range's publish times (``startingOffsetsByTimestamp`` /
``endingOffsetsByTimestamp``), not from the earliest offset. Scores are written from the executors
into every sink (staged per partition, then committed once per sink); a re-run replaces them.
No event row passes through the driver: it handles time slices, offsets and counts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime

from streamotion.api.models import StreamPipeline
from streamotion.security.acls import job_group_prefix
from streamotion.security.clients import confluent_config, spark_kafka_options
from streamotion_jobs.config import JobConfig
from streamotion_jobs.sinks import US
from streamotion_jobs.transform import (
    CLASSIFIED_SCHEMA,
    EVENT_COLUMNS,
    PARSED_SCHEMA,
    classifier,
    parse_records,
)

EVENT_SCHEMA = PARSED_SCHEMA.rsplit(", error string", 1)[0]


@dataclass
class BackfillResult:
    events: int
    written: int
    model_versions: list[str]
    source: str
    # Kafka source: partition -> [first offset, end offset) read, and records read before the
    # created_at filter (what the timestamp bounds let through)
    kafka_offsets: dict[int, list[int]] = field(default_factory=dict)
    records_read: int = 0

    def as_dict(self) -> dict:
        return {
            "events": self.events,
            "written": self.written,
            "model_versions": self.model_versions,
            "source": self.source,
            "kafka_offsets": {str(p): r for p, r in sorted(self.kafka_offsets.items())},
            "records_read": self.records_read,
        }


def parse_time(value: str) -> datetime:
    """ISO 8601 (a date, or a date and time; UTC when no offset is given), or "now"."""
    if value == "now":
        return datetime.now(UTC)
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def kafka_time_bounds(
    topic: str, partitions: list[int], start: datetime, end: datetime, before_s: float, after_s: float
) -> tuple[str, str]:
    """The Kafka source's ``startingOffsetsByTimestamp`` and ``endingOffsetsByTimestamp`` (JSON of
    topic -> partition -> epoch milliseconds) for events created in [start, end).

    A record's Kafka timestamp is its publish time (the producers leave CreateTime to the client),
    not the event's ``created_at``: an event is published at most ``before_s`` (the pipeline's
    ``maxFutureSkew``) before its created_at, and is read when published up to ``after_s`` after
    the range's end."""
    lo = int((start.timestamp() - before_s) * 1000)
    hi = int((end.timestamp() + after_s) * 1000)
    return (
        json.dumps({topic: {str(p): lo for p in partitions}}),
        json.dumps({topic: {str(p): hi for p in partitions}}),
    )


def _partitions(bootstrap: str, topic: str) -> list[int]:
    from confluent_kafka.admin import AdminClient

    meta = AdminClient(confluent_config(bootstrap)).list_topics(topic, timeout=30)
    info = meta.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise RuntimeError(f"topic {topic} not found on {bootstrap}: {getattr(info, 'error', None)}")
    return sorted(info.partitions)


def events_from_kafka(spark, cfg: JobConfig, start: datetime, end: datetime, after_s: float | None = None):
    """(events DataFrame, {partition: [first, end)}, records read): the raw topic between the range's
    timestamp offsets, parsed on the executors and filtered to created_at in [start, end)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    topic = cfg.topics["raw"]
    after = cfg.watermark_s if after_s is None else after_s
    starting, ending = kafka_time_bounds(
        topic, _partitions(cfg.bootstrap, topic), start, end, cfg.max_future_skew_s, after
    )
    raw = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", cfg.bootstrap)
        .options(**spark_kafka_options())  # the job's own identity (security.clients)
        .option("subscribe", topic)
        .option("startingOffsetsByTimestamp", starting)
        .option("endingOffsetsByTimestamp", ending)
        # no record at or after the start time in a partition: nothing to read there (not an error)
        .option("startingOffsetsByTimestampStrategy", "latest")
        .option("groupIdPrefix", job_group_prefix(cfg.pipeline))  # the job's group ACL (security.acls)
        .load()
        .select("key", "value", "topic", "partition", "offset")
    )
    parsed = raw.mapInPandas(parse_records, PARSED_SCHEMA).persist(StorageLevel.MEMORY_AND_DISK)
    ranges = {
        int(r["p"]): [int(r["lo"]), int(r["hi"]) + 1, int(r["n"])]
        for r in parsed.groupBy(F.col("kafka_partition").alias("p"))
        .agg(F.min("kafka_offset").alias("lo"), F.max("kafka_offset").alias("hi"), F.count("*").alias("n"))
        .collect()
    }
    start_us, end_us = int(start.timestamp() * US), int(end.timestamp() * US)
    events = (
        parsed.where(
            F.col("error").isNull() & (F.col("created_at_us") >= start_us) & (F.col("created_at_us") < end_us)
        )
        .select(*EVENT_COLUMNS)
        .dropDuplicates(["event_id"])
    )
    read = sum(n for _, _, n in ranges.values())
    return events, {p: r[:2] for p, r in ranges.items()}, read


def time_slices(spark, start: datetime, end: datetime, n: int):
    """A DataFrame of ``n`` (lo_us, hi_us) slices covering [start, end), one per Spark partition."""
    lo, hi = int(start.timestamp() * US), int(end.timestamp() * US)
    n = max(1, min(n, (hi - lo) // US or 1))
    bounds = [lo + (hi - lo) * i // n for i in range(n)] + [hi]
    rows = [(bounds[i], bounds[i + 1]) for i in range(n)]
    return spark.createDataFrame(rows, "lo_us long, hi_us long").repartition(n)


def events_from_sink(spark, sink, start: datetime, end: datetime):
    """The sink's events in [start, end), read by the executors in time slices."""
    from streamotion_jobs.sinks.bigquery import BigQuerySink
    from streamotion_jobs.sinks.bigquery import events_reader as bq_reader
    from streamotion_jobs.sinks.postgres import events_reader as pg_reader

    slices = time_slices(spark, start, end, max(1, spark.sparkContext.defaultParallelism) * 2)
    if isinstance(sink, BigQuerySink):
        fn = bq_reader(sink.reader_conf())
    else:
        fn = pg_reader(sink.dsn, sink.schema, sink.connect_timeout)
    return slices.mapInPandas(fn, EVENT_SCHEMA)


def score_writers(sink):
    """(stage(scored_df, run_id), commit(run_id) -> rows) of a sink."""
    from streamotion_jobs.sinks import postgres

    if isinstance(sink, postgres.PostgresSink) and not hasattr(sink, "stage_scores"):
        return (lambda df, run: postgres.stage_scores(sink, df, run)), (
            lambda run: postgres.commit_scores(sink, run)
        )
    return sink.stage_scores, sink.commit_scores


def run_backfill(
    pipeline: StreamPipeline,
    start: datetime,
    end: datetime,
    model: str | None = None,
    source: str = "sink",
    master: str | None = None,
    spark=None,
    log: Callable[[str], None] = print,
    kafka_after_s: float | None = None,
) -> BackfillResult:
    from pyspark import StorageLevel

    from streamotion_jobs.job import build_sinks
    from streamotion_jobs.sinks.bigquery import BigQuerySink
    from streamotion_jobs.sinks.postgres import PostgresSink

    if end <= start:
        raise ValueError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    if source not in ("sink", "kafka"):
        raise ValueError(f"unknown source {source!r}: expected sink or kafka")
    cfg = JobConfig.from_pipeline(pipeline, need_checkpoint=False)
    sinks = build_sinks(cfg, log=log)
    with ExitStack() as stack:
        model_url = cfg.model_url
        if model and model.startswith(("http://", "https://")):
            model_url = model.rstrip("/")
        elif model:
            model_url = _start_model_service(stack, pipeline, model, log)
        if spark is None:
            from streamotion_jobs.spark import session

            spark = session(f"streamotion-backfill-{pipeline.name}", master=master)
            stack.callback(spark.stop)
        for sink in sinks:
            sink.open()
            stack.callback(sink.close)
        reader = next((s for s in sinks if isinstance(s, PostgresSink)), None) or next(
            (s for s in sinks if isinstance(s, BigQuerySink)), None
        )
        if source == "sink" and reader is None:
            log("no sink to read events from: reading the raw Kafka topic instead")
            source = "kafka"
        log(f"reading events from {start.isoformat()} to {end.isoformat()} ({source})...")
        offsets: dict[int, list[int]] = {}
        read = 0
        if source == "sink":
            events = events_from_sink(spark, reader, start, end)
        else:
            events, offsets, read = events_from_kafka(spark, cfg, start, end, kafka_after_s)
            log(f"kafka: {read} records read, offsets {offsets}")
        parallelism = max(1, spark.sparkContext.defaultParallelism)
        # classified once (the model is called once per event), kept on the executors for every sink
        scored = (
            events.repartition(parallelism)
            .mapInPandas(
                classifier(
                    model_url,
                    cfg.sentiment_threshold,
                    batch_size=cfg.model_batch_size,
                    max_length=cfg.model_max_length,
                ),
                CLASSIFIED_SCHEMA,
            )
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        stack.callback(scored.unpersist)
        counted = scored.groupBy("model_version").count().collect()
        total = int(sum(r["count"] for r in counted))
        versions = sorted(r["model_version"] for r in counted)
        if not total:
            log("no events in that range")
            return BackfillResult(0, 0, [], source, offsets, read)
        log(f"classified {total} events with the model at {model_url}")
        run_id = f"{uuid.uuid4().hex}"
        written = 0
        for sink in sinks:
            stage, commit = score_writers(sink)
            stage(scored, run_id)
            n = commit(run_id)
            log(f"{sink.name}: {n} scores written (model {', '.join(versions)})")
            written = max(written, n)
        return BackfillResult(total, written, versions, source, offsets, read)


def _start_model_service(stack: ExitStack, pipeline: StreamPipeline, model: str, log) -> str:
    """A local model service for ``model`` (Hugging Face id or path), for the backfill's duration."""
    try:
        from streamotion_serving.server import ServeProcess
    except ImportError as exc:
        raise RuntimeError(
            "--model NAME needs the serving component (pip install 'streamotion[serving]'), "
            "or pass the URL of a running model service"
        ) from exc
    spec = pipeline.spec.model
    server = ServeProcess(
        {
            "model": model,
            "taxonomy": spec.taxonomy,
            "max_batch_size": spec.max_batch_size,
            "batch_wait_ms": spec.batch_wait_ms,
            "max_length": spec.max_length,
        }
    )
    log(f"starting a local model service for {model}...")
    server.start()
    stack.callback(server.stop)
    return server.url
