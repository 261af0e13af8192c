"""The streaming job's own Prometheus metrics (``streamotion_job_*``), served by the driver.

What the dashboards (``streamotion.dashboards.queries``) and the operator's alert rules query, every
series labelled ``namespace`` and ``pipeline``:

* ``streamotion_job_consumer_lag`` (gauge): messages on the raw topic past the job's position
  (Kafka end offsets minus the offsets of the last completed micro-batch, summed over partitions);
* ``streamotion_job_events_total`` / ``streamotion_job_dead_letters_total`` (counters): classified
  events and dead letters of each micro-batch the sinks wrote (a replayed batch the sinks had already
  written is not counted again);
* ``streamotion_job_sink_write_seconds{sink}`` (histogram): one micro-batch's write, per sink;
* ``streamotion_job_sink_errors_total{sink}`` (counter): failed writes, per sink;
* ``streamotion_job_end_to_end_latency_seconds`` (histogram): from the event's ingestion by a
  producer (``ingested_at``; ``created_at`` when absent) to its row written, one observation per event;
* ``streamotion_job_unknown_fields_total`` (counter): fields of written events that this job's event
  contract does not know (a newer producer's), dropped (names in the job's log, not in labels).

Each job owns a registry (a test process may run several jobs); a metrics failure is logged, never
raised into a micro-batch.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector

LABELS = ("namespace", "pipeline")
SINK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400)
US = 1_000_000


class JobMetrics:
    """The metric children of one pipeline's job, in their own registry."""

    def __init__(self, namespace: str, pipeline: str, log: Callable[[str], None] = print) -> None:
        self.log = log
        self.labels = (namespace, pipeline)
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        r = self.registry
        self._lag = Gauge(
            "streamotion_job_consumer_lag",
            "Messages on the raw topic the job has not processed yet, summed over partitions.",
            LABELS,
            registry=r,
        )
        self._events = Counter(
            "streamotion_job_events", "Classified events written to the sinks.", LABELS, registry=r
        )
        self._dead = Counter(
            "streamotion_job_dead_letters", "Invalid records written as dead letters.", LABELS, registry=r
        )
        self._sink_write = Histogram(
            "streamotion_job_sink_write_seconds",
            "Duration of one micro-batch's write, per sink.",
            (*LABELS, "sink"),
            buckets=SINK_BUCKETS,
            registry=r,
        )
        self._sink_errors = Counter(
            "streamotion_job_sink_errors",
            "Failed micro-batch writes, per sink.",
            (*LABELS, "sink"),
            registry=r,
        )
        self._latency = Histogram(
            "streamotion_job_end_to_end_latency_seconds",
            "From the event's ingestion by a producer to its row written by the job.",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._unknown = Counter(
            "streamotion_job_unknown_fields",
            "Fields of written events unknown to the job's event contract (a newer producer's), dropped.",
            LABELS,
            registry=r,
        )
        self.lag = self._lag.labels(*self.labels)
        self.unknown_fields = self._unknown.labels(*self.labels)
        self.events = self._events.labels(*self.labels)
        self.dead_letters = self._dead.labels(*self.labels)
        self.latency = self._latency.labels(*self.labels)
        self._server = None
        self._failures = 0

    # ------------------------------------------------------------------------ serving
    def serve(self, port: int, host: str = "127.0.0.1") -> int | None:
        """Expose /metrics on host:port (0: an ephemeral port); returns the bound port, None on failure."""
        from prometheus_client import start_http_server

        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            self.log(f"metrics: not served on {host}:{port} ({exc}); the job runs without them")
            return None
        bound = self._server.server_address[1]
        self.log(f"metrics: http://{host}:{bound}/metrics")
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ------------------------------------------------------------------------ updates (never raise)
    def safely(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # a metrics problem never fails a micro-batch
            self._failures += 1
            if self._failures <= 5:
                self.log(f"metrics: {what} not recorded ({type(exc).__name__}: {exc})")

    def sink_write(self, sink: str, seconds: float, ok: bool) -> None:
        def update():
            self._sink_write.labels(*self.labels, sink).observe(seconds)
            if not ok:
                self._sink_errors.labels(*self.labels, sink).inc()

        self.safely(f"{sink} write", update)

    def sink_names(self, names: Iterable[str]) -> None:
        """Create every sink's children up front, so a sink that never failed reports 0 errors."""

        def update():
            for name in names:
                self._sink_errors.labels(*self.labels, name)
                self._sink_write.labels(*self.labels, name)

        self.safely("sinks", update)

    def unknown_fields_dropped(self, count: int) -> None:
        self.safely("unknown fields", lambda: self.unknown_fields.inc(count))

    def batch_counted(
        self, events: int, dead_letters: int, latency: Iterable[tuple[int, int, float]] = ()
    ) -> None:
        """Count one written micro-batch from Spark's aggregates (no event row on the driver):
        ``latency`` holds (bucket index in LATENCY_BUCKETS, +Inf last; observations; sum of seconds)."""

        def update():
            self.events.inc(events)
            self.dead_letters.inc(dead_letters)
            for index, n, total in latency:
                # what prometheus_client's Histogram.observe does, for n observations of one bucket
                self.latency._buckets[index].inc(n)
                self.latency._sum.inc(total)

        self.safely("batch", update)

    def batch_written(self, events, dead_letters: int, now: float | None = None) -> None:
        """Count one written micro-batch: ``events`` is the batch's event DataFrame."""

        def update():
            self.events.inc(len(events))
            self.dead_letters.inc(dead_letters)
            if len(events):
                at = time.time() if now is None else now
                col = events["ingested_at_us"] if "ingested_at_us" in events else events["created_at_us"]
                if "created_at_us" in events:
                    col = col.fillna(events["created_at_us"])
                for us in col.dropna().astype("int64").tolist():
                    self.latency.observe(max(0.0, at - us / US))

        self.safely("batch", update)


# ---------------------------------------------------------------------------- consumer lag
def progress_offsets(progress: dict | None, topic: str) -> dict[int, int] | None:
    """The next offset per partition of ``topic`` after the last completed micro-batch."""
    if not progress:
        return None
    for source in progress.get("sources") or []:
        end = source.get("endOffset")
        if isinstance(end, str):
            end = json.loads(end)
        if isinstance(end, dict) and topic in end:
            return {int(p): int(o) for p, o in end[topic].items()}
    return None


def lag(watermarks: dict[int, tuple[int, int]], position: dict[int, int]) -> int:
    """Messages past ``position``, summed over the partitions; ``watermarks`` are (low, high) per
    partition, and a partition ``position`` does not know yet counts from its low watermark."""
    return sum(max(0, high - position.get(p, low)) for p, (low, high) in watermarks.items())


class LagMonitor:
    """A driver thread that sets the lag gauge every ``interval_s``: the raw topic's end offsets (a
    Kafka consumer, no group commits) against the job's position from the query's last progress. A
    stuck or failing job keeps reporting a growing lag; before the first micro-batch of this process
    completes the position is unknown and the gauge is not set."""

    def __init__(
        self,
        metrics: JobMetrics,
        bootstrap: str,
        topic: str,
        progress: Callable[[], dict | None],
        interval_s: float = 5.0,
    ) -> None:
        self.metrics = metrics
        self.bootstrap = bootstrap
        self.topic = topic
        self.progress = progress
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamotion-job-lag", daemon=True)
        self._consumer = None
        self._position: dict[int, int] | None = None

    def start(self) -> LagMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception:
                pass
            self._consumer = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.metrics.safely("consumer lag", self.update)
            self._stop.wait(self.interval_s)

    def watermarks(self) -> dict[int, tuple[int, int]]:
        from confluent_kafka import Consumer, TopicPartition

        if self._consumer is None:
            from streamotion.security.clients import confluent_config

            self._consumer = Consumer(
                {
                    **confluent_config(self.bootstrap),
                    "group.id": f"{self.topic}.job-lag",
                    "enable.auto.commit": False,
                }
            )
        meta = self._consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)
        if meta is None or meta.error is not None:
            raise RuntimeError(f"topic {self.topic}: {meta.error if meta else 'not found'}")
        return {
            p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=5)
            for p in meta.partitions
        }

    def update(self) -> None:
        position = progress_offsets(self.progress(), self.topic)
        if position is not None:
            self._position = position
        if self._position is None:
            return  # no micro-batch completed yet in this process: the position is not known
        self.metrics.lag.set(lag(self.watermarks(), self._position))
