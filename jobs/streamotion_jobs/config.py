"""Everything the job needs, from the pipeline spec and the environment (never a credential in a file)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from streamotion import naming
from streamotion.api.models import BigQuerySink, ModelSpec, PostgresSink, StreamPipeline

KAFKA_BOOTSTRAP_ENV = "STREAMOTION_KAFKA_BOOTSTRAP"
MODEL_URL_ENV = "STREAMOTION_MODEL_URL"
PG_DSN_ENV = "STREAMOTION_PG_DSN"  # full DSN, overrides the sink's host/port/database and PGUSER/PGPASSWORD
CHECKPOINT_MOUNT = "/checkpoint"  # where the operator mounts the checkpoint PVC

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> float:
    """Kubernetes-style duration (500ms, 5s, 1m, 1h30m) in seconds."""
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a duration: {value!r} (expected forms such as 500ms, 5s, 1m, 2h)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def kafka_bootstrap(p: StreamPipeline) -> str:
    env = os.environ.get(KAFKA_BOOTSTRAP_ENV)
    if env:
        return env
    if p.spec.kafka.bootstrap_servers:
        return p.spec.kafka.bootstrap_servers
    ns = p.spec.kafka.namespace or "kafka"
    return f"{p.spec.kafka.cluster}-kafka-bootstrap.{ns}.svc:9092"


def model_url(p: StreamPipeline) -> str:
    env = os.environ.get(MODEL_URL_ENV)
    if env:
        return env.rstrip("/")
    return f"http://{naming.ray_service_name(p)}-serve-svc.{p.namespace}.svc:8000"


def checkpoint_location(p: StreamPipeline, override: str | None = None) -> str:
    if p.spec.processing.checkpoint.uri:
        return p.spec.processing.checkpoint.uri
    if override:
        return str(Path(override).resolve()) if "://" not in override else override
    if in_cluster():
        return CHECKPOINT_MOUNT
    raise ValueError(
        "no checkpoint location: spec.processing.checkpoint.uri is not set and this is not a cluster "
        "(the PVC is mounted at /checkpoint there); pass --checkpoint DIR"
    )


def postgres_dsn(sink: PostgresSink) -> str:
    """A libpq connection string; credentials from env (PGUSER/PGPASSWORD, from the sink's Secret)."""
    env = os.environ.get(PG_DSN_ENV)
    if env:
        return env
    from psycopg.conninfo import make_conninfo

    return make_conninfo(
        host=sink.host,
        port=sink.port,
        dbname=sink.database,
        sslmode=sink.ssl_mode,
        application_name="streamotion-job",
        # user and password come from PGUSER / PGPASSWORD (libpq reads them itself)
    )


def model_chunk_size(model: ModelSpec) -> int:
    """Texts per model request. A transformer's service cuts requests into ``maxBatchSize`` model
    batches, and four of them per request keep its queue fed; a linear model classifies a whole
    request at once in a few milliseconds, so the request's own overhead (HTTP, Ray Serve's proxy,
    JSON) dominates and the largest request the API takes (``MAX_TEXTS``) is the fastest."""
    from streamotion.model_api import MAX_TEXTS

    if model.arch == "linear":
        return MAX_TEXTS
    return min(max(model.max_batch_size * 4, 64), MAX_TEXTS)


@dataclass
class JobConfig:
    pipeline: StreamPipeline
    bootstrap: str
    model_url: str
    checkpoint: str
    trigger_s: float
    window_s: float
    watermark_s: float
    max_events_per_trigger: int
    starting_offsets: str
    sentiment_threshold: float
    topics: dict[str, str] = field(default_factory=dict)
    model_batch_size: int = 256
    model_deadline_s: float = 120.0
    model_max_length: int = 128  # spec.model.maxLength: the client cuts texts to what the model reads
    max_future_skew_s: float = 600.0

    @classmethod
    def from_pipeline(
        cls,
        p: StreamPipeline,
        checkpoint: str | None = None,
        need_checkpoint: bool = True,
        **overrides: object,
    ) -> JobConfig:
        proc = p.spec.processing
        cfg = cls(
            pipeline=p,
            bootstrap=kafka_bootstrap(p),
            model_url=model_url(p),
            checkpoint=checkpoint_location(p, checkpoint) if need_checkpoint else (checkpoint or ""),
            trigger_s=parse_duration(proc.trigger),
            window_s=parse_duration(proc.window),
            watermark_s=parse_duration(proc.watermark),
            max_future_skew_s=parse_duration(proc.max_future_skew),
            max_events_per_trigger=proc.max_events_per_trigger,
            starting_offsets=proc.starting_offsets,
            sentiment_threshold=proc.sentiment_threshold,
            topics=naming.topic_names(p),
            model_batch_size=model_chunk_size(p.spec.model),
            model_max_length=p.spec.model.max_length,
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(cfg, key, value)
        return cfg

    @property
    def postgres_sinks(self) -> list[PostgresSink]:
        return [s.postgres for s in self.pipeline.spec.sinks if s.postgres is not None]

    @property
    def bigquery_sinks(self) -> list[BigQuerySink]:
        return [s.bigquery for s in self.pipeline.spec.sinks if s.bigquery is not None]
