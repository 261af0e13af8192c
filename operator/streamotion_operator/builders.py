"""Desired children of a StreamPipeline: pure functions from (pipeline, configuration) to objects.

The operator applies exactly these objects (server-side apply, one field manager) and
``streamotion render`` prints them, so a change can be reviewed before it is applied.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streamotion import naming
from streamotion.api.models import API_VERSION, KIND, Source, StreamPipeline
from streamotion.model_api import ray_metric_relabelings
from streamotion_operator.config import OperatorConfig

# ------------------------------------------------------------------------------------ kinds
SPEC_HASH_ANNOTATION = "streamotion.io/spec-hash"
CONFIG_HASH_ANNOTATION = "streamotion.io/config-hash"
SOURCE_LABEL = "streamotion.io/source"
CHECKPOINT_MOUNT = "/checkpoint"  # streamotion_jobs.config.CHECKPOINT_MOUNT
BIGQUERY_KEY_DIR = "/var/run/secrets/streamotion/bigquery"
JOB_WORKDIR = "/opt/streamotion"
# The Spark UI (and its PrometheusServlet) port on the driver is declared by Spark itself under this
# name (apache/spark v4.0.0 k8s Constants.scala UI_PORT_NAME, BasicDriverFeatureStep.scala), as are
# "driver-rpc-port" and "blockmanager": spark-operator appends spec.driver.ports / spec.executor.ports
# to Spark's own without de-duplication, so our ports never reuse those names.
SPARK_UI_PORT_NAME = "spark-ui"
RAY_METRICS_PORT = 8080
SERVE_PORT = 8000
APP_NAME = "streamotion-model"  # streamotion_serving.app.APP_NAME


@dataclass(frozen=True)
class Kind:
    """An API resource the operator manages; ``crd`` names the upstream project that installs it."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True
    crd: str | None = None

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.api_version}" if self.group else f"/api/{self.version}"
        if namespace and self.namespaced:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base

    def describe(self) -> str:
        return f"{self.kind} ({self.api_version})"


KINDS: dict[str, Kind] = {
    k.kind: k
    for k in (
        Kind("v1", "ConfigMap", "configmaps"),
        Kind("v1", "Service", "services"),
        Kind("v1", "ServiceAccount", "serviceaccounts"),
        Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        Kind("apps/v1", "Deployment", "deployments"),
        Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
        Kind("kafka.strimzi.io/v1", "KafkaTopic", "kafkatopics", crd="Strimzi"),
        Kind("sparkoperator.k8s.io/v1beta2", "SparkApplication", "sparkapplications", crd="spark-operator"),
        Kind("ray.io/v1", "RayService", "rayservices", crd="KubeRay"),
        Kind("monitoring.coreos.com/v1", "PodMonitor", "podmonitors", crd="prometheus-operator"),
        Kind("monitoring.coreos.com/v1", "PrometheusRule", "prometheusrules", crd="prometheus-operator"),
    )
}

# Components, as in the app.kubernetes.io/component label; each maps to one status condition.
COMPONENT_CONDITION = {
    "config": "ProcessingReady",
    "topics": "TopicsReady",
    "producer": "SourcesReady",
    "job": "ProcessingReady",
    "model": "ModelReady",
    "monitoring": "DashboardsReady",
    "dashboards": "DashboardsReady",
}

# Source type -> {ENV_NAME: secret key}; the ingest package publishes the same mapping.
_ENV_FROM_SECRET_FALLBACK: dict[str, dict[str, str]] = {
    "reddit": {
        "REDDIT_CLIENT_ID": "client_id",
        "REDDIT_CLIENT_SECRET": "client_secret",
        "REDDIT_USER_AGENT": "user_agent",
    },
    "mastodon": {"MASTODON_ACCESS_TOKEN": "access_token"},
    "x": {"X_BEARER_TOKEN": "bearer_token"},
    "http": {"INGEST_TOKEN": "token"},
}


def env_from_secret() -> dict[str, dict[str, str]]:
    try:
        from streamotion_ingest import ENV_FROM_SECRET  # type: ignore[attr-defined]
    except ImportError:
        return _ENV_FROM_SECRET_FALLBACK
    return ENV_FROM_SECRET


def source_secret(source: Source) -> str | None:
    """Name of the Secret a source reads its credentials from (None: it needs none)."""
    block = getattr(source, source.type)
    for attr in ("credentials_secret", "access_token_secret", "bearer_token_secret", "token_secret"):
        value = getattr(block, attr, None)
        if value:
            return value
    return None


@dataclass(frozen=True)
class SecretRef:
    """A Secret a child needs, with the keys it reads; ``what`` is the field path that names it."""

    name: str
    keys: tuple[str, ...]
    what: str
    component: str


def secret_refs(p: StreamPipeline) -> list[SecretRef]:
    refs = []
    mapping = env_from_secret()
    for i, s in enumerate(p.spec.sources):
        name = source_secret(s)
        if name:
            field = {"reddit": "credentialsSecret", "mastodon": "accessTokenSecret", "x": "bearerTokenSecret"}
            refs.append(
                SecretRef(
                    name,
                    tuple(mapping.get(s.type, {}).values()),
                    f"spec.sources[{i}].{s.type}.{field.get(s.type, 'tokenSecret')}",
                    f"source:{s.name}",
                )
            )
    for i, sink in enumerate(p.spec.sinks):
        if sink.postgres:
            refs.append(
                SecretRef(
                    sink.postgres.credentials_secret,
                    ("username", "password"),
                    f"spec.sinks[{i}].postgres.credentialsSecret",
                    f"sink:{i}",
                )
            )
        if sink.bigquery and sink.bigquery.credentials_secret:
            refs.append(
                SecretRef(
                    sink.bigquery.credentials_secret,
                    ("key.json",),
                    f"spec.sinks[{i}].bigquery.credentialsSecret",
                    f"sink:{i}",
                )
            )
    return refs


# ---------------------------------------------------------------------------------- helpers
def spec_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def kafka_namespace(p: StreamPipeline, cfg: OperatorConfig) -> str:
    return p.spec.kafka.namespace or cfg.kafka_namespace


def kafka_bootstrap(p: StreamPipeline, cfg: OperatorConfig) -> str:
    k = p.spec.kafka
    return k.bootstrap_servers or f"{k.cluster}-kafka-bootstrap.{kafka_namespace(p, cfg)}.svc:9092"


def model_url(p: StreamPipeline) -> str:
    return f"http://{naming.ray_service_name(p)}-serve-svc.{p.namespace}.svc:{SERVE_PORT}"


def labels(p: StreamPipeline, component: str, **extra: str) -> dict[str, str]:
    out = naming.labels(p, component)
    out[naming.PIPELINE_NS_LABEL] = p.namespace
    out.update(extra)
    return out


def selector(p: StreamPipeline, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/instance": p.name,
        "app.kubernetes.io/component": component,
        naming.PIPELINE_LABEL: p.name,
    }


def _meta(p: StreamPipeline, name: str, component: str, namespace: str | None = None, **extra_labels: str):
    return {
        "name": name,
        "namespace": namespace or p.namespace,
        "labels": labels(p, component, **extra_labels),
    }


def pipeline_document(p: StreamPipeline) -> dict[str, Any]:
    """The pipeline as children read it from PIPELINE_FILE (spec and identity, no status)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": p.name, "namespace": p.namespace},
        "spec": p.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _pipeline_volume(p: StreamPipeline) -> dict[str, Any]:
    return {
        "name": "pipeline",
        "configMap": {
            "name": naming.config_map_name(p),
            "items": [{"key": Path(naming.PIPELINE_FILE).name, "path": Path(naming.PIPELINE_FILE).name}],
        },
    }


_PIPELINE_MOUNT = {"name": "pipeline", "mountPath": str(Path(naming.PIPELINE_FILE).parent), "readOnly": True}


# --------------------------------------------------------------------------------- children
def pipeline_config_map(p: StreamPipeline) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(p, naming.config_map_name(p), "config"),
        "data": {Path(naming.PIPELINE_FILE).name: _yaml(pipeline_document(p))},
    }


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


def producer(p: StreamPipeline, s: Source, cfg: OperatorConfig) -> list[dict[str, Any]]:
    name = naming.producer_name(p, s.name)
    pod_labels = labels(p, "producer", **{SOURCE_LABEL: s.name})
    env: list[dict[str, Any]] = [
        {"name": "STREAMOTION_KAFKA_BOOTSTRAP", "value": kafka_bootstrap(p, cfg)},
        {"name": "STREAMOTION_METRICS_PORT", "value": str(naming.METRICS_PORT)},
    ]
    secret = source_secret(s)
    if secret:
        for env_name, key in env_from_secret().get(s.type, {}).items():
            env.append({"name": env_name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    ports = [{"name": "metrics", "containerPort": naming.METRICS_PORT, "protocol": "TCP"}]
    if s.http:
        ports.insert(0, {"name": "http", "containerPort": s.http.port, "protocol": "TCP"})
    # Restart producers only when what they read changes (their source, Kafka), not on any spec edit.
    config_hash = spec_hash(
        {"source": s.model_dump(mode="json", by_alias=True), "kafka": kafka_bootstrap(p, cfg)}
    )
    probe: dict[str, Any] = {"periodSeconds": 10, "timeoutSeconds": 5}
    probe["httpGet"] = (
        {"path": "/healthz", "port": "http"} if s.http else {"path": "/metrics", "port": "metrics"}
    )
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
                            "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 6},
                            "securityContext": CONTAINER_SECURITY,
                            "volumeMounts": [_PIPELINE_MOUNT, {"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [_pipeline_volume(p), {"name": "tmp", "emptyDir": {}}],
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


def spark_service_account(p: StreamPipeline, cfg: OperatorConfig) -> list[dict[str, Any]]:
    name = f"{p.name}-spark"
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                **_meta(p, name, "job"),
                **(
                    {"annotations": {"iam.gke.io/gcp-service-account": cfg.gcp_service_account}}
                    if cfg.gcp_service_account
                    else {}
                ),
            },
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(p, name, "job"),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cfg.spark_driver_cluster_role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": p.namespace}],
        },
    ]


def checkpoint_claim(p: StreamPipeline) -> list[dict[str, Any]]:
    cp = p.spec.processing.checkpoint
    if cp.uri:
        return []
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": cp.size}}}
    if cp.storage_class:
        spec["storageClassName"] = cp.storage_class
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _meta(p, naming.checkpoint_pvc_name(p), "job"),
            "spec": spec,
        }
    ]


def checkpoint_location(p: StreamPipeline) -> str:
    return p.spec.processing.checkpoint.uri or CHECKPOINT_MOUNT


def spark_application(p: StreamPipeline, cfg: OperatorConfig) -> dict[str, Any]:
    proc = p.spec.processing
    env: list[dict[str, Any]] = [
        {"name": "STREAMOTION_KAFKA_BOOTSTRAP", "value": kafka_bootstrap(p, cfg)},
        {"name": "STREAMOTION_MODEL_URL", "value": model_url(p)},
        {"name": "STREAMOTION_METRICS_PORT", "value": str(naming.METRICS_PORT)},
    ]
    volumes: list[dict[str, Any]] = [_pipeline_volume(p), {"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [_PIPELINE_MOUNT, {"name": "tmp", "mountPath": "/tmp"}]
    # Executors only parse and classify (mapInPandas); the driver keeps the checkpoint (a
    # ReadWriteOnce claim: executors on other nodes could not attach it) and writes the sinks
    # (streamotion_jobs.job: toPandas), so the claim and the sink credentials are the driver's only.
    executor_env = list(env)
    executor_mounts = list(mounts)
    if not proc.checkpoint.uri:
        volumes.append(
            {"name": "checkpoint", "persistentVolumeClaim": {"claimName": naming.checkpoint_pvc_name(p)}}
        )
        mounts.append({"name": "checkpoint", "mountPath": CHECKPOINT_MOUNT})
    for sink in p.spec.sinks:
        if sink.postgres:
            ref = sink.postgres.credentials_secret
            env += [
                {"name": "PGUSER", "valueFrom": {"secretKeyRef": {"name": ref, "key": "username"}}},
                {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": ref, "key": "password"}}},
            ]
        if sink.bigquery and sink.bigquery.credentials_secret:
            volumes.append(
                {"name": "bigquery-key", "secret": {"secretName": sink.bigquery.credentials_secret}}
            )
            mounts.append({"name": "bigquery-key", "mountPath": BIGQUERY_KEY_DIR, "readOnly": True})
            env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{BIGQUERY_KEY_DIR}/key.json"})
    pod_labels = labels(p, "job")
    spec: dict[str, Any] = {
        "type": "Python",
        "pythonVersion": "3",
        "mode": "cluster",
        "image": cfg.job_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "mainApplicationFile": f"local://{JOB_WORKDIR}/{naming.JOB_MAIN}",
        "arguments": ["--pipeline", naming.PIPELINE_FILE],
        "sparkVersion": cfg.spark_version,
        "suspend": p.spec.suspend,
        "restartPolicy": {
            "type": "Always",
            "onFailureRetryInterval": 10,
            "onSubmissionFailureRetryInterval": 20,
        },
        "sparkConf": {
            "spark.ui.prometheus.enabled": "true",
            "spark.metrics.conf.*.sink.prometheusServlet.class": "org.apache.spark.metrics.sink.PrometheusServlet",
            "spark.metrics.conf.*.sink.prometheusServlet.path": "/metrics/prometheus",
        },
        "volumes": volumes,
        "driver": {
            "cores": proc.driver.cores,
            "memory": proc.driver.memory,
            "serviceAccount": f"{p.name}-spark",
            "labels": pod_labels,
            "env": env,
            "volumeMounts": mounts,
            # Spark declares spark-ui (4040) itself; ours are only the job's own
            "ports": [{"name": "metrics", "containerPort": naming.METRICS_PORT, "protocol": "TCP"}],
            "podSecurityContext": POD_SECURITY,
            "securityContext": CONTAINER_SECURITY,
        },
        "executor": {
            "instances": proc.executors.instances,
            "cores": proc.executors.cores,
            "memory": proc.executors.memory,
            "labels": pod_labels,
            "env": executor_env,
            "volumeMounts": executor_mounts,
            "podSecurityContext": POD_SECURITY,
            "securityContext": CONTAINER_SECURITY,
        },
    }
    return {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "SparkApplication",
        "metadata": {
            **_meta(p, naming.spark_app_name(p), "job"),
            # spark-operator restarts the job on any spec write: written only when this changes.
            "annotations": {SPEC_HASH_ANNOTATION: spec_hash(spec)},
        },
        "spec": spec,
    }


def serve_config(p: StreamPipeline) -> dict[str, Any]:
    """serveConfigV2 of the RayService: arguments as ``streamotion_serving.app.build_app`` documents them."""
    m = p.spec.model
    args: dict[str, Any] = {
        "model": m.name,
        "taxonomy": m.taxonomy,
        "max_batch_size": m.max_batch_size,
        "batch_wait_ms": m.batch_wait_ms,
        "max_length": m.max_length,
        "device": "cuda" if m.device == "gpu" else "cpu",
        "backend": m.backend,
        "autoscaling": {"min_replicas": m.replicas.min, "max_replicas": m.replicas.max},
    }
    if m.device == "gpu":
        args["num_gpus"] = 1
    return {
        "applications": [
            {"name": APP_NAME, "route_prefix": "/", "import_path": naming.SERVE_IMPORT_PATH, "args": args}
        ]
    }


# The Ray images run Ray as their user ray, uid 1000 gid 100, from its home (/home/ray, Python in
# /home/ray/anaconda3, not readable by other users): ray-project/ray docker/base-deps/Dockerfile
# (RAY_UID=1000, RAY_GID=100), and serving/Dockerfile's USER 1000:100.
RAY_UID, RAY_GID = 1000, 100
RAY_POD_SECURITY = {**POD_SECURITY, "runAsUser": RAY_UID, "runAsGroup": RAY_GID, "fsGroup": RAY_GID}
# Root is read-only: Ray writes its session dir (/tmp/ray), HOME and HF_HOME under /tmp, an emptyDir
# (and its object store to /dev/shm, an emptyDir KubeRay adds).
RAY_ENV = [{"name": "HOME", "value": "/tmp"}, {"name": "HF_HOME", "value": "/tmp/huggingface"}]
RAY_TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


def _ray_pod(
    p: StreamPipeline, cfg: OperatorConfig, role: str, image: str, resources: dict, ports: list
) -> dict:
    return {
        "metadata": {"labels": labels(p, "model", **{"streamotion.io/ray-node": role})},
        "spec": {
            "securityContext": RAY_POD_SECURITY,
            "containers": [
                {
                    "name": f"ray-{role}",
                    "image": image,
                    "imagePullPolicy": cfg.image_pull_policy,
                    "env": [
                        *copy.deepcopy(RAY_ENV),
                        # counters exported once, as counters (not also as Ray's legacy gauge copy)
                        {"name": "RAY_EXPORT_COUNTER_AS_GAUGE", "value": "0"},
                    ],
                    "ports": ports,
                    "resources": resources,
                    "securityContext": CONTAINER_SECURITY,
                    "volumeMounts": [copy.deepcopy(RAY_TMP_MOUNT)],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def ray_service(p: StreamPipeline, cfg: OperatorConfig) -> dict[str, Any]:
    m = p.spec.model
    worker_resources: dict[str, Any] = {
        "requests": {"cpu": "1", "memory": "3Gi"},
        "limits": {"memory": "3Gi"},
    }
    if m.device == "gpu":
        worker_resources["requests"]["nvidia.com/gpu"] = "1"
        worker_resources["limits"]["nvidia.com/gpu"] = "1"
    metrics = {"name": "metrics", "containerPort": RAY_METRICS_PORT, "protocol": "TCP"}
    head_ports = [
        {"name": "gcs", "containerPort": 6379, "protocol": "TCP"},
        {"name": "dashboard", "containerPort": 8265, "protocol": "TCP"},
        {"name": "client", "containerPort": 10001, "protocol": "TCP"},
        {"name": "serve", "containerPort": SERVE_PORT, "protocol": "TCP"},
        metrics,
    ]
    start = {"metrics-export-port": str(RAY_METRICS_PORT)}
    # GPU workers run the CUDA torch image; the head (num-cpus 0, no GPU) runs no replica and keeps
    # the CPU image (same Ray, same Python: tests/test_images.py).
    worker = _ray_pod(
        p,
        cfg,
        "worker",
        cfg.model_gpu_image if m.device == "gpu" else cfg.model_image,
        worker_resources,
        [{"name": "serve", "containerPort": SERVE_PORT, "protocol": "TCP"}, metrics],
    )
    if m.device == "gpu" and cfg.model_node_selector:
        worker["spec"]["nodeSelector"] = dict(cfg.model_node_selector)
    if m.device == "gpu" and cfg.model_tolerations:
        worker["spec"]["tolerations"] = list(cfg.model_tolerations)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": _meta(p, naming.ray_service_name(p), "model"),
        "spec": {
            "suspend": p.spec.suspend,
            "serveConfigV2": _yaml(serve_config(p)),
            "rayClusterConfig": {
                "rayVersion": cfg.ray_version,
                "enableInTreeAutoscaling": True,
                # KubeRay's autoscaler sidecar in the head pod: restricted like the Ray container
                "autoscalerOptions": copy.deepcopy(
                    {"env": RAY_ENV, "volumeMounts": [RAY_TMP_MOUNT], "securityContext": CONTAINER_SECURITY}
                ),
                "headGroupSpec": {
                    "rayStartParams": {**start, "dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": _ray_pod(
                        p,
                        cfg,
                        "head",
                        cfg.model_image,
                        {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
                        head_ports,
                    ),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": m.device,
                        "replicas": m.replicas.min,
                        "minReplicas": m.replicas.min,
                        "maxReplicas": m.replicas.max,
                        "rayStartParams": start,
                        "template": worker,
                    }
                ],
            },
        },
    }


def _pipeline_relabel(extra: dict[str, str] | None = None) -> list[dict[str, Any]]:
    pairs = {"pipeline": naming.PIPELINE_LABEL, **(extra or {})}
    out = []
    for target, label in pairs.items():
        meta = "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in label)
        out.append({"action": "replace", "sourceLabels": [meta], "targetLabel": target})
    return out


def pod_monitors(p: StreamPipeline) -> list[dict[str, Any]]:
    def monitor(component: str, endpoints: list[dict[str, Any]], match: dict[str, str] | None = None):
        return {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": _meta(p, f"{p.name}-{component}", "monitoring"),
            "spec": {
                "selector": {"matchLabels": match or selector(p, component)},
                "podMetricsEndpoints": endpoints,
            },
        }

    return [
        monitor(
            "producer",
            [
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "honorLabels": True,
                    "relabelings": _pipeline_relabel({"source": SOURCE_LABEL}),
                }
            ],
        ),
        monitor(
            "job",
            [
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "honorLabels": True,
                    "relabelings": _pipeline_relabel(),
                },
                # Spark's own UI port on the driver (see SPARK_UI_PORT_NAME)
                {
                    "port": SPARK_UI_PORT_NAME,
                    "path": "/metrics/prometheus/",
                    "relabelings": _pipeline_relabel(),
                },
            ],
            match={**selector(p, "job"), "spark-role": "driver"},
        ),
        monitor(
            "model",
            [
                # Ray's metrics agent on every Ray pod: each replica's streamotion_model_* (exported
                # as ray_streamotion_model_*, renamed back here) and Ray Serve's own ray_serve_*
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "relabelings": _pipeline_relabel(),
                    "metricRelabelings": ray_metric_relabelings("operator"),
                },
            ],
        ),
    ]


SOURCE_SILENT_MINUTES = 10
DEAD_LETTER_SHARE = 0.05
MODEL_ERROR_SHARE = 0.05


def prometheus_rule(p: StreamPipeline) -> dict[str, Any]:
    sel = f'namespace="{p.namespace}",pipeline="{p.name}"'
    ann = {"pipeline": f"{p.namespace}/{p.name}"}

    def alert(name: str, expr: str, for_: str, severity: str, summary: str) -> dict[str, Any]:
        return {
            "alert": name,
            "expr": expr,
            "for": for_,
            "labels": {"severity": severity, "pipeline": p.name, "pipeline_namespace": p.namespace},
            "annotations": {**ann, "summary": summary},
        }

    rules = [
        alert(
            "StreamotionConsumerLagGrowing",
            f"sum(streamotion_job_consumer_lag{{{sel}}}) > 1000 and "
            f"deriv(sum(streamotion_job_consumer_lag{{{sel}}})[10m:1m]) > 0",
            "15m",
            "warning",
            "The streaming job falls behind: its Kafka consumer lag keeps growing.",
        ),
        alert(
            "StreamotionDeadLettersHigh",
            f"sum(rate(streamotion_job_dead_letters_total{{{sel}}}[10m])) / "
            f"clamp_min(sum(rate(streamotion_job_events_total{{{sel}}}[10m])), 1e-9) > {DEAD_LETTER_SHARE}",
            "10m",
            "warning",
            f"More than {DEAD_LETTER_SHARE:.0%} of events go to the dead-letter topic.",
        ),
        alert(
            "StreamotionModelErrors",
            f"sum(rate(streamotion_model_errors_total{{{sel}}}[5m])) / "
            f"clamp_min(sum(rate(streamotion_model_requests_total{{{sel}}}[5m])), 1e-9) > {MODEL_ERROR_SHARE}",
            "10m",
            "critical",
            f"More than {MODEL_ERROR_SHARE:.0%} of model requests fail.",
        ),
        alert(
            "StreamotionPipelineNotReady",
            f'streamotion_operator_pipeline_ready{{pipeline_namespace="{p.namespace}",pipeline="{p.name}"}} == 0',
            "15m",
            "critical",
            "The StreamPipeline has not been Ready for 15 minutes (kubectl describe sp).",
        ),
    ]
    if not p.spec.suspend:
        for s in p.spec.sources:
            if s.replicas == 0:
                continue
            rules.append(
                alert(
                    "StreamotionSourceSilent",
                    f'sum(rate(streamotion_producer_payloads_received_total{{{sel},source="{s.name}"}}'
                    f"[{SOURCE_SILENT_MINUTES}m])) == 0",
                    f"{SOURCE_SILENT_MINUTES}m",
                    "warning",
                    f"Source {s.name} published no event for {SOURCE_SILENT_MINUTES} minutes.",
                )
            )
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _meta(p, f"{p.name}-alerts", "monitoring"),
        "spec": {"groups": [{"name": f"streamotion.{p.namespace}.{p.name}", "rules": rules}]},
    }


def dashboard_values(p: StreamPipeline) -> dict[str, str]:
    """Dashboard variables this pipeline fixes: itself, and its sinks' schema / project / dataset."""
    values = {"pipeline": p.name, "namespace": p.namespace}
    for sink in p.spec.sinks:
        if sink.postgres and "schema" not in values:
            values["schema"] = sink.postgres.schema_
        if sink.bigquery and "dataset" not in values:
            values["project"] = sink.bigquery.project
            values["dataset"] = sink.bigquery.dataset
    return values


def dashboards(p: StreamPipeline, cfg: OperatorConfig) -> dict[str, Any]:
    """The pipeline dashboards of grafana/dashboards/*.json (those with a ``pipeline`` variable whose
    other variables this pipeline can fill), with the variables preselected and a per-pipeline uid."""
    data: dict[str, str] = {}
    suffix = naming._short_hash(p.namespace, p.name)
    values = dashboard_values(p)
    for path in sorted(Path(cfg.dashboards_dir).glob("*.json")):
        board = _load_board(path)
        if board is None:
            continue
        names = {v.get("name") for v in (board.get("templating") or {}).get("list") or []}
        if "pipeline" not in names or any(n in names and n not in values for n in ("schema", "dataset")):
            continue
        board = preselect(board, values, suffix)
        data[naming.dashboard_file_prefix(p) + path.name] = json.dumps(board, indent=1, sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(
            p,
            naming.dashboard_config_map_name(p),
            "dashboards",
            namespace=p.spec.dashboards.namespace,
            grafana_dashboard="1",
        ),
        "data": data,
    }


_BOARDS: dict[Path, tuple[float, dict[str, Any] | None]] = {}


def _load_board(path: Path) -> dict[str, Any] | None:
    """A dashboard file, parsed once per modification (reconciles run often)."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    hit = _BOARDS.get(path)
    if hit and hit[0] == mtime:
        return hit[1]
    try:
        board = json.loads(path.read_text())
    except (OSError, ValueError):
        board = None
    _BOARDS[path] = (mtime, board)
    return board


def _yaml(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False)


_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def preselect(board: dict[str, Any], values: dict[str, str], suffix: str) -> dict[str, Any]:
    board = copy.deepcopy(board)
    for var in (board.get("templating") or {}).get("list") or []:
        if var.get("name") in values:
            v = values[var["name"]]
            var["current"] = {"selected": True, "text": v, "value": v}
            if var.get("type") in ("custom", "textbox", "constant"):
                var["query"] = v
    if board.get("uid"):
        board["uid"] = f"{str(board['uid'])[:33]}-{suffix}"
    board["title"] = f"{board.get('title', 'Streamotion')} · {values['namespace']}/{values['pipeline']}"
    board.pop("id", None)
    return board


def build(p: StreamPipeline, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """Every child of ``p``, in apply order (configuration first)."""
    out: list[dict[str, Any]] = [pipeline_config_map(p)]
    out += kafka_topics(p, cfg)
    for s in p.spec.sources:
        out += producer(p, s, cfg)
    out += spark_service_account(p, cfg)
    out += checkpoint_claim(p)
    out.append(spark_application(p, cfg))
    out.append(ray_service(p, cfg))
    if p.spec.dashboards.enabled:
        out += pod_monitors(p)
        out.append(prometheus_rule(p))
        out.append(dashboards(p, cfg))
    return out


def component_of(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    m = obj["metadata"]
    return (obj["kind"], m.get("namespace") or "", m["name"])
