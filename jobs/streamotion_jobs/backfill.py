"""Backfill and re-scoring: a batch Spark job that re-reads a time range, classifies it again with
a given model and writes one row per event and model version (``event_scores``), beside the live
classification, so two models' results can be compared side by side (``v_model_comparison``).

The events come from the sink's events table (default) or from the raw Kafka topic (within its
retention, for events no sink has yet).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from streamotion.api.models import StreamPipeline
from streamotion_jobs.config import JobConfig
from streamotion_jobs.transform import (
    CLASSIFIED_SCHEMA,
    EVENT_COLUMNS,
    PARSED_SCHEMA,
    arrow_safe,
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

    def as_dict(self) -> dict:
        return {
            "events": self.events,
            "written": self.written,
            "model_versions": self.model_versions,
            "source": self.source,
        }


def parse_time(value: str) -> datetime:
    """ISO 8601 (a date, or a date and time; UTC when no offset is given), or "now"."""
    if value == "now":
        return datetime.now(UTC)
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _events_from_kafka(spark, cfg: JobConfig, start: datetime, end: datetime) -> pd.DataFrame:
    from pyspark.sql import functions as F

    raw = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", cfg.bootstrap)
        .option("subscribe", cfg.topics["raw"])
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
        .select("key", "value", "topic", "partition", "offset")
    )
    start_us, end_us = int(start.timestamp() * 1e6), int(end.timestamp() * 1e6)
    parsed = raw.mapInPandas(parse_records, PARSED_SCHEMA).where(
        F.col("error").isNull() & (F.col("created_at_us") >= start_us) & (F.col("created_at_us") < end_us)
    )
    pdf = parsed.select(*EVENT_COLUMNS).toPandas()
    return pdf.sort_values(["kafka_partition", "kafka_offset"]).drop_duplicates("event_id")


def run_backfill(
    pipeline: StreamPipeline,
    start: datetime,
    end: datetime,
    model: str | None = None,
    source: str = "sink",
    master: str | None = None,
    spark=None,
    log: Callable[[str], None] = print,
) -> BackfillResult:
    from streamotion_jobs.job import build_sinks
    from streamotion_jobs.sinks.postgres import PostgresSink

    if end <= start:
        raise ValueError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
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
        pg = next((s for s in sinks if isinstance(s, PostgresSink)), None)
        if source == "sink" and pg is None:
            log("no PostgreSQL sink to read events from: reading the raw Kafka topic instead")
            source = "kafka"
        log(f"reading events from {start.isoformat()} to {end.isoformat()} ({source})...")
        if source == "sink":
            events = pg.read_events(start, end)
        elif source == "kafka":
            events = _events_from_kafka(spark, cfg, start, end)
        else:
            raise ValueError(f"unknown source {source!r}: expected sink or kafka")
        if events.empty:
            log("no events in that range")
            return BackfillResult(0, 0, [], source)
        log(f"classifying {len(events)} events with the model at {model_url}...")
        df = spark.createDataFrame(arrow_safe(events[EVENT_COLUMNS].copy()), schema=EVENT_SCHEMA)
        parallelism = max(1, spark.sparkContext.defaultParallelism)
        scored = (
            df.repartition(parallelism)
            .mapInPandas(
                classifier(model_url, cfg.sentiment_threshold, batch_size=cfg.model_batch_size),
                CLASSIFIED_SCHEMA,
            )
            .toPandas()
        )
        versions = sorted(set(scored["model_version"]))
        written = 0
        for sink in sinks:
            n = sink.write_scores(scored)
            log(f"{sink.name}: {n} scores written (model {', '.join(versions)})")
            written = max(written, n)
        return BackfillResult(len(events), written, versions, source)


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
