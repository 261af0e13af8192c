"""Prometheus metrics of every producer: ``streamotion_producer_*``, labels pipeline and source."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LABELS = ("pipeline", "source")

PRODUCED = Counter(
    "streamotion_producer_events_produced", "Events Kafka acknowledged on the raw topic.", LABELS
)
FAILED = Counter(
    "streamotion_producer_events_failed", "Events Kafka did not acknowledge (delivery errors).", LABELS
)
DEAD_LETTERED = Counter(
    "streamotion_producer_events_dead_lettered",
    "Payloads that could not become valid events, sent to the dead-letter topic.",
    LABELS,
)
FILTERED = Counter(
    "streamotion_producer_events_filtered",
    "Events dropped by the source's filters (language, keyword) or skipped (deleted, duplicate).",
    (*LABELS, "reason"),
)
RECEIVED = Counter("streamotion_producer_payloads_received", "Payloads read from the platform.", LABELS)
LAG = Gauge(
    "streamotion_producer_lag_seconds",
    "How far behind the platform the last published event is (ingest time minus event time).",
    LABELS,
)
DELIVERY_LATENCY = Histogram(
    "streamotion_producer_delivery_latency_seconds",
    "From produce() to Kafka's acknowledgement.",
    LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUE = Gauge("streamotion_producer_queue_messages", "Messages waiting in the producer queue.", LABELS)
RECONNECTS = Counter(
    "streamotion_producer_reconnects", "Reconnections to the platform after errors.", (*LABELS, "reason")
)
HTTP_REQUESTS = Counter(
    "streamotion_producer_http_requests", "Ingest HTTP requests by answer code.", (*LABELS, "code")
)


class SourceMetrics:
    """The metric children of one pipeline source."""

    def __init__(self, pipeline: str, source: str) -> None:
        lv = (pipeline, source)
        self.labels = lv
        self.produced = PRODUCED.labels(*lv)
        self.failed = FAILED.labels(*lv)
        self.dead_lettered = DEAD_LETTERED.labels(*lv)
        self.received = RECEIVED.labels(*lv)
        self.lag = LAG.labels(*lv)
        self.latency = DELIVERY_LATENCY.labels(*lv)
        self.queue = QUEUE.labels(*lv)

    def filtered(self, reason: str):
        return FILTERED.labels(*self.labels, reason)

    def reconnect(self, reason: str):
        return RECONNECTS.labels(*self.labels, reason)

    def http(self, code: int):
        return HTTP_REQUESTS.labels(*self.labels, str(code))


def serve(port: int) -> None:
    """Expose /metrics on ``port`` (all interfaces: Prometheus scrapes the pod)."""
    from prometheus_client import start_http_server

    start_http_server(port)
