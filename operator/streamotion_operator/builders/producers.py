"""Producers: one Deployment per source (and a Service for HTTP sources), with the source's
credentials taken by reference from its Secret."""

from __future__ import annotations

from typing import Any

from streamotion_ingest import ENV_FROM_SECRET

from streamotion import naming
from streamotion.api.models import Source, StreamPipeline
from streamotion_operator.config import OperatorConfig

from .common import (
    _PIPELINE_MOUNT,
    CONFIG_HASH_ANNOTATION,
    CONTAINER_SECURITY,
    POD_SECURITY,
    _meta,
    _pipeline_volume,
    labels,
    selector,
    spec_hash,
)
from .kafka import kafka_bootstrap
from .security import kafka_client, producer_identity

SOURCE_LABEL = "streamotion.io/source"


def env_from_secret() -> dict[str, dict[str, str]]:
    """Source type -> {ENV_NAME: secret key}, as the ingest package (in the operator image) publishes it."""
    return ENV_FROM_SECRET


def source_secret(source: Source) -> str | None:
    """Name of the Secret a source reads its credentials from (None: it needs none)."""
    block = getattr(source, source.type)
    for attr in ("credentials_secret", "access_token_secret", "bearer_token_secret", "token_secret"):
        value = getattr(block, attr, None)
        if value:
            return value
    return None


def producer(p: StreamPipeline, s: Source, cfg: OperatorConfig) -> list[dict[str, Any]]:
    name = naming.producer_name(p, s.name)
    pod_labels = labels(p, "producer", **{SOURCE_LABEL: s.name})
    env: list[dict[str, Any]] = [
        {"name": "STREAMOTION_KAFKA_BOOTSTRAP", "value": kafka_bootstrap(p, cfg)},
        {"name": "STREAMOTION_METRICS_PORT", "value": str(naming.METRICS_PORT)},
    ]
    kafka_env, kafka_volumes, kafka_mounts = kafka_client(p, producer_identity(p, s))
    env += kafka_env
    secret = source_secret(s)
    if secret:
        for env_name, key in env_from_secret().get(s.type, {}).items():
            env.append({"name": env_name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    ports = [{"name": "metrics", "containerPort": naming.METRICS_PORT, "protocol": "TCP"}]
    if s.http:
        ports.insert(0, {"name": "http", "containerPort": s.http.port, "protocol": "TCP"})
    # Restart producers only when what they read changes (their source, Kafka), not on any spec edit.
    config_hash = spec_hash(
        {
            "source": s.model_dump(mode="json", by_alias=True),
            "kafka": kafka_bootstrap(p, cfg),
            "authentication": p.spec.kafka.authentication,
        }
    )
    probe: dict[str, Any] = {"periodSeconds": 10, "timeoutSeconds": 5}
    # Ready while Kafka is reachable (/healthz of http sources, /readyz of the others); alive while
    # the process answers (a Kafka outage must not restart the producers: they buffer and retry).
    probe["httpGet"] = (
        {"path": "/healthz", "port": "http"} if s.http else {"path": "/readyz", "port": "metrics"}
    )
    alive = {**probe, "httpGet": {"path": "/metrics", "port": "metrics"}}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(p, name, "producer", **{SOURCE_LABEL: s.name}),
        "spec": {
            "replicas": 0 if p.spec.suspend else s.replicas,
            "selector": {"matchLabels": {**selector(p, "producer"), SOURCE_LABEL: s.name}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {CONFIG_HASH_ANNOTATION: config_hash}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": POD_SECURITY,
                    "containers": [
                        {
                            "name": "producer",
                            "image": cfg.producer_image,
                            "imagePullPolicy": cfg.image_pull_policy,
                            "command": [
                                *naming.PRODUCER_COMMAND,
                                "--source",
                                s.name,
                                "--pipeline",
                                naming.PIPELINE_FILE,
                            ],
                            "env": env,
                            "ports": ports,
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"memory": "512Mi"},
                            },
                            "readinessProbe": probe,
                            "livenessProbe": {**alive, "initialDelaySeconds": 10, "failureThreshold": 6},
                            "securityContext": CONTAINER_SECURITY,
                            "volumeMounts": [
                                _PIPELINE_MOUNT,
                                {"name": "tmp", "mountPath": "/tmp"},
                                *kafka_mounts,
                            ],
                        }
                    ],
                    "volumes": [_pipeline_volume(p), {"name": "tmp", "emptyDir": {}}, *kafka_volumes],
                },
            },
        },
    }
    out = [deployment]
    if s.http:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _meta(p, name, "producer", **{SOURCE_LABEL: s.name}),
                "spec": {
                    "type": cfg.http_service_type,
                    "selector": {**selector(p, "producer"), SOURCE_LABEL: s.name},
                    "ports": [
                        {
                            "name": "http",
                            "port": s.http.port,
                            "targetPort": "http",
                            "protocol": "TCP",
                            **(
                                {"nodePort": cfg.http_node_port}
                                if cfg.http_node_port and cfg.http_service_type == "NodePort"
                                else {}
                            ),
                        },
                        {
                            "name": "metrics",
                            "port": naming.METRICS_PORT,
                            "targetPort": "metrics",
                            "protocol": "TCP",
                        },
                    ],
                },
            }
        )
    return out
