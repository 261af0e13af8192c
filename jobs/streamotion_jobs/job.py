"""The streaming job: Kafka raw topic -> parse + validate (dead letters) -> clean, hashtags, terms ->
classify (batched model calls per partition) -> sentiment -> every sink, exactly once per event.

Each micro-batch runs in ``foreachBatch``: the records are parsed and classified on the executors
(``mapInPandas``), collected to the driver (``maxEventsPerTrigger`` bounds them), and handed to
each sink, which writes them idempotently (see :mod:`streamotion_jobs.sinks`). Any failure — the
model service staying down, a sink unreachable — fails the micro-batch; :meth:`StreamingJob.run`
restarts the query from its checkpoint with backoff, which replays the same offsets.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd

from streamotion.events import DeadLetter
from streamotion_jobs.config import JobConfig
from streamotion_jobs.metrics import JobMetrics, LagMonitor
from streamotion_jobs.sinks import Batch, Sink
from streamotion_jobs.transform import PROCESSED_SCHEMA, processor


def build_sinks(cfg: JobConfig, log=print) -> list[Sink]:
    from streamotion_jobs.config import postgres_dsn

    sinks: list[Sink] = []
    for pg in cfg.postgres_sinks:
        from streamotion_jobs.sinks.postgres import PostgresSink

        sinks.append(PostgresSink(postgres_dsn(pg), schema=pg.schema_, log=log))
    for bq in cfg.bigquery_sinks:
        from streamotion_jobs.sinks.bigquery import BigQuerySink

        sinks.append(BigQuerySink(bq.project, bq.dataset, bq.location, log=log))
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
        self.lag_interval_s = lag_interval_s
        self._lag: LagMonitor | None = None
        self.query = None
        self._query_id: str | None = None
        self._query_started = threading.Event()
        self._producer = None
        self.batches_written = 0
        self.last_progress: dict = {}

    # ------------------------------------------------------------------------ the query
    def read_stream(self):
        cfg = self.cfg
        reader = (
            self.spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", cfg.bootstrap)
            .option("subscribe", cfg.topics["raw"])
            .option("startingOffsets", cfg.starting_offsets)
            .option("maxOffsetsPerTrigger", str(cfg.max_events_per_trigger))
            .option("groupIdPrefix", f"{cfg.topics['raw']}.job")
            .option("minPartitions", str(max(1, self.spark.sparkContext.defaultParallelism)))
        )
        return reader.load().select("key", "value", "topic", "partition", "offset")

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
        self.process_batch(df, int(batch_id), self._query_id or "unknown")

    # ------------------------------------------------------------------------ one micro-batch
    def process_batch(self, df, batch_id: int, query_id: str) -> Batch:
        started = time.monotonic()
        cfg = self.cfg
        fn = processor(
            cfg.model_url,
            cfg.sentiment_threshold,
            batch_size=cfg.model_batch_size,
            deadline_s=cfg.model_deadline_s,
            per_row=self.per_row_model_calls,
            max_future_skew_s=cfg.max_future_skew_s,
        )
        out = df.mapInPandas(fn, PROCESSED_SCHEMA).toPandas()
        t_processed = time.monotonic()
        is_dead = out["error"].notna()
        dead_pdf = out.loc[is_dead, ["kafka_topic", "kafka_partition", "kafka_offset", "error", "payload"]]
        dead_pdf = dead_pdf.reset_index(drop=True)
        events_pdf = out.loc[~is_dead].drop(columns=["error", "payload"]).reset_index(drop=True)
        dropped = unknown_fields(events_pdf.pop("dropped_fields"))
        if not events_pdf.empty:
            # a producer that re-sent an event: one row per event id (the first offset wins)
            events_pdf = events_pdf.sort_values(["kafka_partition", "kafka_offset"]).drop_duplicates(
                "event_id", keep="first"
            )
        batch = Batch(
            query_id=query_id,
            batch_id=batch_id,
            events=events_pdf.reset_index(drop=True),
            dead_letters=dead_pdf,
            window_s=cfg.window_s,
            watermark_s=cfg.watermark_s,
        )
        if self.dead_letter_topic and not dead_pdf.empty:
            self._publish_dead_letters(dead_pdf)
        written = [sink.name for sink in self.sinks if self._write(sink, batch)]
        if written:  # a batch every sink had written before (a replay) is not counted again
            self.metrics.batch_written(batch.events, len(dead_pdf))
            if dropped:
                self.metrics.unknown_fields_dropped(sum(dropped.values()))
                self.log(
                    f"batch {batch_id}: fields unknown to this job's contract dropped: "
                    + ", ".join(f"{name[:64]!r} ({n})" for name, n in sorted(dropped.items())[:10])
                )
        self.batches_written += 1
        batch.stats["batch_s"] = time.monotonic() - started
        batch.stats["process_s"] = t_processed - started
        if len(events_pdf) or len(dead_pdf):
            self.log(
                f"batch {batch_id}: {len(events_pdf)} events, {len(dead_pdf)} dead letters, "
                f"written to {', '.join(written) or 'no sink (already written)'} in {batch.stats['batch_s']:.2f}s "
                f"(parse and classify {batch.stats['process_s']:.2f}s)"
            )
        return batch

    def _write(self, sink: Sink, batch: Batch) -> bool:
        started = time.monotonic()
        try:
            done = sink.write(batch)
        except Exception:
            self.metrics.sink_write(sink.name, time.monotonic() - started, ok=False)
            raise
        self.metrics.sink_write(sink.name, time.monotonic() - started, ok=True)
        return done

    def _progress(self) -> dict | None:
        query = self.query
        return query.lastProgress if query is not None else None

    def _publish_dead_letters(self, dead: pd.DataFrame) -> None:
        """At least once, keyed by topic:partition:offset (the sinks' dead_letters tables are exact)."""
        from confluent_kafka import Producer

        if self._producer is None:
            self._producer = Producer(
                {"bootstrap.servers": self.cfg.bootstrap, "enable.idempotence": True, "linger.ms": 5}
            )
        errors: list[str] = []

        def report(err, _msg):
            if err is not None:
                errors.append(str(err))

        for key, value in dead_letter_messages(dead):
            self._producer.produce(self.cfg.topics["deadLetter"], key=key, value=value, on_delivery=report)
        remaining = self._producer.flush(60)
        if remaining or errors:
            raise RuntimeError(f"dead letters not delivered ({remaining} pending): {errors[:3]}")

    # ------------------------------------------------------------------------ lifecycle
    def open_sinks(self, stop: threading.Event | None = None, backoff_max_s: float = 30) -> None:
        """Create or migrate every sink's schema, retrying while a sink is unreachable."""
        delay = 1.0
        while True:
            try:
                for sink in self.sinks:
                    sink.open()
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
            query = self.start(available_now=available_now)
            self.log(f"streaming query {query.id} started (checkpoint {self.cfg.checkpoint})")
            try:
                while not stop.is_set():
                    if query.awaitTermination(0.5):
                        break
                    if query.lastProgress and query.lastProgress.get("numInputRows"):
                        delay = 1.0  # progress: the next failure starts a fresh backoff
                if stop.is_set():
                    query.stop()
                    break
                if available_now:
                    break
            except StreamingQueryException as exc:
                failures += 1
                reason = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else repr(exc)
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
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                pass


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
