"""Prometheus metrics of every producer: ``streamotion_producer_*``, labels pipeline and source; and
the HTTP server that exposes them with the producer's readiness (``/readyz``: Kafka reachable)."""

from __future__ import annotations

from collections.abc import Callable

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


def serve(port: int, ready: Callable[[], bool] | None = None) -> None:
    """Expose /metrics on ``port`` (all interfaces: Prometheus scrapes the pod), and ``/readyz``:
    200 while ``ready()`` (Kafka reachable), else 503, for the pod's readiness probe."""
    import json
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    metrics_app = make_wsgi_app()

    def app(environ, start_response):
        if environ.get("PATH_INFO") != "/readyz":
            return metrics_app(environ, start_response)
        try:
            ok = ready() if ready else True
        except Exception:  # a failing check is not ready, never a crash
            ok = False
        body = json.dumps({"status": "ok" if ok else "unavailable", "kafka": "up" if ok else "down"})
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
        return [body.encode()]

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:  # probes every 10 s: no access log
            pass

    httpd = make_server("", port, app, ThreadingWSGIServer, handler_class=Quiet)
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
