"""Tenancy limits, re-checked by the operator: the Kafka clusters and dashboards namespaces a pipeline
may use and the topic sizes it may ask for (OperatorConfig, from the chart's ``tenancy`` values).

The chart's ValidatingAdmissionPolicy refuses the same pipelines at admission; this check covers
pipelines stored before the policy existed (or with the policy off) so that nothing is created for
them outside their namespace. The messages name the field, as the policy's do.
"""

from __future__ import annotations

from streamotion.api.models import StreamPipeline

from . import builders
from .config import OperatorConfig

REASON = "TenancyViolation"


def violations(p: StreamPipeline, cfg: OperatorConfig) -> list[str]:
    """What in the pipeline's spec the operator's tenancy settings do not allow (empty: all allowed)."""
    out: list[str] = []
    k = p.spec.kafka
    cluster = f"{builders.kafka_namespace(p, cfg)}/{k.cluster}"
    if cfg.allowed_kafka_clusters and cluster not in cfg.allowed_kafka_clusters:
        out.append(
            f"spec.kafka.namespace/spec.kafka.cluster: Kafka cluster {cluster} is not allowed "
            f"(allowed: {', '.join(cfg.allowed_kafka_clusters)})"
        )
    if cfg.max_partitions is not None and k.partitions > cfg.max_partitions:
        out.append(f"spec.kafka.partitions: {k.partitions} is over the limit of {cfg.max_partitions}")
    if cfg.max_replicas is not None and k.replicas is not None and k.replicas > cfg.max_replicas:
        out.append(f"spec.kafka.replicas: {k.replicas} is over the limit of {cfg.max_replicas}")
    if cfg.max_retention_hours is not None and k.retention_hours > cfg.max_retention_hours:
        out.append(f"spec.kafka.retention: {k.retention} is over the limit of {cfg.max_retention_hours}h")
    d = p.spec.dashboards
    if (
        d.enabled
        and cfg.allowed_dashboards_namespaces
        and d.namespace not in cfg.allowed_dashboards_namespaces
    ):
        out.append(
            f"spec.dashboards.namespace: namespace {d.namespace} is not allowed "
            f"(allowed: {', '.join(cfg.allowed_dashboards_namespaces)})"
        )
    return out
