"""Operator configuration: images, namespaces and timings, from environment variables or flags."""

from __future__ import annotations

import json
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

VERSION = "0.1.0"


def _default_dashboards_dir() -> str:
    """grafana/dashboards next to the sources (a checkout), or where the operator image puts it."""
    here = Path(__file__).resolve().parents[2] / "grafana" / "dashboards"
    return str(here) if here.parent.exists() else "/opt/streamotion/grafana/dashboards"


@dataclass
class OperatorConfig:
    """Everything the builders and the controller need besides the pipeline itself.

    Each field can be set by the environment variable ``STREAMOTION_<FIELD IN UPPER CASE>``
    (for example ``STREAMOTION_PRODUCER_IMAGE``) or by the matching ``streamotion operator`` flag.
    """

    producer_image: str = f"ghcr.io/streamotion/producer:{VERSION}"
    job_image: str = f"ghcr.io/streamotion/job:{VERSION}"
    model_image: str = f"ghcr.io/streamotion/model:{VERSION}"
    model_gpu_image: str = f"ghcr.io/streamotion/model-gpu:{VERSION}"
    """Image of the model's Ray workers when spec.model.device is gpu (CUDA torch; `make images`: serving-gpu)."""
    image_pull_policy: str = "IfNotPresent"
    kafka_namespace: str = "kafka"
    """Namespace of the Strimzi Kafka cluster when a pipeline does not name one."""
    kafka_replicas: int = 1
    """Replication factor of the topics of pipelines without spec.kafka.replicas (the chart: min(brokers, 3))."""
    spark_version: str = "4.0.0"
    ray_version: str = "2.60.0"
    spark_driver_cluster_role: str = "streamotion-spark-driver"
    connect_cluster: str = "streamotion-connect"
    """The Strimzi KafkaConnect (with Debezium's PostgreSQL plugin) that runs the cdc sources' connectors."""
    connect_namespace: str = ""
    """Its namespace ("": each pipeline's Kafka namespace)."""
    """ClusterRole bound (per pipeline namespace) to the Spark driver's ServiceAccount."""
    dashboards_dir: str = field(default_factory=_default_dashboards_dir)
    resync_seconds: float = 30.0
    """Full reconcile of every pipeline at least this often (drift repair, readiness)."""
    min_interval_seconds: float = 0.5
    """Least time between two reconciles of one pipeline (coalesces bursts of child events)."""
    workers: int = 8
    """Pipelines reconciled in parallel."""
    cleanup_timeout_seconds: float = 300.0
    """How long deleting a pipeline waits for its topics and dashboards to be gone (Strimzi deletes the
    Kafka topic, then removes its finalizer) before it gives up, reports what is left and lets go."""
    cleanup_poll_seconds: float = 5.0
    """How often a pipeline being deleted checks whether its topics and dashboards are gone."""
    rollout_max_rewrites: int = 10
    """Upgrades: most SparkApplications (and, apart, RayServices) rewritten per rollout period when a
    new operator version or configuration changes them (each restarts a job or starts a second Ray
    cluster); the others report RolloutPending. 0: no limit. A pipeline's own spec change is never paced."""
    rollout_period_seconds: float = 60.0
    """Upgrades: the period of rollout_max_rewrites."""
    secret_check_seconds: float = 300.0
    """Secrets a pipeline references are read again this often once found (a missing one: every reconcile)."""
    metrics_port: int = 9108
    webhook_port: int = 0
    """Port of the HTTPS conversion webhook (/convert; the chart: 9443); 0: not served."""
    webhook_cert_dir: str = ""
    """Directory with the webhook's tls.crt, tls.key and ca.crt (the chart's Secret)."""
    webhook_service: str = ""
    """namespace/name of the Service in front of the webhook: the operator points the StreamPipeline
    CRD's conversion at it, with ca.crt as its CA bundle ("" : leaves the CRD's conversion alone)."""
    webhook_service_port: int = 443
    """Port of that Service."""
    webhook_url: str = ""
    """Instead of a Service: the https URL the API server calls (an operator outside the cluster,
    such as one on a developer's machine next to a local API server); used when webhook_service is ""."""
    health_port: int = 8080
    model_node_selector: dict[str, str] = field(default_factory=dict)
    """nodeSelector of the model's Ray workers when spec.model.device is gpu (JSON in the env var)."""
    model_tolerations: list[dict[str, Any]] = field(default_factory=list)
    """Tolerations of the model's Ray workers when spec.model.device is gpu (JSON in the env var)."""
    gcp_service_account: str = ""
    """GKE Workload Identity: annotates each pipeline's Spark ServiceAccount (iam.gke.io/gcp-service-account)."""
    http_service_type: str = "ClusterIP"
    """Service type of http sources (NodePort on kind)."""
    http_node_port: int | None = None
    """nodePort of http sources' ingest port when http_service_type is NodePort."""
    allowed_kafka_clusters: list[str] = field(default_factory=list)
    """Tenancy: the Kafka clusters ("namespace/name") pipelines may use; empty = any (the chart sets it)."""
    allowed_dashboards_namespaces: list[str] = field(default_factory=list)
    """Tenancy: the namespaces pipelines' dashboards may go to; empty = any (the chart sets it)."""
    max_partitions: int | None = None
    """Tenancy: most spec.kafka.partitions a pipeline may ask for (None = the CRD's own limit)."""
    max_replicas: int | None = None
    """Tenancy: most spec.kafka.replicas a pipeline may ask for (None = the CRD's own limit)."""
    max_retention_hours: int | None = None
    """Tenancy: most spec.kafka.retention a pipeline may ask for, in hours (None = the CRD's own limit)."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> OperatorConfig:
        env = os.environ if env is None else env
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"STREAMOTION_{f.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            hint = str(hints[f.name])
            try:
                if hint.startswith(("dict", "list")):
                    values[f.name] = json.loads(raw)
                elif "float" in hint:
                    values[f.name] = float(raw)
                elif "int" in hint:
                    values[f.name] = int(raw)
                else:
                    values[f.name] = raw
            except ValueError as exc:
                raise ValueError(f"{name}={raw!r}: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        if self.kafka_replicas < 1:
            raise ValueError(
                f"STREAMOTION_KAFKA_REPLICAS={self.kafka_replicas}: a replication factor is at least 1"
            )
