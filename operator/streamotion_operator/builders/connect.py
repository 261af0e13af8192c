"""Change data capture, as Strimzi runs Kafka Connect: one ``KafkaConnector`` (Debezium's PostgreSQL
connector) per ``cdc`` source in the Kafka Connect cluster's namespace, and the Role and RoleBinding
that let that cluster's workers read the source's credentials Secret through Strimzi's
``strimzisecrets`` config provider (``${strimzisecrets:<namespace>/<secret>:<key>}``); the Secret
is never copied. The connector configuration itself is :func:`streamotion.cdc.connector_config`,
the one ``streamotion run --local`` uses too."""

from __future__ import annotations

from typing import Any

from streamotion import cdc
from streamotion.api.models import Source, StreamPipeline
from streamotion_operator.config import OperatorConfig

from .common import _meta
from .kafka import kafka_namespace
from .producers import SOURCE_LABEL

# Strimzi 1.2.0 enables this provider in every KafkaConnect (cluster-operator/.../model/
# KafkaConnectConfigurationBuilder.java printConfigProviders: strimzisecrets =
# io.strimzi.kafka.KubernetesSecretConfigProvider).
SECRETS_PROVIDER = "strimzisecrets"


def connect_namespace(p: StreamPipeline, cfg: OperatorConfig) -> str:
    """The Kafka Connect cluster's namespace: the operator's setting, else the pipeline's Kafka's."""
    return cfg.connect_namespace or kafka_namespace(p, cfg)


def connect_service_account(cfg: OperatorConfig) -> str:
    """Strimzi names the Connect workers' ServiceAccount ``<KafkaConnect name>-connect`` (1.2.0
    documentation/modules/configuring/ref-config-list-of-kafka-connect-resources.adoc)."""
    return f"{cfg.connect_cluster}-connect"


def secret_reference(p: StreamPipeline, secret: str, key: str) -> str:
    return "${" + f"{SECRETS_PROVIDER}:{p.namespace}/{secret}:{key}" + "}"


def secret_reader_name(p: StreamPipeline, s: Source) -> str:
    return f"{p.name}-cdc-{s.name}-secret"


def kafka_connector(p: StreamPipeline, s: Source, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """The KafkaConnector of cdc source ``s`` and the RBAC its Connect cluster needs for its Secret."""
    assert s.cdc is not None
    secret = s.cdc.credentials_secret
    config = cdc.connector_config(
        p, s, user=secret_reference(p, secret, "username"), password=secret_reference(p, secret, "password")
    )
    connector = {
        "apiVersion": "kafka.strimzi.io/v1",
        "kind": "KafkaConnector",
        "metadata": _meta(
            p,
            cdc.connector_name(p, s.name),
            "connector",
            namespace=connect_namespace(p, cfg),
            **{"strimzi.io/cluster": cfg.connect_cluster, SOURCE_LABEL: s.name},
        ),
        "spec": {
            "class": cdc.CONNECTOR_CLASS,
            "tasksMax": 1,
            "autoRestart": {"enabled": True},  # Strimzi restarts a FAILED connector or task, with backoff
            "state": "stopped" if p.spec.suspend or s.replicas == 0 else "running",
            "config": {k: v for k, v in config.items() if k not in ("connector.class", "tasks.max")},
        },
    }
    reader = secret_reader_name(p, s)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(p, reader, "connector", **{SOURCE_LABEL: s.name}),
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(p, reader, "connector", **{SOURCE_LABEL: s.name}),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": reader},
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": connect_service_account(cfg),
                "namespace": connect_namespace(p, cfg),
            }
        ],
    }
    return [role, binding, connector]
