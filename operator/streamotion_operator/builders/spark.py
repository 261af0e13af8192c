"""The streaming job, as spark-operator runs it: the SparkApplication, its ServiceAccount and
RoleBinding, and the checkpoint's PersistentVolumeClaim."""

from __future__ import annotations

from typing import Any

from streamotion import lake, naming
from streamotion.api.models import StreamPipeline
from streamotion_operator.config import OperatorConfig

from .common import (
    _PIPELINE_MOUNT,
    CONTAINER_SECURITY,
    POD_SECURITY,
    SPEC_HASH_ANNOTATION,
    _meta,
    _pipeline_volume,
    labels,
    spec_hash,
)
from .kafka import kafka_bootstrap
from .ray import model_url
from .security import job_identity, kafka_client

CHECKPOINT_MOUNT = "/checkpoint"  # streamotion_jobs.config.CHECKPOINT_MOUNT
BIGQUERY_KEY_DIR = "/var/run/secrets/streamotion/bigquery"
JOB_WORKDIR = "/opt/streamotion"
# The Spark UI (and its PrometheusServlet) port on the driver is declared by Spark itself under this
# name (apache/spark v4.0.0 k8s Constants.scala UI_PORT_NAME, BasicDriverFeatureStep.scala), as are
# "driver-rpc-port" and "blockmanager": spark-operator appends spec.driver.ports / spec.executor.ports
# to Spark's own without de-duplication, so our ports never reuse those names.
SPARK_UI_PORT_NAME = "spark-ui"


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


def job_report(p: StreamPipeline) -> list[dict[str, Any]]:
    """The ConfigMap the job's driver reports its sinks' state in (streamotion_jobs.report). Created
    empty: the driver fills ``data`` (its ServiceAccount's role already lets it patch ConfigMaps in
    its namespace, for Spark's executors); the operator never applies ``data``, so it never takes
    the driver's report over."""
    meta = _meta(p, naming.job_report_name(p), "job")
    meta["annotations"] = {
        "streamotion.io/written-by": f"the driver of SparkApplication {naming.spark_app_name(p)}"
    }
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}]


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
    # the job's Kafka identity, on the driver and the executors (both read and write Kafka)
    kafka_env, kafka_volumes, kafka_mounts = kafka_client(p, job_identity(p))
    env += kafka_env
    volumes += kafka_volumes
    mounts += kafka_mounts
    # Executors parse, classify and write the sinks' staging tables themselves (streamotion_jobs.job:
    # no event row on the driver), so they get the sink credentials too; the checkpoint (a
    # ReadWriteOnce claim: executors on other nodes could not attach it) stays the driver's only.
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
    lake_sinks = [sink.lake for sink in p.spec.sinks if sink.lake]
    for sink in lake_sinks:  # executors write the Delta files: they get the store's credentials too
        env += [e for e in lake.secret_env(sink) if e["name"] not in {x["name"] for x in env}]
        if sink.credentials_secret and lake.scheme(sink.location) == "gs":
            volumes.append({"name": "lake-gcs-key", "secret": {"secretName": sink.credentials_secret}})
            mounts.append({"name": "lake-gcs-key", "mountPath": lake.GCS_KEY_DIR, "readOnly": True})
    executor_env = list(env)
    executor_mounts = list(mounts)
    if not proc.checkpoint.uri:
        volumes.append(
            {"name": "checkpoint", "persistentVolumeClaim": {"claimName": naming.checkpoint_pvc_name(p)}}
        )
        mounts.append({"name": "checkpoint", "mountPath": CHECKPOINT_MOUNT})
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
            # a lake sink: Delta's SQL extension and catalog (Delta itself is in the job image), the
            # object store's Hadoop settings; credentials only by reference (env from the Secret)
            **lake.spark_conf(lake_sinks),
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
    deps: dict[str, Any] = {}
    if packages := lake.packages(lake_sinks, delta_in_image=True):  # hadoop-aws for s3a, resolved at submit
        deps["packages"] = packages
        if excluded := lake.excludes(lake_sinks):  # the AWS SDK bundle: S3A's own SDK modules instead
            deps["excludePackages"] = excluded
        spec["sparkConf"]["spark.jars.ivy"] = "/tmp/.ivy2"  # the image's HOME is read-only
    if jars := lake.jars(lake_sinks):  # the Cloud Storage connector for gs
        deps["jars"] = jars
    if deps:
        spec["deps"] = deps
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
