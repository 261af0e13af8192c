"""Prometheus metrics of the model service (``streamotion_model_*``), exposed at ``GET /metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "streamotion_model_requests_total", "HTTP requests to the model service", ["endpoint", "status"]
)
TEXTS = Counter("streamotion_model_texts_total", "Texts classified")
ERRORS = Counter("streamotion_model_errors_total", "Requests answered with an error", ["endpoint", "kind"])
BATCH_SIZE = Histogram(
    "streamotion_model_batch_size",
    "Texts per model batch (dynamic batching across requests)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
REQUEST_LATENCY = Histogram(
    "streamotion_model_request_latency_seconds",
    "HTTP request latency inside the replica",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
INFERENCE_LATENCY = Histogram(
    "streamotion_model_inference_latency_seconds",
    "Model time per batch",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MODEL_INFO = Gauge(
    "streamotion_model_info", "The model this replica serves", ["name", "version", "backend", "device"]
)
