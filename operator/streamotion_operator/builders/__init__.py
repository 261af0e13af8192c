"""Desired children of a StreamPipeline: pure functions from (pipeline, configuration) to objects.

The operator applies exactly these objects (server-side apply, one field manager) and
``streamotion render`` prints them, so a change can be reviewed before it is applied.

One module per upstream system, as Strimzi keeps one model class per component: ``kafka``
(Strimzi topics), ``producers``, ``spark`` (spark-operator), ``ray`` (KubeRay), ``monitoring``
(prometheus-operator), ``grafana`` (dashboards); ``common`` holds what they share, ``kinds`` the
resources, ``secrets`` the Secrets they read, and ``assembly`` orchestrates them into one list.
"""

from __future__ import annotations

from .assembly import build, component_of, key
from .common import (
    CONFIG_HASH_ANNOTATION,
    CONTAINER_SECURITY,
    POD_SECURITY,
    SPEC_HASH_ANNOTATION,
    labels,
    pipeline_config_map,
    pipeline_document,
    selector,
    spec_hash,
)
from .grafana import dashboard_values, dashboards, preselect
from .kafka import kafka_bootstrap, kafka_namespace, kafka_topics, min_insync_replicas, topic_replicas
from .kinds import COMPONENT_CONDITION, KINDS, Kind
from .monitoring import (
    DEAD_LETTER_SHARE,
    MODEL_ERROR_SHARE,
    SOURCE_SILENT_MINUTES,
    pod_monitors,
    prometheus_rule,
)
from .producers import SOURCE_LABEL, env_from_secret, producer, source_secret
from .ray import (
    APP_NAME,
    RAY_ENV,
    RAY_GID,
    RAY_METRICS_PORT,
    RAY_POD_SECURITY,
    RAY_TMP_MOUNT,
    RAY_UID,
    SERVE_PORT,
    model_url,
    ray_service,
    serve_config,
)
from .secrets import SecretRef, secret_refs
from .security import (
    CREDENTIALS_LABEL,
    CredentialCopy,
    credential_copies,
    credential_secrets,
    kafka_client,
    kafka_users,
    network_policies,
)
from .spark import (
    BIGQUERY_KEY_DIR,
    CHECKPOINT_MOUNT,
    JOB_WORKDIR,
    SPARK_UI_PORT_NAME,
    checkpoint_claim,
    checkpoint_location,
    spark_application,
    spark_service_account,
)

__all__ = [
    "APP_NAME",
    "BIGQUERY_KEY_DIR",
    "CHECKPOINT_MOUNT",
    "COMPONENT_CONDITION",
    "CONFIG_HASH_ANNOTATION",
    "CONTAINER_SECURITY",
    "CREDENTIALS_LABEL",
    "DEAD_LETTER_SHARE",
    "JOB_WORKDIR",
    "KINDS",
    "MODEL_ERROR_SHARE",
    "POD_SECURITY",
    "RAY_ENV",
    "RAY_GID",
    "RAY_METRICS_PORT",
    "RAY_POD_SECURITY",
    "RAY_TMP_MOUNT",
    "RAY_UID",
    "SERVE_PORT",
    "SOURCE_LABEL",
    "SOURCE_SILENT_MINUTES",
    "SPARK_UI_PORT_NAME",
    "SPEC_HASH_ANNOTATION",
    "CredentialCopy",
    "Kind",
    "SecretRef",
    "build",
    "checkpoint_claim",
    "checkpoint_location",
    "component_of",
    "credential_copies",
    "credential_secrets",
    "dashboard_values",
    "dashboards",
    "env_from_secret",
    "kafka_bootstrap",
    "kafka_client",
    "kafka_namespace",
    "kafka_topics",
    "kafka_users",
    "key",
    "labels",
    "min_insync_replicas",
    "model_url",
    "network_policies",
    "pipeline_config_map",
    "pipeline_document",
    "pod_monitors",
    "preselect",
    "producer",
    "prometheus_rule",
    "ray_service",
    "secret_refs",
    "selector",
    "serve_config",
    "source_secret",
    "spark_application",
    "spark_service_account",
    "spec_hash",
    "topic_replicas",
]
