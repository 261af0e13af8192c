"""The cdc producer: Debezium's change topics -> contract events on the pipeline's raw topic.

``streamotion produce --source NAME`` runs this for a ``cdc`` source, in a cluster (the source's
producer Deployment, beside the ``KafkaConnector`` the operator creates) and on one machine (the
local runner): it consumes the tables' change topics, maps each record with
:func:`streamotion.cdc.map_change` (the one mapping), applies the source's filters and ``redactPII``
to the mapped text, and publishes like every other source: events to the raw topic, unreadable
change events to the dead-letter topic with the reason; deletes and tombstones are counted as
filtered (``reason``), not published.

Exactly once in the sinks: the consumer commits its offsets only after Kafka has acknowledged every
event and dead letter of the records before them, so a crash resends (never loses) records, and a
resent change maps to the same event id, which the sinks store once (see :mod:`streamotion.cdc`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from streamotion import cdc
from streamotion.api.models import StreamPipeline
from streamotion.naming import METRICS_PORT
from streamotion.security.clients import confluent_config
from streamotion_ingest.context import find_source
from streamotion_ingest.publisher import Malformed, Publisher, payload_text

log = logging.getLogger("streamotion.ingest")


def consumer_group(p: StreamPipeline, source: str) -> str:
    return cdc.bridge_group(p, source)


class Bridge:
    """Consume a cdc source's change topics and publish their events (see the module docstring)."""

    def __init__(self, pipeline: StreamPipeline, source_name: str, publisher: Publisher) -> None:
        from confluent_kafka import Consumer

        self.pipeline = pipeline
        self.source = find_source(pipeline, source_name)
        if self.source.cdc is None:
            raise ValueError(f"source {source_name} is not a cdc source")
        self.publisher = publisher
        self.prefix = cdc.topic_prefix(pipeline, self.source.name)
        self.topics = sorted(cdc.source_topics(pipeline, self.source))
        self.stop = threading.Event()
        self.handled = 0
        self.consumer = Consumer(
            {
                # the one client configuration (STREAMOTION_KAFKA_*: the producer's identity, whose
                # ACLs allow reading this source's change topics in this group)
                **confluent_config(publisher.bootstrap),
                "group.id": consumer_group(pipeline, self.source.name),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # Debezium creates a table's topic with its first change: find it soon after
                "topic.metadata.refresh.interval.ms": 2000,
                "logger": logging.getLogger("librdkafka"),
            }
        )
        self.consumer.subscribe(self.topics)

    def handle(self, msg) -> None:
        """Map and publish one record (queued; acknowledged by the next :meth:`commit`)."""
        result = cdc.map_change(msg.value(), source=self.source, topic=msg.topic(), prefix=self.prefix)
        self.handled += 1
        if isinstance(result, cdc.Skipped):
            self.publisher.metrics.filtered(result.why).inc()
        elif isinstance(result, cdc.Unreadable):
            self.publisher.publish(Malformed(result.reason, payload_text(msg.value() or b"")))
        else:
            self.publisher.publish(result)

    def commit(self) -> bool:
        """Wait until Kafka acknowledged everything queued, then commit the consumed offsets."""
        while self.publisher.flush(5) > 0:
            if self.publisher.fatal is not None:
                raise self.publisher.fatal
            if self.stop.is_set():
                return False  # not acknowledged: not committed, read again after a restart
            log.warning("waiting for Kafka to acknowledge events before committing offsets")
        self.consumer.commit(asynchronous=False)
        return True

    def run_once(self, max_records: int = 500, timeout: float = 0.5) -> int:
        msgs = self.consumer.consume(max_records, timeout)
        n = 0
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if not err.retriable() and err.fatal():
                    raise RuntimeError(f"fatal Kafka consumer error: {err}")
                log.debug("consumer error", extra={"error": str(err)})
                continue
            self.handle(msg)
            n += 1
        if n:
            self.publisher.metrics.received.inc(n)
            self.commit()
        return n

    def run(self) -> None:
        while not self.stop.is_set():
            self.run_once()

    def close(self) -> None:
        try:
            self.consumer.close()
        except Exception:  # closing twice, or Kafka gone: nothing left to commit
            pass


def serve(
    pipeline: StreamPipeline,
    source_name: str,
    *,
    bootstrap: str | None = None,
    metrics_port: int | None = METRICS_PORT,
) -> int:
    """Run the bridge until SIGTERM/SIGINT; flush, commit, then return an exit code."""
    from streamotion_ingest.run import make_publisher

    publisher = make_publisher(pipeline, source_name, bootstrap)
    if metrics_port:
        from streamotion_ingest.metrics import serve as serve_metrics

        serve_metrics(metrics_port, ready=publisher.ready)
    bridge = Bridge(pipeline, source_name, publisher)

    def on_signal(signum, _frame):
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        bridge.stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    log.info(
        "producer started",
        extra={"pipeline": pipeline.name, "source": source_name, "type": "cdc", "topics": bridge.topics},
    )
    code = 0
    started = time.monotonic()
    try:
        bridge.run()
    except Exception:
        log.exception("source failed")
        code = 1
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        bridge.close()
        left = publisher.close(timeout=60)
    log.info(
        "producer stopped",
        extra={"handled": bridge.handled, "unacknowledged": left, "ran_s": round(time.monotonic() - started)},
    )
    return 2 if left else code
