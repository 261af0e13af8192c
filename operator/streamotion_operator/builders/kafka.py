"""Kafka, as Strimzi models it: where the cluster is (namespace, bootstrap address) and the
KafkaTopics of a pipeline (raw, enriched, dead letters) with their replication settings."""

from __future__ import annotations

from typing import Any

from streamotion import naming
from streamotion.api.models import StreamPipeline
from streamotion_operator.config import OperatorConfig

from .common import _meta

# The chart's Kafka listeners (charts/streamotion/templates/kafka.yaml), by spec.kafka.authentication:
# plain (off unless kafka.plainListener), tls (mutual TLS), scram (SCRAM-SHA-512 over TLS).
LISTENER_PORTS = {"none": 9092, "tls": 9093, "scram-sha-512": 9094}


def kafka_namespace(p: StreamPipeline, cfg: OperatorConfig) -> str:
    return p.spec.kafka.namespace or cfg.kafka_namespace


def kafka_bootstrap(p: StreamPipeline, cfg: OperatorConfig) -> str:
    k = p.spec.kafka
    port = LISTENER_PORTS[k.authentication]
    return k.bootstrap_servers or f"{k.cluster}-kafka-bootstrap.{kafka_namespace(p, cfg)}.svc:{port}"


def topic_replicas(p: StreamPipeline, cfg: OperatorConfig) -> int:
    """spec.kafka.replicas, else the operator's default (the chart passes min(its brokers, 3))."""
    return p.spec.kafka.replicas or cfg.kafka_replicas


def min_insync_replicas(replicas: int) -> int:
    """min(2, replicas), set on each topic rather than left to the broker's default: acks=all writes
    need that many in-sync replicas, so it must never exceed the topic's replicas (RF 1 under a
    broker default of 2 refuses every write with NOT_ENOUGH_REPLICAS). RF 3 / min ISR 2 is the
    durable setting (one broker may be down); RF 2 keeps every write on both (durability first)."""
    return min(2, replicas)


def kafka_topics(p: StreamPipeline, cfg: OperatorConfig) -> list[dict[str, Any]]:
    k = p.spec.kafka
    replicas = topic_replicas(p, cfg)
    out = []
    for role, topic in naming.topic_names(p).items():
        out.append(
            {
                "apiVersion": "kafka.strimzi.io/v1",
                "kind": "KafkaTopic",
                "metadata": _meta(
                    p,
                    naming.topic_resource_name(p, role),
                    "topics",
                    namespace=kafka_namespace(p, cfg),
                    **{"strimzi.io/cluster": k.cluster, "streamotion.io/topic-role": role},
                ),
                "spec": {
                    "topicName": topic,
                    "partitions": k.partitions,
                    "replicas": replicas,
                    "config": {
                        "retention.ms": str(k.retention_hours * 3600 * 1000),
                        "cleanup.policy": "delete",
                        "min.insync.replicas": str(min_insync_replicas(replicas)),
                    },
                },
            }
        )
    return out
