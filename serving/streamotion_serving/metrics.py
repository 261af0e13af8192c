"""Prometheus metrics of the model service (``streamotion_model_*``).

They are recorded with Ray Serve's metrics API, not a per-process ``/metrics`` page: a page served
by the application would show whichever replica the request happened to reach, so with several
replicas Prometheus would see counts jump between them. Ray's metrics agent on each node exports the
metrics of every replica on that node (``--metrics-export-port``: 8080 in the RayService;
``streamotion model serve`` prints its own), tagged ``deployment``, ``replica`` and ``application``,
so ``sum(rate(...))`` over the scraped pods counts every text once.

Ray exports custom metrics as ``ray_<name>``; the scrape renames ours back
(``streamotion.model_api.ray_metric_relabelings``: the PodMonitor's ``metricRelabelings`` and the
local Prometheus's ``metric_relabel_configs``), so dashboards and alerts query ``streamotion_model_*``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    name: str  # the name Ray records (exported as ray_<name>, counters with _total)
    kind: str  # counter | histogram | gauge
    help: str
    tags: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    def samples(self) -> tuple[str, ...]:
        """Sample names Prometheus stores after the scrape's rename."""
        if self.kind == "counter":
            return (f"{self.name}_total",)
        if self.kind == "histogram":
            return tuple(f"{self.name}{s}" for s in ("_bucket", "_sum", "_count"))
        return (self.name,)


REQUESTS = Family(
    "streamotion_model_requests", "counter", "HTTP requests to the model service", ("endpoint", "status")
)
TEXTS = Family("streamotion_model_texts", "counter", "Texts classified")
ERRORS = Family(
    "streamotion_model_errors", "counter", "Requests answered with an error", ("endpoint", "kind")
)
BATCH_SIZE = Family(
    "streamotion_model_batch_size",
    "histogram",
    "Texts per model batch (dynamic batching across requests)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
REQUEST_LATENCY = Family(
    "streamotion_model_request_latency_seconds",
    "histogram",
    "HTTP request latency inside the replica",
    ("endpoint",),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
INFERENCE_LATENCY = Family(
    "streamotion_model_inference_latency_seconds",
    "histogram",
    "Model time per batch",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MODEL_INFO = Family(
    "streamotion_model_info",
    "gauge",
    "The model each replica serves",
    ("name", "version", "backend", "device"),
)
FAMILIES = (REQUESTS, TEXTS, ERRORS, BATCH_SIZE, REQUEST_LATENCY, INFERENCE_LATENCY, MODEL_INFO)


class ReplicaMetrics:
    """The families as Ray Serve metrics, created inside a replica (which adds its tags)."""

    def __init__(self) -> None:
        from ray.serve import metrics as serve_metrics

        self.by_name: dict[str, Any] = {}
        for f in FAMILIES:
            if f.kind == "counter":
                m = serve_metrics.Counter(f.name, description=f.help, tag_keys=f.tags)
            elif f.kind == "histogram":
                m = serve_metrics.Histogram(
                    f.name, description=f.help, boundaries=list(f.buckets), tag_keys=f.tags
                )
            else:
                m = serve_metrics.Gauge(f.name, description=f.help, tag_keys=f.tags)
            self.by_name[f.name] = m

    def request(self, endpoint: str, status: int | str, seconds: float | None) -> None:
        self.by_name[REQUESTS.name].inc(1, tags={"endpoint": endpoint, "status": str(status)})
        if seconds is not None:
            self.by_name[REQUEST_LATENCY.name].observe(seconds, tags={"endpoint": endpoint})

    def error(self, endpoint: str, kind: str) -> None:
        self.by_name[ERRORS.name].inc(1, tags={"endpoint": endpoint, "kind": kind})

    def texts(self, n: int) -> None:
        if n:
            self.by_name[TEXTS.name].inc(n)

    def batch(self, size: int, seconds: float) -> None:
        self.by_name[BATCH_SIZE.name].observe(size)
        self.by_name[INFERENCE_LATENCY.name].observe(seconds)

    def model(self, name: str, version: str, backend: str, device: str) -> None:
        tags = {"name": name, "version": version, "backend": backend, "device": device}
        self.by_name[MODEL_INFO.name].set(1, tags=tags)


_replica: ReplicaMetrics | None = None


def replica() -> ReplicaMetrics:
    """This process's metrics (one Serve replica per Ray worker process)."""
    global _replica
    if _replica is None:
        _replica = ReplicaMetrics()
    return _replica
